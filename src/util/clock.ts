// Time is injected: logic that decides timeouts asks a Clock, never Date.now(), so tests and a
// future simulator can drive it. `now()` is monotonic milliseconds; `wallNow()` is for display only.

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds (arbitrary origin). Use for every timeout and lease. */
  now(): number;
  /** Wall-clock milliseconds since the epoch. Display and logs only, never for deciding. */
  wallNow(): number;
  setTimer(ms: number, fn: () => void): Timer;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(ms, fn) {
    const t = setTimeout(fn, Math.max(0, ms));
    return { cancel: () => clearTimeout(t) };
  },
  sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        return;
      }
      const onAbort = (): void => {
        clearTimeout(t);
        reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      const t = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, Math.max(0, ms));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  },
};
