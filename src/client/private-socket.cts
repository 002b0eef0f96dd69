// Where the per-user private lock daemon listens (see private-daemon.ts for the whole story).
// CommonJS (.cts) and import-light, for corral lock's fast path (cli/lock-fast.cts), which runs
// before any ES module loads.

import path from 'node:path';

/** /tmp/corral-<uid>, or $CORRAL_RUNTIME_DIR when it is an absolute path. */
export function privateRuntimeDir(env: NodeJS.ProcessEnv = process.env): string {
  const own = env.CORRAL_RUNTIME_DIR;
  if (own && path.isAbsolute(own)) return own;
  return `/tmp/corral-${process.getuid?.() ?? 'user'}`;
}

/** The default socket of the private lock daemon. */
export function defaultLockSocket(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(privateRuntimeDir(env), 'lock.sock');
}
