// What survives a restart of the embedded store: data, revisions, lease ids, leases (with a fresh
// TTL), and the watch history kept since the last snapshot.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import type { WatchEvent } from '../store.js';
import { openEmbeddedStore } from './embedded-store.js';
import { ManualClock, withStore, withTempDir } from './fixtures.js';

describe('embedded store restart', () => {
  it('keeps keys, versions, create and mod revisions, and the revision', () =>
    withTempDir(async (dataDir) => {
      const before = await withStore({ dataDir }, async (store) => {
        await store.put('a', '1');
        await store.put('a', '2');
        await store.put('b', 'x');
        await store.txn({ compare: [], success: [{ type: 'put', key: 'c', value: 'y' }, { type: 'delete', key: 'b' }] });
        return { a: await store.get('a'), c: await store.get('c'), revision: await store.revision() };
      });
      await withStore({ dataDir }, async (store) => {
        assert.equal(await store.revision(), before.revision);
        assert.deepEqual(await store.get('a'), before.a);
        assert.deepEqual(await store.get('c'), before.c);
        assert.equal((await store.get('b')).kv, undefined);
      });
    }));

  it('never hands out a revision twice across restarts', () =>
    withTempDir(async (dataDir) => {
      const seen = new Set<bigint>();
      let last = 0n;
      for (let round = 0; round < 5; round++) {
        await withStore({ dataDir, snapshotEveryRecords: 7 }, async (store) => {
          const roundStart = await store.revision();
          assert.equal(roundStart, last, `round ${round} starts where the last one ended`);
          const lease = await store.grantLease(60);
          const revisions = [
            (await store.put(`k${round}`, 'x', { lease: lease.id })).revision,
            (await store.put('shared', String(round))).revision,
            (await store.txn({ compare: [], success: [{ type: 'put', key: `t${round}`, value: 'y' }] })).revision,
            ...(await Promise.all([1, 2, 3].map((i) => store.put(`c${round}/${i}`, 'z')))).map((r) => r.revision),
          ];
          await store.revokeLease(lease.id);
          revisions.push(await store.revision());
          for (const r of revisions) {
            assert.ok(!seen.has(r), `revision ${r} was handed out twice`);
            assert.ok(r > roundStart, `revision ${r} is not above ${roundStart}, where the round started`);
            seen.add(r);
          }
          last = await store.revision();
        });
      }
      assert.equal(seen.size, 5 * 7);
    }));

  it('never reuses a lease id, even when every lease was revoked and snapshotted away', () =>
    withTempDir(async (dataDir) => {
      const granted: bigint[] = [];
      for (let round = 0; round < 3; round++) {
        await withStore({ dataDir, snapshotEveryRecords: 2 }, async (store) => {
          for (let i = 0; i < 3; i++) {
            const { id } = await store.grantLease(30);
            granted.push(id);
            await store.revokeLease(id);
          }
        });
      }
      assert.equal(new Set(granted).size, granted.length);
      assert.deepEqual(
        granted,
        [...granted].sort((a, b) => (a < b ? -1 : 1)),
      );
    }));

  it('keeps leases and their keys; a restart gives each lease a fresh full TTL (driven clock)', () =>
    withTempDir(async (dataDir) => {
      const clock = new ManualClock();
      const { id } = await withStore({ dataDir, clock }, async (store) => {
        const lease = await store.grantLease(2);
        await store.put('held', 'x', { lease: lease.id });
        clock.advance(1_500);
        return lease;
      });
      await withStore({ dataDir, clock }, async (store) => {
        const status = await store.leaseStatus(id);
        assert.deepEqual(status.keys, ['held']);
        assert.equal(status.remainingSeconds, 2, 'the TTL restarted from the full 2 s');
        clock.advance(1_000); // 2.5 s after the grant, 1 s after the restart
        assert.notEqual((await store.get('held')).kv, undefined, 'without a fresh TTL the lease would have expired');
        clock.advance(1_001); // 2.001 s after the restart
        assert.equal((await store.get('held')).kv, undefined);
        assert.equal((await store.leaseStatus(id)).remainingSeconds, -1);
      });
      // Control: the same clock steps without a restart expire the lease at 2 s.
      await withStore({ dataDir, clock }, async (store) => {
        const lease = await store.grantLease(2);
        await store.put('control', 'x', { lease: lease.id });
        clock.advance(1_500);
        assert.notEqual((await store.get('control')).kv, undefined);
        clock.advance(501);
        assert.equal((await store.get('control')).kv, undefined);
      });
    }));

  it('a lease restarted part-way through its TTL outlives its original deadline (real clock)', () =>
    withTempDir(async (dataDir) => {
      const start = performance.now();
      const { id } = await withStore({ dataDir }, async (store) => {
        const lease = await store.grantLease(2);
        await store.put('held', 'x', { lease: lease.id });
        await sleep(1_200 - (performance.now() - start));
        return lease;
      });
      const reopened = performance.now();
      await withStore({ dataDir }, async (store) => {
        await sleep(2_500 - (performance.now() - start)); // past the original 2 s deadline
        assert.notEqual((await store.get('held')).kv, undefined, 'alive 2.5 s after the grant, ~1.3 s after the restart');
        while ((await store.get('held')).kv !== undefined && performance.now() - reopened < 4_000) await sleep(20);
        const goneAfter = performance.now() - reopened;
        assert.ok(goneAfter >= 1_900 && goneAfter <= 2_400, `expired ${Math.round(goneAfter)} ms after the restart, expected ~2000`);
        assert.equal((await store.leaseStatus(id)).remainingSeconds, -1);
      });
    }));

  it('rebuilds the watch history from the journal, and refuses revisions a snapshot dropped', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store) => {
        for (let i = 1; i <= 5; i++) await store.put(`w/${i}`, String(i));
      });
      await withStore({ dataDir, snapshotEveryRecords: 8 }, async (store) => {
        const events = await take(store.watch('w/', { fromRevision: 1n }), 5);
        assert.deepEqual(
          events.map((e) => [e.kv.key, e.revision]),
          [1, 2, 3, 4, 5].map((i) => [`w/${i}`, BigInt(i)]),
        );
        for (let i = 6; i <= 10; i++) await store.put(`w/${i}`, String(i)); // record 8 triggers a snapshot
      });
      await withStore({ dataDir }, async (store) => {
        await assert.rejects(take(store.watch('w/', { fromRevision: 1n }), 1), (err) => isCorralError(err, 'COMPACTED'));
        const events = await take(store.watch('w/', { fromRevision: 9n }), 2);
        assert.deepEqual(
          events.map((e) => e.revision),
          [9n, 10n],
        );
      });
    }));

  it('a store can be reopened in the same process after close, and refuses calls once closed', () =>
    withTempDir(async (dataDir) => {
      const store = await openEmbeddedStore({ dataDir });
      await store.put('a', '1');
      await store.close();
      await store.close(); // idempotent
      await assert.rejects(store.get('a'), (err) => isCorralError(err, 'STORE_UNAVAILABLE'));
      await withStore({ dataDir }, async (again) => assert.equal((await again.get('a')).kv?.value, '1'));
    }));
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

async function take(watch: AsyncIterable<WatchEvent> & { close(): void }, n: number): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  const timer = setTimeout(() => watch.close(), 5_000);
  try {
    for await (const e of watch) {
      out.push(e);
      if (out.length === n) break;
    }
  } finally {
    clearTimeout(timer);
    watch.close();
  }
  return out;
}
