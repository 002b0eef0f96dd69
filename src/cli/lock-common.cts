// What both paths of corral lock (the fast path, lock-fast.cts, and the full path, verbs/lock.ts)
// must do alike: FLoM's exit codes, the timeout message, the signals forwarded to CMD and the
// margin of a lost lock's SIGKILL. CommonJS and import-free, for the fast path.

/** Forwarded to CMD's group once it runs (before, they abandon the request). */
export const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const;

/** After a loss, SIGKILL goes out this long before the lock can expire. */
export const KILL_MARGIN_MS = 50;

/** FLoM's exit codes: 96 and 98 as their errors say, 99 for everything else. */
export function exitCodeOf(err: unknown): number {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (code === 'RESOURCE_NOT_FOUND') return 96;
  if (code === 'LOCK_BUSY' || code === 'LOCK_TIMEOUT' || code === 'LOCK_LOST') return 98;
  return 99;
}

/** flom's words for -o expiring (the whole request's deadline, not the agent's remainder). */
export function timedOutMessage(resource: string, timeoutMs: number): string {
  return `The lock on ${resource} was not obtained because timeout (${timeoutMs} milliseconds) expired`;
}
