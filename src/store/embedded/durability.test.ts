// Durability of the embedded store: nothing is revealed before its durable write (the journal's
// segments are open with O_DSYNC) completes, concurrent writes share them (group commit), and
// snapshots rotate the journal without losing anything.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { copyFile, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { withStore, withTempDir } from './fixtures.js';
import { listSegments, segmentName } from './journal.js';
import { listSnapshots } from './snapshot.js';

type WriteCallback = (err: NodeJS.ErrnoException | null, written: number, buffer: Buffer) => void;

/**
 * Holds back the completion of every journal write until release() (the journal calls fs.write
 * on a descriptor open with O_DSYNC: its completion is the record's durability).
 */
function holdJournalWrites(): { held: () => number; release: () => void } {
  const original = fs.write;
  const waiting: (() => void)[] = [];
  fs.write = ((fd: number, buf: Buffer, off: number, len: number, pos: number, cb: WriteCallback) => {
    original(fd, buf, off, len, pos, (err, written, buffer) => waiting.push(() => cb(err, written, buffer)));
  }) as unknown as typeof fs.write;
  return {
    held: () => waiting.length,
    release: () => {
      fs.write = original;
      for (const complete of waiting.splice(0)) complete();
    },
  };
}

function settledFlag<T>(promise: Promise<T>): { promise: Promise<T>; done: () => boolean } {
  let done = false;
  const tracked = promise.finally(() => {
    done = true;
  });
  return { promise: tracked, done: () => done };
}

const tick = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = performance.now() + ms;
  while (!done()) {
    if (performance.now() > end) throw new Error(`${what} did not happen within ${ms} ms`);
    await tick(5);
  }
}

describe('embedded store durability', () => {
  it('releases a write, a read that sees it and its watch event only after its durable write completes', () =>
    withTempDir(async (dataDir) => {
      // Every write through the thread pool (fs.write), where the gate can hold it.
      await withStore({ dataDir, syncLoneWrites: false }, async (store) => {
        await store.put('warm-up', 'x');
        const watch = store.watch('k');
        const event = settledFlag(watch[Symbol.asyncIterator]().next());
        const gate = holdJournalWrites();
        try {
          const put = settledFlag(store.put('k', 'v'));
          await tick(30);
          assert.equal(gate.held(), 1, 'the record was written, its durable write not yet reported');
          const segment = (await listSegments(dataDir)).at(-1);
          assert.ok((await readFile(segment?.path ?? '')).includes('"p":"k"'), 'the record is in the file');
          const get = settledFlag(store.get('k'));
          const revision = settledFlag(store.revision());
          await tick(30);
          assert.equal(put.done(), false, 'the put waits for its durable write');
          assert.equal(get.done(), false, 'a read that would reveal the write waits too');
          assert.equal(revision.done(), false, 'so does revision()');
          assert.equal(event.done(), false, 'and the watch event');
          gate.release();
          assert.equal((await put.promise).revision, 2n);
          assert.equal((await get.promise).kv?.value, 'v');
          assert.equal(await revision.promise, 2n);
          const next = await event.promise;
          assert.equal(next.done, false);
          assert.equal((next.value).revision, 2n);
        } finally {
          gate.release();
          watch.close();
        }
      });
    }));

  it('group commit: 200 concurrent puts share a handful of fsyncs; serial puts need one each', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store) => {
        const before = store.stats();
        const results = await Promise.all(Array.from({ length: 200 }, (_, i) => store.put(`c/${i}`, String(i))));
        const after = store.stats();
        assert.equal(new Set(results.map((r) => r.revision)).size, 200);
        assert.equal(after.records - before.records, 200);
        assert.ok(after.fsyncs - before.fsyncs <= 5, `200 concurrent puts took ${after.fsyncs - before.fsyncs} fsyncs`);
        assert.ok(after.largestBatch >= 40, `largest batch was ${after.largestBatch} records`);
        for (let i = 0; i < 20; i++) await store.put(`s/${i}`, 'x');
        assert.equal(store.stats().fsyncs - after.fsyncs, 20, 'an awaited put is one durable write: the counter counts real syncs');
      });
    }));

  it('group commit: writes that arrive during a flush all share the next fsync', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir, syncLoneWrites: false }, async (store) => {
        const before = store.stats().fsyncs;
        const gate = holdJournalWrites();
        let first: Promise<unknown>;
        let rest: Promise<unknown>;
        try {
          first = store.put('first', 'x');
          await tick(20);
          assert.equal(gate.held(), 1);
          rest = Promise.all(Array.from({ length: 50 }, (_, i) => store.put(`during/${i}`, 'x')));
          await tick(20);
          assert.equal(gate.held(), 1, 'nothing else is written while a flush is in progress');
        } finally {
          gate.release();
        }
        await first;
        await rest;
        assert.equal(store.stats().fsyncs - before, 2, '51 puts, 2 fsyncs');
      });
    }));

  it('a lone writer is written synchronously after a few writes without company; company brings back group commit', () =>
    withTempDir(async (dataDir) => {
      // A disk slow enough to pause synchronous writes is another test's subject (below).
      await withStore({ dataDir, slowSyncMs: 10_000 }, async (store) => {
        const syncWritesOf = (): number => store.stats().syncWrites;
        for (let i = 0; i < 40; i++) await store.put(`lone/${i}`, 'x');
        const lone = syncWritesOf();
        // Three writes to notice it is alone, then one write in 17 goes through the pool to look for company.
        assert.ok(lone >= 30 && lone <= 37, `${lone} of 40 lone writes were synchronous`);
        const before = store.stats();
        await Promise.all(Array.from({ length: 200 }, (_, i) => store.put(`crowd/${i}`, 'x')));
        const after = store.stats();
        assert.ok(after.fsyncs - before.fsyncs <= 5, `200 concurrent puts took ${after.fsyncs - before.fsyncs} writes`);
        assert.ok(after.syncWrites - before.syncWrites <= 1, 'a crowd is written through the pool');
        // Every synchronous write was durable like the others: all of it is there after a restart.
        return undefined;
      });
      await withStore({ dataDir }, async (again) => {
        assert.equal((await again.range('lone/')).kvs.length, 40);
        assert.equal((await again.range('crowd/')).kvs.length, 200);
      });
    }));

  it('a slow synchronous write pauses synchronous writes (the event loop is not held by a slow disk)', () =>
    withTempDir(async (dataDir) => {
      // Every write counts as slow here.
      await withStore({ dataDir, slowSyncMs: 0 }, async (store) => {
        for (let i = 0; i < 40; i++) await store.put(`k/${i}`, 'x');
        assert.equal(store.stats().syncWrites, 1, 'one synchronous write, then none for the pause');
      });
    }));

  it('without syncLoneWrites every write goes through the thread pool', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir, syncLoneWrites: false }, async (store) => {
        for (let i = 0; i < 20; i++) await store.put(`k/${i}`, 'x');
        assert.equal(store.stats().syncWrites, 0);
      });
    }));

  it('snapshots rotate the journal and remove what they cover; recovery reads snapshot + later records', () =>
    withTempDir(async (dataDir) => {
      const expected = await withStore({ dataDir, snapshotEveryRecords: 10 }, async (store) => {
        const lease = await store.grantLease(60); // record 1
        for (let i = 0; i < 34; i++) {
          await store.put(`k${i % 12}`, `v${i}`, i % 5 === 0 ? { lease: lease.id } : undefined); // records 2–35
          // A snapshot is written in the background; one still running when the next is due
          // postpones that one. Let each finish, so that they fall at records 10, 20 and 30.
          const record = i + 2;
          if (record % 10 === 0) await until(() => store.stats().snapshots === record / 10, `snapshot ${record / 10}`);
        }
        return { kvs: (await store.range('')).kvs, lease: lease.id, keys: (await store.leaseStatus(lease.id)).keys };
      });
      assert.deepEqual(
        (await listSnapshots(dataDir)).map((s) => s.seq),
        [30],
        'only the newest snapshot is kept',
      );
      assert.deepEqual(
        (await listSegments(dataDir)).map((s) => s.firstSeq),
        [31],
        'segments the snapshot covers are removed',
      );
      await withStore({ dataDir, snapshotEveryRecords: 10 }, async (store) => {
        assert.equal(await store.revision(), 34n);
        assert.deepEqual((await store.range('')).kvs, expected.kvs);
        assert.deepEqual((await store.leaseStatus(expected.lease)).keys, expected.keys);
        await store.put('after', 'x');
      });
      await withStore({ dataDir }, async (store) => assert.equal((await store.get('after')).kv?.modRevision, 35n));
    }));

  it('keeps every write when snapshots are taken under a flood of concurrent writes', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir, snapshotEveryRecords: 50 }, async (store) => {
        await Promise.all(Array.from({ length: 600 }, (_, i) => store.put(`f/${i % 97}`, String(i))));
      });
      await withStore({ dataDir }, async (store) => {
        assert.equal(await store.revision(), 600n);
        const kvs = (await store.range('f/')).kvs;
        assert.equal(kvs.length, 97);
        const versions = kvs.reduce((n, kv) => n + kv.version, 0n);
        assert.equal(versions, 600n, 'every put is counted in some key’s version');
      });
      const snapshots = await listSnapshots(dataDir);
      assert.equal(snapshots.length, 1);
      assert.ok((snapshots[0]?.seq ?? 0) >= 50 && (snapshots[0]?.seq ?? 0) < 600, 'the snapshot was taken mid-flood');
    }));

  it('recovers when a crash left a temp snapshot and a segment the snapshot already covers', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store) => {
        for (let i = 1; i <= 5; i++) await store.put(`k${i}`, 'x');
      });
      const oldSegment = join(dataDir, segmentName(1));
      const saved = join(dataDir, 'saved-segment');
      await copyFile(oldSegment, saved);
      await withStore({ dataDir, snapshotEveryRecords: 3 }, async (store) => {
        await store.put('k6', 'x'); // triggers a snapshot at record 6, removing segment 1
        await store.put('k7', 'x');
      });
      assert.deepEqual(
        (await readdir(dataDir)).filter((n) => n.startsWith('wal-')).sort(),
        [segmentName(7)],
      );
      await copyFile(saved, oldSegment);
      await writeFile(join(dataDir, 'snap-0000000000000009.snap.tmp'), 'half a snapshot');
      await withStore({ dataDir }, async (store) => {
        assert.equal(await store.revision(), 7n);
        assert.equal((await store.range('k')).kvs.length, 7);
      });
      assert.ok(!(await readdir(dataDir)).some((n) => n.endsWith('.tmp')), 'the temp snapshot was removed');
    }));
});
