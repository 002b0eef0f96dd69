// Every lock in the store, as `corral locks` shows it: per resource, its holders and waiters.
// Whether a key holds its lock is decided by the same rule the recipe uses (grant-rule.ts), read
// at one revision; a set, sequence or timestamp key holds once its value is written.

import type { Store } from '../../store/store.js';
import { decide, keysAhead } from './grant-rule.js';
import { LOCKS_PREFIX, parseIdleMarkerKey, parseStateKey } from './keys.js';
import type { LockMode } from './modes.js';
import { waiterEntries, type LockOwner, type WaiterEntry } from './records.js';
import { hasState, parseResourceName, type Resource, type ResourceKind } from './resource.js';
import { decodeState, type ResourceState } from './resource-state.js';

export interface LockEntryInfo {
  key: string;
  resource: string;
  mode: LockMode;
  quantity: number;
  /** The set element, sequence number or timestamp issued. */
  value?: string;
  owner: LockOwner;
  /** When the request was made (ISO 8601, the requester's wall clock). */
  since: string;
  /** Holders: the revision that recorded the grant (the key's last write). */
  fencingToken?: bigint;
  lease: bigint;
  granted: boolean;
}

export interface ResourceLocks {
  name: string;
  kind: ResourceKind;
  /** In line order. */
  holders: LockEntryInfo[];
  waiters: LockEntryInfo[];
  /** Kept within its idle lifespan after its last release (a hierarchical root: `/root`). */
  kept: boolean;
  /** Set index, sequence counter or last timestamp, when the resource is in use or kept. */
  state?: ResourceState;
}

export interface LockListing {
  /** The store revision everything was read at. */
  revision: bigint;
  /** By resource name. */
  resources: ResourceLocks[];
}

function tryParse(name: string): Resource | undefined {
  try {
    return parseResourceName(name);
  } catch {
    return undefined;
  }
}

/**
 * The keys among `entries` (waiter keys, any resources) that hold their lock, by the rule the
 * recipe grants with, as of the revision they were read at.
 */
export function holdingKeys(entries: readonly WaiterEntry[]): Set<string> {
  const holding = new Set<string>();
  for (const group of scanGroups(entries).values()) {
    for (const e of group) {
      const resource = tryParse(e.resourceName);
      if (resource !== undefined && holds(e, resource, group)) holding.add(e.key);
    }
  }
  return holding;
}

/** Keys that may conflict share a scan group: a resource, or a hierarchical root. */
function scanGroups(entries: readonly WaiterEntry[]): Map<string, WaiterEntry[]> {
  const groups = new Map<string, WaiterEntry[]>();
  for (const e of entries) {
    const group = e.resourceName.startsWith('/') ? `/${e.resourceName.split('/')[1] ?? ''}` : e.resourceName;
    const list = groups.get(group) ?? [];
    list.push(e);
    groups.set(group, list);
  }
  return groups;
}

function holds(e: WaiterEntry, resource: Resource, group: readonly WaiterEntry[]): boolean {
  const ask = { resource, mode: e.record.mode, quantity: e.record.quantity };
  return decide(ask, keysAhead(ask, e.resourceName, group, e.createRevision)).granted && (!hasState(resource) || e.record.value !== undefined);
}

export async function listLocks(store: Store): Promise<LockListing> {
  const { kvs, revision } = await store.range(LOCKS_PREFIX);
  const byName = new Map<string, ResourceLocks>();
  const entry = (name: string, resource: Resource): ResourceLocks => {
    let r = byName.get(name);
    if (r === undefined) {
      r = { name, kind: resource.kind, holders: [], waiters: [], kept: false };
      byName.set(name, r);
    }
    return r;
  };

  for (const entries of scanGroups(waiterEntries(kvs)).values()) {
    for (const e of entries) {
      const resource = tryParse(e.resourceName);
      if (resource === undefined) continue;
      const granted = holds(e, resource, entries);
      const info: LockEntryInfo = {
        key: e.key,
        resource: e.resourceName,
        mode: e.record.mode,
        quantity: e.record.quantity,
        owner: e.record.owner,
        since: e.record.since,
        lease: e.lease,
        granted,
        ...(granted ? { fencingToken: e.modRevision } : {}),
        ...(e.record.value !== undefined ? { value: e.record.value } : {}),
      };
      const r = entry(e.resourceName, resource);
      (granted ? r.holders : r.waiters).push(info);
    }
  }

  for (const kv of kvs) {
    const kept = parseIdleMarkerKey(kv.key);
    if (kept === undefined) continue;
    const resource = tryParse(kept);
    if (resource !== undefined) entry(kept, resource).kept = true;
  }
  for (const kv of kvs) {
    const name = parseStateKey(kv.key);
    const r = name === undefined ? undefined : byName.get(name);
    const resource = name === undefined ? undefined : tryParse(name);
    if (r !== undefined && resource !== undefined && hasState(resource)) r.state = decodeState(resource, kv.value);
  }
  return { revision, resources: [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) };
}
