// Guards a data directory against two stores at once: a LOCK file holding the owner's pid.
// The file is created exclusively (O_EXCL on a private temp file, then link(2), which also fails if
// the target exists) so no reader ever sees it half-written. A lock whose pid is dead is stale and
// taken over.

import { randomUUID } from 'node:crypto';
import { link, open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CorralError } from '../../api/errors.js';
import type { Logger } from '../../util/log.js';
import { isProcessAlive } from '../../util/process.js';
import { errnoCode } from './fs-util.js';

export const LOCK_FILE = 'LOCK';

export interface DirLock {
  readonly path: string;
  release(): Promise<void>;
}

export async function acquireDirLock(dir: string, logger: Logger): Promise<DirLock> {
  const path = join(dir, LOCK_FILE);
  // Two attempts: the second follows the removal of a stale lock.
  for (let attempt = 0; attempt < 2; attempt++) {
    if (await tryCreate(path)) return { path, release: () => releaseLock(path) };
    const owner = await readOwner(path);
    if (owner === undefined) continue; // vanished between our attempts: try again
    if (owner !== null && isProcessAlive(owner)) {
      const who = owner === process.pid ? `pid ${owner} (this process)` : `pid ${owner}`;
      throw new CorralError(
        'DATA_DIR_LOCKED',
        `data directory ${dir} is in use by ${who}; stop that process, or point this one at another --data-dir. ` +
          `If no corral process is running, remove ${path}`,
      );
    }
    logger.warn({ file: path, pid: owner }, `taking over stale lock ${path} (its owner, pid ${owner ?? '?'}, is not running)`);
    await removeIfOwner(path, owner);
  }
  throw new CorralError('DATA_DIR_LOCKED', `could not lock data directory ${dir}: another process keeps taking ${path}; retry`);
}

async function tryCreate(path: string): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${randomUUID()}.tmp`;
  const fh = await open(tmp, 'wx');
  try {
    await fh.writeFile(`${process.pid}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(tmp);
  }
}

/** The pid in the lock file; null when unreadable garbage; undefined when the file is gone. */
async function readOwner(path: string): Promise<number | null | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}


// Re-reads just before removing, so a lock that another process took over in the meantime survives.
async function removeIfOwner(path: string, owner: number | null): Promise<void> {
  if ((await readOwner(path)) !== owner) return;
  await unlink(path).catch((err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
  });
}

async function releaseLock(path: string): Promise<void> {
  if ((await readOwner(path)) === process.pid) await unlink(path);
}
