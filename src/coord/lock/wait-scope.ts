// One deadline for a whole lock request (FLoM restarts its timer at every protocol step; corral
// does not), merged with the caller's signal and the session's: whichever fires first aborts
// every wait of the request, with an error that says which.

import { CorralError } from '../../api/errors.js';
import type { Clock, Timer } from '../../util/clock.js';

export interface AbortSource {
  signal: AbortSignal;
}

// setTimeout fires at once for delays past 2^31 - 1 ms; longer deadlines are reached in steps.
const LONGEST_TIMER_MS = 2 ** 31 - 1;

export class WaitScope {
  private readonly controller = new AbortController();
  private timer: Timer | undefined;
  private readonly detach: (() => void)[] = [];

  /** `deadline`: monotonic ms (clock.now()), or Infinity to wait forever. */
  constructor(clock: Clock, deadline: number, sources: readonly (AbortSignal | undefined)[], timeoutError: () => CorralError) {
    for (const source of sources) {
      if (source === undefined) continue;
      if (source.aborted) {
        this.abort(source.reason);
        continue;
      }
      const onAbort = (): void => this.abort(source.reason);
      source.addEventListener('abort', onAbort, { once: true });
      this.detach.push(() => source.removeEventListener('abort', onAbort));
    }
    if (Number.isFinite(deadline) && !this.controller.signal.aborted) this.arm(clock, deadline, timeoutError);
  }

  private arm(clock: Clock, deadline: number, timeoutError: () => CorralError): void {
    const ms = deadline - clock.now();
    this.timer =
      ms > LONGEST_TIMER_MS
        ? clock.setTimer(LONGEST_TIMER_MS, () => this.arm(clock, deadline, timeoutError))
        : clock.setTimer(ms, () => this.abort(timeoutError()));
  }

  /** Aborted, with the reason of whichever source fired first. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private abort(reason: unknown): void {
    if (this.controller.signal.aborted) return;
    this.controller.abort(reason instanceof Error ? reason : new CorralError('INTERNAL', `lock request aborted: ${String(reason)}`));
  }

  close(): void {
    this.timer?.cancel();
    for (const detach of this.detach.splice(0)) detach();
  }
}
