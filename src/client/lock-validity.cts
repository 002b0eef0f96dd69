// How a holder knows its lock is still held, without trusting the agent to say it is lost: it
// confirms the lock every `confirmEveryMs`; each answer says how long the agent's session is
// certainly alive, counted here from when the confirmation was *sent*. When less than
// `stopWithinMs` of that remains unconfirmed (the agent is frozen, cut off, or its store is gone),
// the lock counts as lost: the rest is the grace period to stop the work, and it ends before the
// lease can expire on the store.
//
// One implementation for both holders: HeldLock (client/locks.ts, the library and corral lock's
// full path) and corral lock's fast path (cli/lock-fast.cts). CommonJS (.cts) and import-free, so
// that the fast path, which runs before any ES module loads, can use it.

export interface ValidityTimer {
  cancel(): void;
}

/** A monotonic clock (util/clock.ts's Clock fits). */
export interface ValidityClock {
  now(): number;
  setTimer(ms: number, fn: () => void): ValidityTimer;
}

export interface ValidityHooks {
  clock: ValidityClock;
  /** One confirmation on the wire: resolves with the validity the agent answered (ms); rejects when unanswered or refused. */
  confirm(timeoutMs: number): Promise<number>;
  /** Whether a rejection of confirm() says the lock is gone (then it is lost at once, whatever time seemed left). */
  gone(err: unknown): boolean;
  /**
   * The lock is lost, once: `err` is confirm()'s rejection that said it is gone; undefined when it
   * was not confirmed in time (unconfirmedMessage() says so).
   */
  lost(err: unknown): void;
}

/** The validity of one held lock, with its confirmation loop and its watchdog. */
export class LockValidity {
  private until: number;
  private confirmTimer: ValidityTimer | undefined;
  private watchdog: ValidityTimer | undefined;
  private watchdogDue = 0;
  /** Lost, released or releasing: confirmations no longer matter. */
  private stopped = false;

  /** `validUntil`: monotonic ms (the hooks' clock) until which the grant says the lock is held. */
  constructor(
    validUntil: number,
    readonly confirmEveryMs: number,
    readonly stopWithinMs: number,
    private readonly hooks: ValidityHooks,
  ) {
    this.until = validUntil;
  }

  /** Monotonic ms until which the lock is certainly held. */
  get validUntil(): number {
    return this.until;
  }

  /** Milliseconds the lock is certainly still held. */
  remainingMs(): number {
    return Math.max(0, this.until - this.hooks.clock.now());
  }

  /**
   * Before the work starts: a request that waited long needs a fresh confirmation; with too little
   * left even then, the lock is lost (hooks.lost). Otherwise the confirmations and the watchdog start.
   */
  async settle(): Promise<void> {
    if (this.remainingMs() <= this.stopWithinMs) await this.confirm(Math.max(1000, this.confirmEveryMs * 2));
    if (this.stopped) return;
    if (this.remainingMs() <= this.stopWithinMs) return this.lose(undefined);
    this.scheduleConfirm();
    this.armWatchdog();
  }

  /** For good: no more confirmations, no watchdog, no loss reported. */
  stop(): void {
    this.stopped = true;
    this.confirmTimer?.cancel();
    this.watchdog?.cancel();
    this.confirmTimer = undefined;
    this.watchdog = undefined;
  }

  /** Why the lock counts as lost when it was not confirmed in time. */
  unconfirmedMessage(where: string): string {
    return `${where} has not confirmed it in time (it may expire in ${Math.round(this.remainingMs())} ms)`;
  }

  private lose(err: unknown): void {
    if (this.stopped) return;
    this.stop();
    this.hooks.lost(err);
  }

  private scheduleConfirm(): void {
    if (this.stopped) return;
    this.confirmTimer = this.hooks.clock.setTimer(this.confirmEveryMs, () => {
      void this.confirm(this.confirmEveryMs * 2).finally(() => this.scheduleConfirm());
    });
  }

  /** One confirmation; extends the validity counted from when it was sent. */
  private async confirm(timeoutMs: number): Promise<void> {
    const sentAt = this.hooks.clock.now();
    try {
      const validForMs = await this.hooks.confirm(timeoutMs);
      this.until = Math.max(this.until, sentAt + validForMs);
    } catch (err) {
      // The agent says the lock is gone: lost now. Otherwise unanswered: the watchdog decides.
      if (!this.stopped && this.hooks.gone(err)) this.lose(err);
    }
  }

  private armWatchdog(): void {
    if (this.stopped) return;
    this.watchdogDue = this.until - this.stopWithinMs;
    this.watchdog = this.hooks.clock.setTimer(this.watchdogDue - this.hooks.clock.now(), () => void this.checkValidity());
  }

  private async checkValidity(): Promise<void> {
    if (this.stopped) return;
    const now = this.hooks.clock.now();
    if (now < this.until - this.stopWithinMs) return this.armWatchdog(); // confirmed meanwhile
    // Fired far behind its time: this process was stopped or starved, not the agent. Ask before
    // concluding (the work ran on meanwhile either way): while validity is left, only as long as
    // still leaves a grace period before it ends; once it has ended, for up to 2 s.
    if (now - this.watchdogDue > Math.min(250, this.confirmEveryMs)) {
      const left = this.until - now;
      await this.confirm(left > 500 ? left - 250 : 2000);
      if (this.stopped) return;
      if (this.hooks.clock.now() < this.until - this.stopWithinMs) return this.armWatchdog();
    }
    this.lose(undefined);
  }
}
