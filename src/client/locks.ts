// Locks through an agent, for programs: acquireLock() sends the request over the agent's lock
// stream and returns the lock held; release() is idempotent; `lost` fires before anyone else can
// be granted the lock, so work stopped on it never overlaps another holder's.
//
//   const lock = await acquireLock(rpc, { resource: 'backup', mode: 'PR', timeoutMs: 5000 });
//   lock.lost.addEventListener('abort', stopTheWork);
//   try { await work(lock.fencingToken, lock.value); } finally { await lock.release({ rollback: failed }); }
//
// How loss is known without trusting the agent to say so: the holder confirms the lock every
// `confirmEveryMs`; each answer says how long the agent's session is certainly alive, counted here
// from when the confirmation was *sent*. When less than `stopWithinMs` of that remains unconfirmed
// (the agent is frozen, cut off, or its store is gone), the lock counts as lost: the rest is the
// grace period to stop the work, and it ends before the lease can expire on the store. A broken
// stream or a "lost" event is a loss at once.
//
// Import-light (the transport client and types only): `corral lock` loads it on its start path.

import { CorralError, isCorralError } from '../api/errors.js';
import { LOCK_PATHS, type LockAcquireBody, type LockConfirmAnswer, type LockEvent, type LockGrantedEvent, type LockListingWire } from '../api/lock-wire.js';
import type { RpcClient } from '../transport/client.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';

export type { LockEvent, LockGrantedEvent, LockListingWire } from '../api/lock-wire.js';

export interface LockOptions {
  /** FLoM's resource name; the kind follows from its syntax. Default `_RESOURCE`. */
  resource?: string;
  /** NL CR CW PR PW EX or the long names (NullLock ... Exclusive). Default EX. */
  mode?: string;
  /** Units of a numeric resource `name[N]`. */
  quantity?: number;
  /** -1 wait forever (default), 0 do not wait, N > 0: one deadline for the whole request. */
  timeoutMs?: number;
  /** false: do not create the resource; wait for it to exist (or fail at once with timeout 0). */
  create?: boolean;
  idleLifespanMs?: number;
  /** Shown by `corral locks`: the process that holds the lock and its command. */
  pid?: number;
  command?: string;
  /** Gives up waiting (the request leaves the line). No effect once granted: use release(). */
  signal?: AbortSignal;
  /** Called when the request is in line behind others. */
  onQueued?: () => void;
  /**
   * Keep the lock while this process group runs, even if this client dies (a local agent only;
   * its leader must carry `secret` in its environment as CORRAL_LOCK_GATE: see lock-wire.ts).
   */
  attach?: { pgid: number; secret: string };
  /** If this client dies without attaching, keep the lock `guardedForMs` more (see lock-wire.ts). */
  guard?: boolean;
  clock?: Clock;
}

/** The agent answers a timed-out request itself; this much later the client gives up on its own. */
const TIMEOUT_SLACK_MS = 250;

/** Sends the request and waits for the grant. Rejects with the agent's CorralError (LOCK_BUSY, LOCK_TIMEOUT, ...). */
export async function acquireLock(rpc: RpcClient, options: LockOptions = {}): Promise<HeldLock> {
  const clock = options.clock ?? systemClock;
  const startedAt = clock.now();
  const timeoutMs = options.timeoutMs ?? -1;
  const body: LockAcquireBody = { resource: options.resource ?? '_RESOURCE', timeoutMs };
  if (options.mode !== undefined) body.mode = options.mode;
  if (options.quantity !== undefined) body.quantity = options.quantity;
  if (options.create !== undefined) body.create = options.create;
  if (options.idleLifespanMs !== undefined) body.idleLifespanMs = options.idleLifespanMs;
  if (options.pid !== undefined) body.pid = options.pid;
  if (options.command !== undefined) body.command = options.command;
  if (options.attach !== undefined) body.attach = options.attach;
  if (options.guard === true) body.guard = true;
  options.signal?.throwIfAborted();

  const stop = new AbortController();
  let timer: Timer | undefined;
  const onAbort = (): void => stop.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (timeoutMs > 0) {
    timer = clock.setTimer(timeoutMs + TIMEOUT_SLACK_MS, () =>
      stop.abort(new CorralError('LOCK_TIMEOUT', `the lock on ${body.resource} was not obtained because the timeout (${timeoutMs} milliseconds) expired`)),
    );
  }
  const stream = rpc.stream<LockEvent>('POST', LOCK_PATHS.acquire, body, { signal: stop.signal });
  const events = stream[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await events.next();
      if (step.done) {
        stop.signal.throwIfAborted();
        throw new CorralError('UNAVAILABLE', `${rpc.where} closed the lock request for ${body.resource} before answering; retry`);
      }
      const event = step.value;
      if (event.event === 'queued') {
        options.onQueued?.();
        continue;
      }
      if (event.event !== 'granted') throw new CorralError('UNAVAILABLE', `${rpc.where} ended the lock request for ${body.resource} (${event.event}) before granting it; retry`);
      timer?.cancel();
      const lock = new HeldLock(rpc, event, events, () => stream.close(), clock, startedAt);
      await lock.settle();
      return lock;
    }
  } catch (err) {
    stream.close();
    if (stop.signal.aborted) throw stop.signal.reason instanceof Error ? stop.signal.reason : err;
    throw err;
  } finally {
    timer?.cancel();
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/** GET /v1/locks: every resource with its holders and waiters. */
export function listLocksVia(rpc: RpcClient): Promise<LockListingWire> {
  return rpc.call<LockListingWire>('GET', LOCK_PATHS.list);
}

export interface ReleaseOptions {
  /** The protected work failed: a transactional sequence (`_S_`) value returns for reuse. */
  rollback?: boolean;
}

/** A lock held through an agent. */
export class HeldLock {
  readonly id: string;
  readonly resource: string;
  readonly kind: string;
  readonly mode: string;
  readonly quantity: number;
  /** The set element, sequence number or timestamp issued; undefined for other kinds. */
  readonly value: string | undefined;
  /** Strictly increasing across every grant of the store: hand it to fenced services. */
  readonly fencingToken: bigint;
  readonly confirmEveryMs: number;
  readonly stopWithinMs: number;
  /** The process group of the request is attached: the agent keeps the lock while it runs. */
  readonly attached: boolean;
  /** Not attached but guarded: the lock outlives this client by this much (undefined: not guarded). */
  readonly guardedForMs: number | undefined;
  /** Why an attach asked for was not made. */
  readonly attachRefused: string | undefined;
  private readonly lostController = new AbortController();
  /** Monotonic ms (this process's clock) until which the lock is certainly held. */
  private validUntil: number;
  private confirmTimer: Timer | undefined;
  private watchdog: Timer | undefined;
  private watchdogDue = 0;
  private releasing: Promise<void> | undefined;
  private releasedValue = false;
  private ended = false;

  constructor(
    private readonly rpc: RpcClient,
    granted: LockGrantedEvent,
    private readonly events: AsyncIterator<LockEvent>,
    private readonly closeStream: () => void,
    private readonly clock: Clock,
    sentAt: number,
  ) {
    this.id = granted.id;
    this.resource = granted.resource;
    this.kind = granted.kind;
    this.mode = granted.mode;
    this.quantity = granted.quantity;
    this.value = granted.value ?? undefined;
    this.fencingToken = BigInt(granted.fencingToken);
    this.confirmEveryMs = granted.confirmEveryMs;
    this.stopWithinMs = granted.stopWithinMs;
    this.attached = granted.attached === true;
    this.guardedForMs = granted.guardedForMs;
    this.attachRefused = granted.attachRefused;
    // The grant happened after the request was sent: counting from then is on the safe side.
    this.validUntil = sentAt + granted.validForMs;
    void this.readEvents();
  }

  /** Before handing the lock out: a request that waited long needs a fresh confirmation. */
  async settle(): Promise<void> {
    if (this.remainingMs() <= this.stopWithinMs) await this.confirm(Math.max(1000, this.confirmEveryMs * 2));
    if (this.remainingMs() <= this.stopWithinMs && !this.lost.aborted) this.lose(this.unconfirmed());
    if (this.lost.aborted) throw this.lost.reason as Error;
    this.scheduleConfirm();
    this.armWatchdog();
  }

  /**
   * Aborted (reason: LOCK_LOST) when the lock is lost: stop the protected work at once, within
   * remainingMs() at the latest, then call release() (which then only closes the stream).
   */
  get lost(): AbortSignal {
    return this.lostController.signal;
  }

  /** Resolves with the loss when the lock is lost (never, once released). */
  whenLost(): Promise<CorralError> {
    const signal = this.lost;
    if (signal.aborted) return Promise.resolve(signal.reason as CorralError);
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason as CorralError), { once: true }));
  }

  get released(): boolean {
    return this.releasedValue;
  }

  /** Milliseconds the lock is certainly still held (0 once lost or released). */
  remainingMs(): number {
    if (this.lost.aborted || this.releasedValue) return 0;
    return Math.max(0, this.validUntil - this.clock.now());
  }

  /** The monotonic time (this process's clock) by which the work must have stopped if lost. */
  get deadline(): number {
    return this.validUntil;
  }

  /**
   * Releases the lock. Idempotent: later calls share the first one's outcome. After a loss it does
   * nothing. `rollback` matters to transactional sequences only.
   */
  release(options: ReleaseOptions = {}): Promise<void> {
    this.releasing ??= this.releaseOnce(options.rollback === true);
    return this.releasing;
  }

  close(): Promise<void> {
    return this.release();
  }

  private async releaseOnce(rollback: boolean): Promise<void> {
    this.stopTimers();
    if (this.lost.aborted) {
      this.closeStream();
      return;
    }
    try {
      await this.rpc.call('POST', LOCK_PATHS.release, { id: this.id, rollback });
      // The agent ends the stream itself after its "released" line; cancelling it would only
      // make both sides do more work.
      this.releasedValue = true;
      this.ended = true;
    } catch (err) {
      this.ended = true;
      // Closing the stream makes the agent release it (rolled back, as after a crash).
      this.closeStream();
      // Already gone on the agent (lost meanwhile): nothing is held.
      if (!isCorralError(err, 'NOT_FOUND') && !isCorralError(err, 'SESSION_LOST')) throw err;
    }
  }

  // --- watching the lock --------------------------------------------------------------------

  private async readEvents(): Promise<void> {
    try {
      for (;;) {
        const step = await this.events.next();
        if (step.done) break;
        const e = step.value;
        if (e.event === 'lost') return this.lose(new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${e.reason}`));
        // "released": the stream ends right after it; read on to its end.
      }
      if (!this.ended && !this.releasing) this.lose(new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${this.rpc.where} closed the lock stream`));
    } catch (err) {
      if (!this.ended && !this.releasing) this.lose(new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${(err as Error).message}`));
    }
  }

  private scheduleConfirm(): void {
    if (this.lost.aborted || this.releasing) return;
    this.confirmTimer = this.clock.setTimer(this.confirmEveryMs, () => {
      void this.confirm(this.confirmEveryMs * 2).finally(() => this.scheduleConfirm());
    });
  }

  /** One confirmation; extends the validity counted from when it was sent. */
  private async confirm(timeoutMs: number): Promise<void> {
    const sentAt = this.clock.now();
    try {
      const answer = await this.rpc.call<LockConfirmAnswer>('POST', LOCK_PATHS.confirm, { id: this.id }, { timeoutMs });
      this.validUntil = Math.max(this.validUntil, sentAt + answer.validForMs);
    } catch (err) {
      if (this.releasing) return;
      // The agent says the lock is gone: lost now, whatever time seemed left.
      if (isCorralError(err, 'SESSION_LOST') || isCorralError(err, 'NOT_FOUND')) {
        this.lose(new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${err.message}`));
      }
      // Otherwise unanswered: the watchdog decides when the time left is too short.
    }
  }

  private armWatchdog(): void {
    if (this.lost.aborted || this.releasing) return;
    this.watchdogDue = this.validUntil - this.stopWithinMs;
    this.watchdog = this.clock.setTimer(this.watchdogDue - this.clock.now(), () => void this.checkValidity());
  }

  private async checkValidity(): Promise<void> {
    if (this.lost.aborted || this.releasing) return;
    const now = this.clock.now();
    if (now < this.validUntil - this.stopWithinMs) return this.armWatchdog(); // confirmed meanwhile
    // Fired far behind its time: this process was stopped or starved, not the agent. Ask before
    // concluding (the work ran on meanwhile either way): while validity is left, only as long as
    // still leaves a grace period before it ends; once it has ended, for up to 2 s.
    if (now - this.watchdogDue > Math.min(250, this.confirmEveryMs)) {
      const left = this.validUntil - now;
      await this.confirm(left > 500 ? left - 250 : 2000);
      if (this.clock.now() < this.validUntil - this.stopWithinMs) return this.armWatchdog();
    }
    this.lose(this.unconfirmed());
  }

  private unconfirmed(): CorralError {
    const left = Math.max(0, Math.round(this.validUntil - this.clock.now()));
    return new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${this.rpc.where} has not confirmed it in time (it may expire in ${left} ms)`);
  }

  private lose(reason: CorralError): void {
    if (this.lost.aborted || this.releasedValue) return;
    this.stopTimers();
    // The stream stays open: closing it would make the agent release the lock (if it still holds
    // it) while the work may still be stopping. release() closes it once the work has stopped.
    this.lostController.abort(reason);
  }

  private stopTimers(): void {
    this.confirmTimer?.cancel();
    this.watchdog?.cancel();
    this.confirmTimer = undefined;
    this.watchdog = undefined;
  }
}
