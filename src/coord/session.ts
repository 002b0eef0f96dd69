// A session is a lease kept alive on the store (etcd's concurrency.Session). It tells its owner
// the lease is lost *before* the store can have expired it: the local deadline is counted on the
// monotonic clock from the moment the last successful keepalive was *sent*, minus a margin, so a
// holder stops acting under the session while the server may still hold it, never after.

import { CorralError, isCorralError } from '../api/errors.js';
import type { LeaseId, Store } from '../store/store.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';
import { nullLogger, type Logger } from '../util/log.js';

export type SessionState = 'alive' | 'lost' | 'closed';

export type SessionLossReason =
  /** The store said the lease no longer exists. */
  | 'lease-gone'
  /** No keepalive succeeded in time: the lease may expire on the store any moment. */
  | 'deadline';

export interface SessionOptions {
  ttlSeconds: number;
  keepaliveIntervalMs: number;
  clock?: Clock;
  logger?: Logger;
  /** Safety margin before the TTL; default max(100 ms, 10% of the TTL). */
  marginMs?: number;
}

export class Session {
  private stateValue: SessionState = 'alive';
  private readonly controller = new AbortController();
  private deadlineTimer: Timer | undefined;
  private keepaliveTimer: Timer | undefined;
  private lossReason: SessionLossReason | undefined;
  private lastAckSentAt: number;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly marginMs: number;

  private constructor(
    private readonly store: Store,
    readonly lease: LeaseId,
    readonly ttlSeconds: number,
    grantSentAt: number,
    private readonly opts: SessionOptions,
  ) {
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? nullLogger;
    this.marginMs = opts.marginMs ?? Math.max(100, ttlSeconds * 100);
    this.lastAckSentAt = grantSentAt;
    this.armDeadline();
    this.scheduleKeepalive();
  }

  /** Grants a lease and starts keeping it alive. */
  static async open(store: Store, opts: SessionOptions): Promise<Session> {
    const clock = opts.clock ?? systemClock;
    const sentAt = clock.now();
    const grant = await store.grantLease(opts.ttlSeconds);
    return new Session(store, grant.id, grant.ttlSeconds, sentAt, opts);
  }

  /**
   * Keeps an existing lease alive from now on: a restarted agent taking back the keys its previous
   * incarnation left under that lease. Fails with LEASE_NOT_FOUND when it is gone. The TTL is the
   * one the store reports for the lease.
   */
  static async resume(store: Store, lease: LeaseId, opts: Omit<SessionOptions, 'ttlSeconds'>): Promise<Session> {
    const clock = opts.clock ?? systemClock;
    const sentAt = clock.now();
    const { ttlSeconds } = await store.keepAlive(lease);
    return new Session(store, lease, ttlSeconds, sentAt, { ...opts, ttlSeconds });
  }

  get state(): SessionState {
    return this.stateValue;
  }

  /** Aborted when the session is lost or closed; pass it to anything that must stop with it. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get reason(): SessionLossReason | undefined {
    return this.lossReason;
  }

  /** Monotonic time by which the lease is certainly still alive on the store (minus the margin). */
  get deadline(): number {
    return this.lastAckSentAt + this.ttlSeconds * 1000 - this.marginMs;
  }

  /** Resolves when the session is lost or closed. */
  done(): Promise<SessionState> {
    if (this.controller.signal.aborted) return Promise.resolve(this.stateValue);
    return new Promise((resolve) =>
      this.controller.signal.addEventListener('abort', () => resolve(this.stateValue), { once: true }),
    );
  }

  private armDeadline(): void {
    this.deadlineTimer?.cancel();
    this.deadlineTimer = this.clock.setTimer(this.deadline - this.clock.now(), () => this.lose('deadline'));
  }

  private scheduleKeepalive(): void {
    this.keepaliveTimer = this.clock.setTimer(this.opts.keepaliveIntervalMs, () => void this.keepalive());
  }

  /**
   * One keepalive per interval, without waiting for the previous one: a slow answer must not
   * delay the next attempt (each is bounded by the store client's own deadline). Whichever
   * succeeds moves the deadline, counted from when *it* was sent.
   */
  private async keepalive(): Promise<void> {
    if (this.stateValue !== 'alive') return;
    this.scheduleKeepalive();
    const sentAt = this.clock.now();
    try {
      await this.store.keepAlive(this.lease);
      if (this.stateValue !== 'alive' || sentAt <= this.lastAckSentAt) return;
      this.lastAckSentAt = sentAt;
      this.armDeadline();
    } catch (err) {
      if (isCorralError(err, 'LEASE_NOT_FOUND')) {
        this.lose('lease-gone');
        return;
      }
      this.logger.debug({ err: (err as Error).message, lease: this.lease.toString(16) }, 'session keepalive failed');
    }
  }

  private lose(reason: SessionLossReason): void {
    if (this.stateValue !== 'alive') return;
    this.stateValue = 'lost';
    this.lossReason = reason;
    this.stopTimers();
    this.logger.warn({ lease: this.lease.toString(16), reason }, 'session lost');
    this.controller.abort(new CorralError('SESSION_LOST', `session lease ${this.lease.toString(16)} lost (${reason})`));
  }

  private stopTimers(): void {
    this.deadlineTimer?.cancel();
    this.keepaliveTimer?.cancel();
  }

  /** Ends the session: revokes the lease so everything attached to it vanishes now. */
  async close(options: { revoke?: boolean } = {}): Promise<void> {
    const wasAlive = this.stateValue === 'alive';
    if (this.stateValue !== 'closed') {
      this.stateValue = 'closed';
      this.stopTimers();
      this.controller.abort(new CorralError('SESSION_LOST', 'session closed'));
    }
    if (wasAlive && options.revoke !== false) {
      try {
        await this.store.revokeLease(this.lease);
      } catch (err) {
        this.logger.debug({ err: (err as Error).message }, 'revoking the session lease failed; it will expire');
      }
    }
  }
}
