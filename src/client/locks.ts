// Locks through an agent, for programs: acquireLock() sends the request over the agent's lock
// channel and returns the lock held; release() is idempotent; `lost` fires before anyone else can
// be granted the lock, so work stopped on it never overlaps another holder's.
//
//   const lock = await acquireLock(rpc, { resource: 'backup', mode: 'PR', timeoutMs: 5000 });
//   lock.lost.addEventListener('abort', stopTheWork);
//   try { await work(lock.fencingToken, lock.value); } finally { await lock.release({ rollback: failed }); }
//
// Every lock of one RpcClient travels on one channel (src/api/lock-wire.ts): a line per request and
// per answer, not an HTTP/2 exchange each. The channel opens with the first request and again after
// it ends; while nothing is requested or held on it, it does not keep the process alive.
//
// How loss is known without trusting the agent to say so: the holder confirms the lock every
// `confirmEveryMs` and counts it lost when too little confirmed validity is left (LockValidity,
// lock-validity.cts, shared with corral lock's fast path). A broken channel or a "lost" event is a
// loss at once.
//
// Import-light (the transport client and types only): `corral lock` loads it on its start path.

import { CorralError, isCorralError } from '../api/errors.js';
import {
  LOCK_PATHS,
  type LockAcquireBody,
  type LockChannelEvent,
  type LockCommand,
  type LockGrantedEvent,
  type LockListingWire,
} from '../api/lock-wire.js';
import type { RpcChannel, RpcClient } from '../transport/client.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';
import { LockValidity } from './lock-validity.cjs';

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

/** What a request's listener hears: its events, or the end of the channel. */
type ChannelNews = LockChannelEvent | { event: 'end'; reason: CorralError; byPeer: boolean };

/** One RpcClient's lock channel, opened on first use and again after it ends. */
const channels = new WeakMap<RpcClient, LockChannel>();

class LockChannel {
  private readonly listeners = new Map<number, (news: ChannelNews) => void>();
  private nextRef = 1;
  private readonly channel: RpcChannel;
  private active = true;
  /** Why the channel is over; a new one serves the next request. */
  over: CorralError | undefined;

  static of(rpc: RpcClient): LockChannel {
    let channel = channels.get(rpc);
    if (channel === undefined || channel.over !== undefined) {
      channel = new LockChannel(rpc);
      channels.set(rpc, channel);
    }
    return channel;
  }

  private constructor(readonly rpc: RpcClient) {
    this.channel = rpc.channel(LOCK_PATHS.channel, {
      onMessage: (message) => this.listeners.get((message as LockChannelEvent).ref)?.(message as LockChannelEvent),
      onEnd: (reason, byPeer) => this.end(reason, byPeer),
    });
  }

  /** A new request number, its events to `listener`. */
  open(listener: (news: ChannelNews) => void): number {
    const ref = this.nextRef++;
    this.listeners.set(ref, listener);
    this.activity();
    return ref;
  }

  /** Hands a request's events to another listener. */
  listen(ref: number, listener: (news: ChannelNews) => void): void {
    if (this.listeners.has(ref)) this.listeners.set(ref, listener);
  }

  send(command: LockCommand): void {
    this.channel.send(command);
  }

  /** The request is over for this client: its events are dropped. */
  forget(ref: number): void {
    if (this.listeners.delete(ref)) this.activity();
  }

  /** Keeps the process alive while a request is waiting or a lock held. */
  private activity(): void {
    const active = this.listeners.size > 0;
    if (active === this.active) return;
    this.active = active;
    this.channel.setActive(active);
  }

  private end(reason: CorralError, byPeer: boolean): void {
    this.over = reason;
    const listeners = [...this.listeners.values()];
    this.listeners.clear();
    for (const listener of listeners) listener({ event: 'end', reason, byPeer });
  }
}

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
  const { signal } = options;
  signal?.throwIfAborted();

  const channel = LockChannel.of(rpc);
  return await new Promise<HeldLock>((resolve, reject) => {
    let timer: Timer | undefined;
    let settled = false;
    const finish = (err: Error | undefined, lock?: HeldLock): void => {
      if (settled) return;
      settled = true;
      timer?.cancel();
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(lock as HeldLock);
    };
    /** Leaves the line (or drops a grant in flight): the agent sees the request's client gone. */
    const giveUp = (reason: Error): void => {
      if (settled) return;
      channel.send({ op: 'cancel', ref });
      channel.forget(ref);
      finish(reason);
    };
    const onAbort = (): void => giveUp(signal?.reason instanceof Error ? signal.reason : new CorralError('INTERNAL', `aborted: ${String(signal?.reason)}`));
    const ref = channel.open((news) => {
      switch (news.event) {
        case 'queued':
          options.onQueued?.();
          return;
        case 'granted': {
          // From here on the options' signal and timeout have no effect: release() ends the lock.
          timer?.cancel();
          signal?.removeEventListener('abort', onAbort);
          const lock = new HeldLock(channel, ref, news, clock, startedAt);
          lock.settle().then(
            () => finish(undefined, lock),
            (err: unknown) => {
              lock.drop();
              finish(err as Error);
            },
          );
          return;
        }
        case 'failed':
          channel.forget(ref);
          finish(CorralError.fromWire(news.error));
          return;
        case 'end':
          finish(news.reason);
          return;
        case 'lost':
        case 'released':
        case 'confirmed':
          giveUp(new CorralError('UNAVAILABLE', `${rpc.where} ended the lock request for ${body.resource} (${news.event}) before granting it; retry`));
      }
    });
    channel.send({ op: 'acquire', ref, ...body });
    signal?.addEventListener('abort', onAbort, { once: true });
    // (Past the longest timer Node keeps, the agent's own answer must do.)
    if (timeoutMs > 0 && timeoutMs + TIMEOUT_SLACK_MS <= 2_147_483_647) {
      timer = clock.setTimer(timeoutMs + TIMEOUT_SLACK_MS, () =>
        giveUp(new CorralError('LOCK_TIMEOUT', `the lock on ${body.resource} was not obtained because the timeout (${timeoutMs} milliseconds) expired`)),
      );
    }
  });
}

/** GET /v1/locks: every resource with its holders and waiters. */
export function listLocksVia(rpc: RpcClient): Promise<LockListingWire> {
  return rpc.call<LockListingWire>('GET', LOCK_PATHS.list);
}

export interface ReleaseOptions {
  /** The protected work failed: a transactional sequence (`_S_`) value returns for reuse. */
  rollback?: boolean;
}

interface PendingCommand {
  resolve(event: LockChannelEvent): void;
  reject(err: CorralError): void;
  timer: Timer;
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
  /** Attached, on a lease that counts on while the agent is down: a gate must watch the agent (lock-wire.ts). */
  readonly leaseOutlivesAgent: boolean;
  /** Not attached but guarded: the lock outlives this client by this much (undefined: not guarded). */
  readonly guardedForMs: number | undefined;
  /** Why an attach asked for was not made. */
  readonly attachRefused: string | undefined;
  /** Created on first use of `lost`: most locks are released without anyone asking. */
  private lostController: AbortController | undefined;
  private lostReason: CorralError | undefined;
  /** Until when the lock is certainly held, kept confirmed. */
  private readonly validity: LockValidity;
  private releasing: Promise<void> | undefined;
  private releasedValue = false;
  private ended = false;
  /** Commands sent on the channel and not yet answered, by seq. */
  private readonly pending = new Map<number, PendingCommand>();
  private nextSeq = 1;

  /** Use acquireLock(). */
  constructor(
    private readonly channel: LockChannel,
    private readonly ref: number,
    granted: LockGrantedEvent,
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
    this.leaseOutlivesAgent = granted.leaseOutlivesAgent === true;
    this.guardedForMs = granted.guardedForMs;
    this.attachRefused = granted.attachRefused;
    // The grant happened after the request was sent: counting from then is on the safe side.
    this.validity = new LockValidity(sentAt + granted.validForMs, granted.confirmEveryMs, granted.stopWithinMs, {
      clock,
      confirm: async (timeoutMs) => {
        const answer = await this.command({ op: 'confirm', ref: this.ref, seq: 0 }, timeoutMs);
        return answer.event === 'confirmed' ? answer.validForMs : 0;
      },
      gone: (err) => isCorralError(err, 'SESSION_LOST') || isCorralError(err, 'NOT_FOUND'),
      lost: (err) =>
        this.lose(
          new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${err === undefined ? this.validity.unconfirmedMessage(this.channel.rpc.where) : (err as Error).message}`),
        ),
    });
    channel.listen(ref, (news) => this.hear(news));
  }

  /** Before handing the lock out: a request that waited long needs a fresh confirmation. */
  async settle(): Promise<void> {
    await this.validity.settle();
    if (this.lostReason !== undefined) throw this.lostReason;
  }

  /**
   * Aborted (reason: LOCK_LOST) when the lock is lost: stop the protected work at once, within
   * remainingMs() at the latest, then call release() (which then only tells the agent to drop it).
   */
  get lost(): AbortSignal {
    if (!this.lostController) {
      this.lostController = new AbortController();
      if (this.lostReason !== undefined) this.lostController.abort(this.lostReason);
    }
    return this.lostController.signal;
  }

  /** Resolves with the loss when the lock is lost (never, once released). */
  whenLost(): Promise<CorralError> {
    if (this.lostReason !== undefined) return Promise.resolve(this.lostReason);
    const signal = this.lost;
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason as CorralError), { once: true }));
  }

  get released(): boolean {
    return this.releasedValue;
  }

  /** Milliseconds the lock is certainly still held (0 once lost or released). */
  remainingMs(): number {
    if (this.lostReason !== undefined || this.releasedValue) return 0;
    return this.validity.remainingMs();
  }

  /** The monotonic time (this process's clock) by which the work must have stopped if lost. */
  get deadline(): number {
    return this.validity.validUntil;
  }

  /**
   * Releases the lock. Idempotent: later calls share the first one's outcome. After a loss it only
   * tells the agent to drop the request. `rollback` matters to transactional sequences only.
   */
  release(options: ReleaseOptions = {}): Promise<void> {
    this.releasing ??= this.releaseOnce(options.rollback === true);
    return this.releasing;
  }

  close(): Promise<void> {
    return this.release();
  }

  /** Tells the agent this client is gone for the lock: it releases it, rolled back (as after a crash). */
  drop(): void {
    this.ended = true;
    this.stopTimers();
    this.channel.send({ op: 'cancel', ref: this.ref });
    this.channel.forget(this.ref);
    this.rejectPending(new CorralError('UNAVAILABLE', `the lock on ${this.resource} was dropped by this client`));
  }

  private async releaseOnce(rollback: boolean): Promise<void> {
    this.stopTimers();
    if (this.lostReason !== undefined) return this.drop();
    try {
      await this.command({ op: 'release', ref: this.ref, seq: 0, rollback }, this.channel.rpc.requestTimeoutMs);
      this.releasedValue = true;
      this.ended = true;
      this.channel.forget(this.ref);
    } catch (err) {
      this.drop();
      // Already gone on the agent (lost meanwhile): nothing is held.
      if (!isCorralError(err, 'NOT_FOUND') && !isCorralError(err, 'SESSION_LOST')) throw err;
    }
  }

  // --- the channel --------------------------------------------------------------------------

  /** Sends a command; resolves with its answer, rejects with its failure, or TIMEOUT. */
  private command(command: Extract<LockCommand, { seq: number }>, timeoutMs: number): Promise<LockChannelEvent> {
    const over = this.channel.over;
    if (over !== undefined) return Promise.reject(over);
    const seq = this.nextSeq++;
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimer(timeoutMs, () => {
        this.pending.delete(seq);
        reject(new CorralError('TIMEOUT', `${this.channel.rpc.where} did not answer ${command.op} for the lock on ${this.resource} within ${timeoutMs} ms`));
      });
      this.pending.set(seq, { resolve, reject, timer });
      this.channel.send({ ...command, seq });
    });
  }

  private hear(news: ChannelNews): void {
    switch (news.event) {
      case 'lost':
        return this.lose(new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${news.reason}`));
      case 'released':
      case 'confirmed':
        return this.answer(news.seq, (p) => p.resolve(news));
      case 'failed':
        // The request itself failed after its grant (its stream broke on the agent): a loss.
        if (news.op === 'acquire' || news.seq === undefined) {
          this.channel.forget(this.ref);
          return this.ended || this.releasing ? undefined : this.lose(new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${news.error.message}`));
        }
        return this.answer(news.seq, (p) => p.reject(CorralError.fromWire(news.error)));
      case 'end':
        this.rejectPending(news.reason);
        if (!this.ended && !this.releasing) {
          const why = news.byPeer ? `${this.channel.rpc.where} closed the lock stream` : news.reason.message;
          this.lose(new CorralError('LOCK_LOST', `lost the lock on ${this.resource}: ${why}`));
        }
        return;
      case 'queued':
      case 'granted':
        return; // not after the grant
    }
  }

  private answer(seq: number | undefined, settle: (pending: PendingCommand) => void): void {
    const pending = seq === undefined ? undefined : this.pending.get(seq);
    if (seq === undefined || pending === undefined) return;
    this.pending.delete(seq);
    pending.timer.cancel();
    settle(pending);
  }

  private rejectPending(reason: CorralError): void {
    for (const pending of this.pending.values()) {
      pending.timer.cancel();
      pending.reject(reason);
    }
    this.pending.clear();
  }

  // --- loss ---------------------------------------------------------------------------------

  private lose(reason: CorralError): void {
    if (this.lostReason !== undefined || this.releasedValue) return;
    this.stopTimers();
    // The request stays open on the agent: dropping it would make the agent release the lock (if
    // it still holds it) while the work may still be stopping. release() drops it once stopped.
    this.lostReason = reason;
    this.lostController?.abort(reason);
  }

  private stopTimers(): void {
    this.validity.stop();
  }
}
