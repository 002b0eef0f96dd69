// The lock endpoints on the wire, shared by the agent's lock service and the typed client.
// Import-free, so the `corral lock` client pays nothing for it.
//
//   POST /v1/locks/acquire  {LockAcquireBody}  → NDJSON stream of LockEvent, open while the lock is held
//   POST /v1/locks/release  {id, rollback}     → {released: true}; the stream then ends with "released"
//   POST /v1/locks/confirm  {id}               → {validForMs}: the lock is held at least that long
//   POST /v1/locks/attach   {id, pgid}         → {}: keep the lock while this process group lives
//   GET  /v1/locks                             → LockListingWire
//   POST /v1/private/quiesce, /v1/private/exit → a private daemon's -x and -X
//
// Closing the acquire stream (or the client dying) releases the lock, rolling a transactional
// sequence value back, unless an attached process group still runs (then it is released when the
// group is gone).

export const LOCK_PATHS = {
  acquire: '/v1/locks/acquire',
  release: '/v1/locks/release',
  confirm: '/v1/locks/confirm',
  attach: '/v1/locks/attach',
  list: '/v1/locks',
  quiesce: '/v1/private/quiesce',
  exit: '/v1/private/exit',
} as const;

/** A lock request as sent to an agent. */
export interface LockAcquireBody {
  resource: string;
  /** NL CR CW PR PW EX (default EX). */
  mode?: string;
  quantity?: number;
  /** -1 wait forever (default), 0 do not wait, N > 0 milliseconds. */
  timeoutMs?: number;
  create?: boolean;
  idleLifespanMs?: number;
  /** Who asks, for `corral locks`: the requesting process and its command line. */
  pid?: number;
  command?: string;
  /** The requesting machine, when it is not the agent's. */
  host?: string;
}

export interface LockGrantedEvent {
  event: 'granted';
  id: string;
  resource: string;
  kind: string;
  mode: string;
  quantity: number;
  /** The set element, sequence number or timestamp issued; null for other kinds. */
  value: string | null;
  /** Decimal: strictly increasing across every grant of the store. */
  fencingToken: string;
  /** The lock is certainly held for at least this long after the agent sent this. */
  validForMs: number;
  /** How often the holder should confirm the lock (POST confirm). */
  confirmEveryMs: number;
  /**
   * When fewer than this many milliseconds of confirmed validity remain, the holder must treat the
   * lock as lost and stop its work: the rest is its grace period, which ends before anyone else can
   * be granted the lock.
   */
  stopWithinMs: number;
}

export type LockEvent =
  | { event: 'queued'; id: string }
  | LockGrantedEvent
  /** The lock is gone (session lost, agent stopping): the stream ends after this. */
  | { event: 'lost'; id: string; code: string; reason: string }
  | { event: 'released'; id: string };

export interface LockReleaseBody {
  id: string;
  rollback?: boolean;
}

export interface LockConfirmAnswer {
  validForMs: number;
}

export interface LockEntryWire {
  resource: string;
  mode: string;
  quantity: number;
  value: string | null;
  node: string | null;
  pid: number | null;
  command: string | null;
  /** ISO 8601, the requester's clock. */
  since: string;
  /** Holders only (decimal). */
  fencingToken: string | null;
  /** The client went away but the process group it attached still runs: kept until it ends. */
  orphaned?: boolean;
}

export interface ResourceLocksWire {
  name: string;
  kind: string;
  kept: boolean;
  holders: LockEntryWire[];
  waiters: LockEntryWire[];
}

export interface LockListingWire {
  /** The store revision everything was read at (decimal). */
  revision: string;
  /** The agent that answered. */
  node: string;
  resources: ResourceLocksWire[];
}
