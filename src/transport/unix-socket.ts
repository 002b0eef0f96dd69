// Binding a UNIX socket safely: the file's permissions are the authentication of the local CLI,
// so the socket must never exist with looser permissions, and a live agent's socket is never stolen.

import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect, type Server } from 'node:net';
import { isMainThread } from 'node:worker_threads';
import { CorralError } from '../api/errors.js';

const PROBE_TIMEOUT_MS = 1_000;

/** Removes a socket file nobody answers on; fails with ALREADY_RUNNING when something does. */
export async function clearStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!stat) return;
  if (!stat.isSocket()) {
    throw new CorralError('CONFIG_INVALID', `${path} exists and is not a socket; remove it or choose another socket path`);
  }
  if (await answers(path)) {
    throw new CorralError('ALREADY_RUNNING', `an agent is already listening on ${path}; stop it first or choose another socket path`);
  }
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    const done = (live: boolean): void => {
      clearTimeout(timer);
      probe.destroy();
      resolve(live);
    };
    // A listener that accepts but is slow still counts as live: never delete a socket in use.
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    probe.once('connect', () => done(true));
    probe.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}

/**
 * Listens on `path` with the socket file created at `mode`; returns the file's inode, so that
 * closing removes only our own socket and never a successor's. bind() creates the file synchronously
 * inside server.listen(), so a umask set around that call means the file is never looser than mode
 * (a chmod after listen() would leave a window). Worker threads cannot set the umask; there the
 * chmod that follows is all there is.
 */
export async function listenUnixSocket(server: Server, path: string, mode: number): Promise<number> {
  const restore = isMainThread ? process.umask(~mode & 0o777) : undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(path, () => {
        server.off('error', onError);
        resolve();
      });
      if (restore !== undefined) process.umask(restore);
    });
  } finally {
    if (restore !== undefined) process.umask(restore);
  }
  await chmod(path, mode);
  return (await lstat(path)).ino;
}

/** Unlinks the socket file if it is still the one we bound (same inode). */
export async function removeSocketFile(path: string, ino: number): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat?.isSocket() && stat.ino === ino) await unlink(path).catch(() => undefined);
}
