// The lock endpoints on the wire, shared by the agent's lock service and the typed client.
// Import-free, so the `corral lock` client pays nothing for it.
//
//   POST /v1/locks/channel  NDJSON LockCommand… → NDJSON LockChannelEvent…: every lock of a
//                           client over one channel (the library and `corral lock` use this; an
//                           orphaned command's gate asks confirm-group on it)
//   POST /v1/locks/acquire  {LockAcquireBody}  → NDJSON stream of LockEvent, open while the lock is held
//   POST /v1/locks/release  {id, rollback}     → {released: true}; the stream then ends with "released"
//   POST /v1/locks/confirm  {id}               → {validForMs}: the lock is held at least that long
//   GET  /v1/locks                             → LockListingWire
//   POST /v1/private/quiesce, /v1/private/exit → a private daemon's -x and -X
//
// Closing the acquire stream (or the client dying) releases the lock, rolling a transactional
// sequence value back, unless the request attached a process group that still runs (then it is
// released when the group is gone) or asked for the guard (then it is released stopWithinMs later).
//
// On the channel, each request has a number (`ref`) chosen by the client, unique on the channel;
// its commands and events carry it. `cancel` is what closing an acquire stream is: it gives up a
// wait, or drops a held lock as if its client had died. Closing the channel cancels every request
// on it. Answers to release and confirm echo the command's `seq`; a command that fails gets a
// `failed` event instead. Over a UNIX socket the channel is a raw connection whose first line is
// `CORRAL-CHANNEL/1 /v1/locks/channel` (src/transport/channel.ts).

export const LOCK_PATHS = {
  channel: '/v1/locks/channel',
  acquire: '/v1/locks/acquire',
  release: '/v1/locks/release',
  confirm: '/v1/locks/confirm',
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
  /**
   * Keep the lock while this process group runs, even if the client dies (local clients only). The
   * group's leader must carry `secret` in its environment as CORRAL_LOCK_GATE (see
   * util/process-group.ts checkAttach): that proves the group was started for this request.
   */
  attach?: { pgid: number; secret: string };
  /**
   * When the group cannot be attached (or none is given): if the client dies, keep the lock
   * `guardedForMs` (the granted event says how long) while the client's gate stops its command.
   */
  guard?: boolean;
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
  /** The request's process group is attached: the lock is kept while it runs, even if the client dies. */
  attached?: boolean;
  /** Not attached but guarded: the lock outlives a dead client by this much, for its gate to stop the command. */
  guardedForMs?: number;
  /** Why the attach asked for was not made (the guard applies instead). */
  attachRefused?: string;
  /**
   * Attached, and the lock's lease lives on a store that keeps counting while this agent is down
   * (etcd, or a coordinator on another node): if the client dies, its gate confirms the group's lock
   * itself (`confirm-group`) and stops the group when the agent stops confirming it in time.
   */
  leaseOutlivesAgent?: boolean;
}

export type LockEvent =
  | { event: 'queued'; id: string }
  | LockGrantedEvent
  /** The lock is gone (session lost, agent stopping): the stream ends after this. */
  | { event: 'lost'; id: string; code: string; reason: string }
  | { event: 'released'; id: string };

/** What a client sends on the lock channel. */
export type LockCommand =
  | ({ op: 'acquire'; ref: number } & LockAcquireBody)
  | { op: 'release'; ref: number; seq: number; rollback?: boolean }
  | { op: 'confirm'; ref: number; seq: number }
  /**
   * From a gate whose client is gone: how long the lock kept for its process group (attached) is
   * certainly still held. `secret` is the gate's CORRAL_LOCK_GATE, checked as for attach: only the
   * group's own leader can ask. Answered `confirmed` (validForMs, the shortest if several) or
   * `failed` (NOT_FOUND: no lock is kept for the group; UNAVAILABLE: not known yet, ask again).
   */
  | { op: 'confirm-group'; ref: number; seq: number; pgid: number; secret: string }
  | { op: 'cancel'; ref: number };

/** What the agent sends on the lock channel: a request's LockEvents, and answers to its commands. */
export type LockChannelEvent =
  | (Exclude<LockEvent, { event: 'released' }> & { ref: number })
  /** The answer to release: the lock is released (the request is over). */
  | { ref: number; event: 'released'; id: string; seq?: number }
  | { ref: number; event: 'confirmed'; seq: number; validForMs: number }
  /** An acquire (no seq) or a command that failed; a failed acquire ends its request. */
  | { ref: number; event: 'failed'; op: LockCommand['op']; seq?: number; error: { code: string; message: string } };

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
  /**
   * The client went away; the lock is kept while the process group it attached runs (or, guarded,
   * while its gate stops the command).
   */
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
