// Finding and starting the per-user private lock daemon, as flom does: a per-user socket (or the
// one -s names); if no daemon answers there and the lifespan allows, start `corral agent --private`
// in the background and use it. Two callers racing to start one end up sharing one (the daemon's
// data directory lock and its socket bind are exclusive; the loser exits 0).
//
// Per-user directory: /tmp/corral-<uid> (as flom's /tmp/flom-<login>), or $CORRAL_RUNTIME_DIR when
// set; never $XDG_RUNTIME_DIR, which login shells have and cron jobs and services lack: the same
// user's commands must find the same daemon wherever they run. Mode 0700 and owned by the user, or
// it is refused (a directory someone else prepared could hijack the socket). The default socket is
// <dir>/lock.sock. A socket's daemon keeps its store and log in <socket>.d/, next to the socket and
// named by it alone, so whoever restarts the daemon of a shared socket (-s) opens the same store
// (or is refused, if that directory is another user's): never an empty one that would grant a
// lock the crashed daemon's holder may still be running under.

import { spawn } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorralError } from '../api/errors.js';
import { privateRuntimeDir } from './private-socket.cjs';

export { defaultLockSocket, privateRuntimeDir } from './private-socket.cjs';

/** Where the daemon serving `socket` keeps its store and log: derived from the socket path alone. */
export function privateDataDir(socket: string): string {
  return `${path.resolve(socket)}.d`;
}

/** Creates `dir` (mode 0700) if needed and checks it is the user's own and private. */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory()) throw new CorralError('CONFIG_INVALID', `${dir} is not a directory; remove it so corral can create its private directory there`);
  if (uid !== undefined && st.uid !== uid) throw new CorralError('CONFIG_INVALID', `${dir} belongs to uid ${st.uid}, not to you (uid ${uid}); remove it, or use -s to choose another socket`);
  if ((st.mode & 0o077) !== 0) throw new CorralError('CONFIG_INVALID', `${dir} is accessible by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 700 it`);
}

/** The `corral` executable: the one running, else the repository's. */
function corralBin(): string {
  const running = process.argv[1];
  if (running !== undefined && /(?:^|\/)corral$/.test(running)) return running;
  return fileURLToPath(new URL('../../../bin/corral', import.meta.url));
}

export interface DaemonStart {
  pid: number;
  /** Resolves with the exit code once the daemon exits (null: killed by a signal). */
  exited: Promise<number | null>;
  /** Whether it still runs. */
  running(): boolean;
  logFile: string;
}

/**
 * Starts `corral agent --private` for `socket` in the background (own session, no terminal,
 * cwd /), logging to its data directory. Does not wait for it to serve.
 */
export function startPrivateDaemon(o: { socket: string; lifespanMs: number; socketMode: number; env?: NodeJS.ProcessEnv }): DaemonStart {
  const env = o.env ?? process.env;
  const runtime = privateRuntimeDir(env);
  ensurePrivateDir(runtime);
  const dataDir = privateDataDir(o.socket);
  ensurePrivateDir(dataDir);
  const logFile = path.join(dataDir, 'agent.log');
  const log = openSync(logFile, 'a', 0o600);
  let child;
  try {
    const args = [
      corralBin(),
      'agent',
      '--private',
      '--socket',
      path.resolve(o.socket),
      '--data-dir',
      dataDir,
      '--lifespan',
      String(o.lifespanMs),
      '--socket-mode',
      o.socketMode.toString(8),
    ];
    // Not the lock's own variables: a daemon started under `corral lock` must not look like a holder.
    const { CORRAL_FENCE: _f, CORRAL_LOCK_VALUE: _v, ...childEnv } = env;
    child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'ignore', log], cwd: '/', env: childEnv });
  } finally {
    closeSync(log);
  }
  const pid = child.pid;
  if (pid === undefined) throw new CorralError('INTERNAL', 'could not start the private lock daemon');
  let alive = true;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      alive = false;
      resolve(code);
    }),
  );
  child.unref();
  return { pid, exited, running: () => alive, logFile };
}

/** The last lines of a daemon's log, for an error message. */
export function logTail(file: string, lines = 5): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Whether a connection failure means nothing serves the socket (so a daemon may be started). */
export function nobodyListens(err: unknown): boolean {
  const cause = (err as { cause?: unknown } | undefined)?.cause as NodeJS.ErrnoException | undefined;
  const code = cause?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}
