// Failures of the embedded store: a disk that refuses a durable write, and requests it must refuse.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { isCorralError, type ErrorCode } from '../../api/errors.js';
import type { Store, WatchEvent } from '../store.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openEmbeddedStore } from './embedded-store.js';
import { ManualClock, withStore, withTempDir } from './fixtures.js';

function rejectsWith(promise: Promise<unknown>, code: ErrorCode, mention?: string): Promise<void> {
  return assert.rejects(promise, (err: unknown) => {
    assert.ok(isCorralError(err, code), `expected ${code}, got ${String(err)}`);
    if (mention !== undefined) assert.ok(err.message.includes(mention), err.message);
    return true;
  });
}

describe('embedded store failures', () => {
  it('a failed durable write (EIO) stops the store: the write fails, nothing more is served, close still unlocks', () =>
    withTempDir(async (dataDir) => {
      // Every write through the thread pool (fs.write), where the test can fail it.
      const store = await openEmbeddedStore({ dataDir, syncLoneWrites: false });
      const original = fs.write;
      try {
        await store.put('ok', '1');
        const watch = store.watch('', { fromRevision: 1n });
        // The journal's segments are open with O_DSYNC: a write that fails is a sync that failed.
        fs.write = ((_fd: number, _buf: Buffer, _off: number, _len: number, _pos: number, cb: (err: NodeJS.ErrnoException | null, written: number) => void) => {
          cb(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }), 0);
        }) as unknown as typeof fs.write;
        await rejectsWith(store.put('lost', 'v'), 'STORE_UNAVAILABLE', 'EIO');
        fs.write = original;
        await rejectsWith(store.get('ok'), 'STORE_UNAVAILABLE');
        await rejectsWith(store.put('later', 'v'), 'STORE_UNAVAILABLE');
        await rejectsWith(store.grantLease(5), 'STORE_UNAVAILABLE');
        const seen: WatchEvent[] = [];
        await rejectsWith(
          (async () => {
            for await (const e of watch) seen.push(e);
          })(),
          'STORE_UNAVAILABLE',
        );
        assert.deepEqual(
          seen.map((e) => e.kv.key),
          ['ok'],
          'the watch saw the durable write, never the failed one',
        );
      } finally {
        fs.write = original;
        await store.close();
      }
      await withStore({ dataDir }, async (again) => assert.equal((await again.get('ok')).kv?.value, '1'));
    }));

  it('refuses malformed requests with BAD_REQUEST and oversized writes with TOO_LARGE', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store: Store) => {
        await rejectsWith(store.range('', { limit: -1 }), 'BAD_REQUEST');
        await rejectsWith(store.range('', { limit: 1.5 }), 'BAD_REQUEST');
        await rejectsWith(store.grantLease(Number.NaN), 'BAD_REQUEST');
        await rejectsWith(store.grantLease(-3), 'BAD_REQUEST');
        await rejectsWith(store.put(42 as unknown as string, 'x'), 'BAD_REQUEST');
        await rejectsWith(store.put('k', undefined as unknown as string), 'BAD_REQUEST');
        await rejectsWith(store.delete(''), 'BAD_REQUEST');
        await rejectsWith(
          store.txn({ compare: [], success: [{ type: 'put', key: 'a/1', value: 'x' }, { type: 'delete', key: 'a/', prefix: true }] }),
          'BAD_REQUEST',
        );
        await rejectsWith(
          store.txn({ compare: [], success: [], failure: [{ type: 'put', key: 'a', value: 'x' }, { type: 'delete', key: 'a' }] }),
          'BAD_REQUEST',
          'puts and deletes',
        );
        await rejectsWith(store.put('big', 'x'.repeat(17 * 1024 * 1024)), 'TOO_LARGE');
        assert.equal(await store.revision(), 0n, 'nothing was written');
      });
    }));

  it('reports a data directory it cannot use as STORE_UNAVAILABLE naming the directory', () =>
    withTempDir(async (dir) => {
      const notADir = join(dir, 'a-file');
      await writeFile(notADir, 'x');
      await rejectsWith(openEmbeddedStore({ dataDir: join(notADir, 'data') }), 'STORE_UNAVAILABLE', notADir);
    }));

  it('arms no timer beyond what setTimeout can wait, whatever the lease TTL', () =>
    withTempDir(async (dataDir) => {
      const delays: number[] = [];
      const clock = new (class extends ManualClock {
        override setTimer(ms: number, fn: () => void): ReturnType<ManualClock['setTimer']> {
          delays.push(ms);
          return super.setTimer(ms, fn);
        }
      })();
      await withStore({ dataDir, clock }, async (store) => {
        const lease = await store.grantLease(100_000_000); // about three years
        clock.advance(10 * 3_600_000);
        assert.ok((await store.leaseStatus(lease.id)).remainingSeconds > 99_000_000);
      });
      assert.ok(delays.length > 0 && delays.every((ms) => ms <= 2 ** 31 - 1), `timer delays: ${delays.join(', ')}`);
    }));
});
