// The data-directory lock: one store per directory; a stale lock (dead pid) is taken over.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import { LOCK_FILE } from './dir-lock.js';
import { openEmbeddedStore } from './embedded-store.js';
import { memoryLogger, withStore, withTempDir } from './fixtures.js';

async function assertLockedBy(dataDir: string, pid: number): Promise<void> {
  await assert.rejects(openEmbeddedStore({ dataDir }), (err: unknown) => {
    assert.ok(isCorralError(err, 'DATA_DIR_LOCKED'), String(err));
    assert.ok(err.message.includes(`pid ${pid}`), err.message);
    return true;
  });
}

/** A child process that idles until killed. */
async function idleChild(): Promise<ChildProcess & { pid: number }> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  await once(child, 'spawn');
  assert.ok(child.pid !== undefined);
  return child as ChildProcess & { pid: number };
}

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await once(child, 'exit');
  assert.ok(child.pid !== undefined);
  return child.pid;
}

describe('data directory lock', () => {
  it('refuses a second store on the same directory, naming the owner, until the first closes', () =>
    withTempDir(async (dataDir) => {
      const first = await openEmbeddedStore({ dataDir });
      try {
        assert.equal((await readFile(join(dataDir, LOCK_FILE), 'utf8')).trim(), String(process.pid));
        await assertLockedBy(dataDir, process.pid);
      } finally {
        await first.close();
      }
      await assert.rejects(stat(join(dataDir, LOCK_FILE)), 'close() removes the lock file');
      await withStore({ dataDir }, async (second) => assert.equal(await second.revision(), 0n));
    }));

  it('refuses a directory locked by another live process', () =>
    withTempDir(async (dataDir) => {
      const child = await idleChild();
      try {
        await writeFile(join(dataDir, LOCK_FILE), `${child.pid}\n`);
        await assertLockedBy(dataDir, child.pid);
        assert.equal((await readFile(join(dataDir, LOCK_FILE), 'utf8')).trim(), String(child.pid), 'the lock was left alone');
      } finally {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    }));

  it('takes over a stale lock whose process is dead, or whose content is garbage, with a warning', () =>
    withTempDir(async (dataDir) => {
      for (const content of [`${await deadPid()}\n`, 'not a pid']) {
        await writeFile(join(dataDir, LOCK_FILE), content);
        const logger = memoryLogger();
        await withStore({ dataDir, logger }, async () => {
          assert.equal((await readFile(join(dataDir, LOCK_FILE), 'utf8')).trim(), String(process.pid));
        });
        assert.ok(logger.entries.some((e) => e.level === 'warn' && e.msg.includes('stale lock')));
      }
    }));
});
