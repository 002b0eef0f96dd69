// Lease deadlines on the monotonic clock. One timer is armed for the earliest deadline; keepalives
// only move deadlines later, so they never need to re-arm it (an early fire just re-arms).
// Deadlines are not persisted: after a restart every lease starts a fresh full TTL, as in etcd.

import type { Clock, Timer } from '../../util/clock.js';
import type { LeaseId } from '../store.js';

const MAX_TIMER_MS = 3_600_000;

export class LeaseDeadlines {
  private readonly deadlines = new Map<LeaseId, number>();
  private timer: Timer | undefined;
  private armedAt = Infinity;
  private closed = false;

  constructor(
    private readonly clock: Clock,
    private readonly onExpire: (id: LeaseId) => void,
  ) {}

  /** Starts or renews a lease: it expires `ttlSeconds` from now. */
  renew(id: LeaseId, ttlSeconds: number): void {
    const deadline = this.clock.now() + ttlSeconds * 1000;
    this.deadlines.set(id, deadline);
    if (deadline < this.armedAt) this.arm(deadline);
  }

  forget(id: LeaseId): void {
    this.deadlines.delete(id);
    if (this.deadlines.size === 0) this.disarm();
  }

  /** Milliseconds left, or undefined for an unknown lease. */
  remainingMs(id: LeaseId): number | undefined {
    const deadline = this.deadlines.get(id);
    return deadline === undefined ? undefined : Math.max(0, deadline - this.clock.now());
  }

  close(): void {
    this.closed = true;
    this.disarm();
    this.deadlines.clear();
  }

  private arm(at: number): void {
    if (this.closed) return;
    this.disarm();
    // Timers cannot wait longer than 2^31 - 1 ms (Node fires them at once instead), so a far
    // deadline is approached in steps; an early fire just re-arms.
    const delay = Math.min(at - this.clock.now(), MAX_TIMER_MS);
    this.armedAt = this.clock.now() + delay;
    this.timer = this.clock.setTimer(delay, () => this.fire());
  }

  private disarm(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.armedAt = Infinity;
  }

  private fire(): void {
    this.timer = undefined;
    this.armedAt = Infinity;
    const now = this.clock.now();
    const expired: LeaseId[] = [];
    let next = Infinity;
    for (const [id, deadline] of this.deadlines) {
      if (deadline <= now) expired.push(id);
      else next = Math.min(next, deadline);
    }
    for (const id of expired) {
      this.deadlines.delete(id);
      this.onExpire(id);
    }
    if (next < this.armedAt) this.arm(next);
  }
}
