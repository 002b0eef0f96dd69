// Resource existence and idle lifespan (FLoM's -e/--resource-create and -i/--resource-idle-lifespan).
//
// A resource exists while it has a waiter key (holder or waiter) or an idle marker. A release
// under an idle lifespan L > 0 deletes its waiter key and puts an idle marker attached to a fresh
// lease of TTL L, in one transaction, so at every revision "exists" is exactly "some waiter key or
// some marker": no window in which a concurrent request could find the resource half-forgotten.
// The store's lease timer, the one clock all nodes share, ends the marker; nothing has to run at
// the end of the lifespan, and no wall clocks are compared across machines. The price: L is
// rounded up to the store's lease granularity (whole seconds, at least the backend's minimum TTL).
//
// State (set index, sequence counter) is valid for a request when the resource existed as its
// waiter key was put (another key or a marker was there), or was written after that (by a holder
// of the same busy period): otherwise the request found the resource forgotten and starts afresh.
// With L = 0 (the default) nothing is kept: the state is forgotten as soon as the last key goes.
// A holder that dies without releasing starts no idle period (its key just expires): if it was
// the last, the resource is forgotten at once. The last timestamp issued is always honoured,
// forgotten or not, so a timestamp resource never repeats a value (FLoM's does after its GC).
//
// The lifespan used is the creating request's (as FLoM): later requests inherit it from the
// oldest key in line or from a marker, and write it into their own key so it outlives the creator.

import type { LeaseId, Store, TxnOp } from '../../store/store.js';
import { idleMarkerKey, type ResourceKeys } from './keys.js';
import type { IdleMarker } from './records.js';

export interface IdleMarkerWrite {
  op: TxnOp;
  lease: LeaseId;
}

/** Grants the marker's lease and returns the put to add to the release; undefined for L = 0. */
export async function prepareIdleMarker(store: Store, keys: ResourceKeys, idleLifespanMs: number): Promise<IdleMarkerWrite | undefined> {
  if (idleLifespanMs <= 0) return undefined;
  const { id } = await store.grantLease(Math.max(1, Math.ceil(idleLifespanMs / 1000)));
  const marker: IdleMarker = { idleLifespanMs };
  return { lease: id, op: { type: 'put', key: idleMarkerKey(keys, id), value: JSON.stringify(marker), lease: id } };
}
