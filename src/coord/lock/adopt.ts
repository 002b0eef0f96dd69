// Taking locks back after a restart. An agent's lock service keeps a lock for the process group of
// a command whose client has gone (the group is recorded with the lock: LockGroupRecord). If the
// agent itself then crashes, its lock keys stay in the store under its dead session's lease, and
// the command may still run: the restarted agent must keep those locks, not let the lease expire
// under a running command. These are the pieces it needs: which keys of the store are such locks,
// and a LockGrant over an existing key (to release it once its group has ended).

import type { Store } from '../../store/store.js';
import type { Logger } from '../../util/log.js';
import { LockGrant, type LockSession } from './grant.js';
import { LOCKS_PREFIX, resourceKeys } from './keys.js';
import { holdingKeys } from './list.js';
import { waiterEntries, type LockGroupRecord, type WaiterEntry } from './records.js';
import { parseResourceName } from './resource.js';

/** The keys of one lease that matter to a restarted agent. */
export interface LeaseLocks {
  lease: bigint;
  /** Locks held for a process group that `node` watches (its record's group). */
  groupHolds: (WaiterEntry & { record: { group: LockGroupRecord } })[];
  /** Every other waiter key on the lease: other holders, and waiters. */
  others: WaiterEntry[];
}

/**
 * The leases that carry a lock held for a process group watched by `node` in boot `boot`, with
 * their keys, read at one revision. A waiter recorded with a group is not among them (its request
 * ended with its client; it expires with the lease).
 */
export async function groupLocksOf(store: Store, node: string, boot: string): Promise<LeaseLocks[]> {
  const { kvs } = await store.range(LOCKS_PREFIX);
  const entries = waiterEntries(kvs);
  const holding = holdingKeys(entries);
  const byLease = new Map<bigint, LeaseLocks>();
  for (const e of entries) {
    const g = e.record.group;
    if (g === undefined || g.node !== node || g.boot !== boot || !holding.has(e.key)) continue;
    const l = byLease.get(e.lease) ?? { lease: e.lease, groupHolds: [], others: [] };
    l.groupHolds.push(e as WaiterEntry & { record: { group: LockGroupRecord } });
    byLease.set(e.lease, l);
  }
  for (const e of entries) {
    const l = byLease.get(e.lease);
    if (l !== undefined && !l.groupHolds.includes(e as WaiterEntry & { record: { group: LockGroupRecord } })) l.others.push(e);
  }
  return [...byLease.values()];
}

/** The lock an existing holder key stands for, held under `session` (whose lease the key is on). */
export function grantOf(store: Store, session: LockSession, entry: WaiterEntry, logger: Logger): LockGrant {
  const resource = parseResourceName(entry.resourceName);
  return new LockGrant({
    store,
    session,
    resource,
    keys: resourceKeys(resource),
    key: entry.key,
    createRevision: entry.createRevision,
    fencingToken: entry.modRevision,
    mode: entry.record.mode,
    quantity: entry.record.quantity,
    value: entry.record.value,
    idleLifespanMs: entry.record.idleLifespanMs,
    logger,
  });
}
