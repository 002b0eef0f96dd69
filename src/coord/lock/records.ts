// What lock keys hold: JSON values a person can read with `corral store get`.

import type { KeyValue } from '../../store/store.js';
import { parseWaiterKey } from './keys.js';
import { isLockMode, type LockMode } from './modes.js';

/** Who asked for a lock, as the caller describes itself; shown by `corral locks`. */
export interface LockOwner {
  node?: string;
  pid?: number;
  command?: string;
}

/**
 * The process group a lock is kept for once its client is gone (an agent's lock service attaches
 * the group of the command its client runs). Recorded with the lock so that the agent, restarted
 * after a crash, still knows whom it holds the lock for and keeps it while that group runs.
 */
export interface LockGroupRecord {
  /** The agent (node name) that watches the group: the group runs on its machine. */
  node: string;
  pgid: number;
  /** The group leader's start time (clock ticks since boot) and the boot id: pids are reused. */
  start: number;
  boot: string;
}

function isGroupRecord(g: unknown): g is LockGroupRecord {
  if (g === null || typeof g !== 'object') return false;
  const r = g as Record<string, unknown>;
  return typeof r.node === 'string' && Number.isSafeInteger(r.pgid) && Number.isSafeInteger(r.start) && typeof r.boot === 'string';
}

/** The value of a waiter key. */
export interface WaiterRecord {
  mode: LockMode;
  quantity: number;
  owner: LockOwner;
  /** Wall-clock time of the request (ISO 8601), for display. */
  since: string;
  /** The resource's idle lifespan as this request knows it (the creating request's, inherited). */
  idleLifespanMs: number;
  /** Set, sequence and timestamp resources: the value issued, present once granted. */
  value?: string;
  /** Set resources: the position of the element issued (names may repeat). */
  elementIndex?: number;
  /**
   * Present once the key was written again to record its grant (a request granted after waiting,
   * or one that issued a value): that write's revision is the fencing token.
   */
  granted?: true;
  /** The process group the lock is kept for after its client is gone (see LockGroupRecord). */
  group?: LockGroupRecord;
}

/** A waiter key as read from the store. */
export interface WaiterEntry {
  key: string;
  /** The resource name (the full path for hierarchical resources). */
  resourceName: string;
  /** The key's create revision: its place in line. */
  createRevision: bigint;
  /** The key's last write: its fencing token once granted (see WaiterRecord.granted). */
  modRevision: bigint;
  lease: bigint;
  record: WaiterRecord;
}

export function encodeWaiter(record: WaiterRecord): string {
  return JSON.stringify(record);
}

// A value that is not a waiter record (written by something else) must not let anyone in: it
// reads as an exclusive lock on every unit.
const UNREADABLE: Omit<WaiterRecord, 'since' | 'owner'> = { mode: 'EX', quantity: Number.MAX_SAFE_INTEGER, idleLifespanMs: 0 };

export function decodeWaiter(value: string): WaiterRecord {
  try {
    const r = JSON.parse(value) as Partial<WaiterRecord> | null;
    if (r !== null && typeof r === 'object' && isLockMode(r.mode) && typeof r.quantity === 'number') {
      return {
        mode: r.mode,
        quantity: r.quantity,
        owner: typeof r.owner === 'object' && r.owner !== null ? r.owner : {},
        since: typeof r.since === 'string' ? r.since : '',
        idleLifespanMs: typeof r.idleLifespanMs === 'number' ? r.idleLifespanMs : 0,
        ...(typeof r.value === 'string' ? { value: r.value } : {}),
        ...(typeof r.elementIndex === 'number' ? { elementIndex: r.elementIndex } : {}),
        ...(r.granted === true ? { granted: true as const } : {}),
        ...(isGroupRecord(r.group) ? { group: r.group } : {}),
      };
    }
  } catch {
    // fall through
  }
  return { ...UNREADABLE, owner: {}, since: '' };
}

/**
 * The waiter entries among `kvs` (other keys ignored), in line order (create revision). `known`:
 * a key whose record the caller just wrote, not decoded again.
 */
export function waiterEntries(kvs: readonly KeyValue[], known?: { key: string; record: WaiterRecord }): WaiterEntry[] {
  const entries: WaiterEntry[] = [];
  for (const kv of kvs) {
    const parts = parseWaiterKey(kv.key);
    if (parts === undefined) continue;
    const record = kv.key === known?.key ? known.record : decodeWaiter(kv.value);
    entries.push({ key: kv.key, resourceName: parts.resourceName, createRevision: kv.createRevision, modRevision: kv.modRevision, lease: kv.lease, record });
  }
  return entries.sort((a, b) => (a.createRevision < b.createRevision ? -1 : a.createRevision > b.createRevision ? 1 : 0));
}

/** The value of an idle marker. */
export interface IdleMarker {
  idleLifespanMs: number;
}

export function decodeIdleMarker(value: string): IdleMarker {
  try {
    const m = JSON.parse(value) as Partial<IdleMarker> | null;
    if (m !== null && typeof m === 'object' && typeof m.idleLifespanMs === 'number') return { idleLifespanMs: m.idleLifespanMs };
  } catch {
    // fall through
  }
  return { idleLifespanMs: 0 };
}
