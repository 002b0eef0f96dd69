// Watches on the embedded store beyond the contract: bounded history, COMPACTED, slow consumers,
// and what happens to a watch when the store closes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import type { WatchEvent } from '../store.js';
import { openEmbeddedStore } from './embedded-store.js';
import { withStore, withTempDir } from './fixtures.js';

/** The next event of a watch; fails if the watch ended instead. */
async function nextEvent(it: AsyncIterator<WatchEvent>): Promise<WatchEvent> {
  const next = await it.next();
  assert.equal(next.done, false, 'the watch ended');
  return next.value;
}

describe('embedded store watch', () => {
  it('throws COMPACTED for a revision older than the history kept, and serves the oldest kept one', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir, historyLimit: 10 }, async (store) => {
        for (let i = 1; i <= 30; i++) await store.put('k', String(i));
        const { oldestRevision, historyEvents } = store.stats();
        assert.equal(historyEvents, 10);
        assert.equal(oldestRevision, 21n);
        const old = store.watch('k', { fromRevision: 20n });
        await assert.rejects(old[Symbol.asyncIterator]().next(), (err) => isCorralError(err, 'COMPACTED'));
        const kept = store.watch('k', { fromRevision: 21n });
        try {
          assert.equal((await nextEvent(kept[Symbol.asyncIterator]())).revision, 21n);
        } finally {
          kept.close();
        }
      });
    }));

  it('a consumer that falls behind the history ends with COMPACTED and can resume from a fresh read', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir, historyLimit: 50 }, async (store) => {
        const watch = store.watch('s/');
        const it = watch[Symbol.asyncIterator]();
        await store.put('s/0', 'x');
        assert.equal((await nextEvent(it)).kv.key, 's/0');
        for (let i = 1; i <= 200; i++) await store.put(`s/${i % 10}`, String(i)); // the consumer reads nothing
        assert.ok(store.stats().historyEvents <= 50, 'memory stays bounded by the history limit');
        await assert.rejects(it.next(), (err: unknown) => {
          assert.ok(isCorralError(err, 'COMPACTED'), String(err));
          assert.match(err.message, /fell behind/);
          return true;
        });
        assert.equal((await it.next()).done, true, 'the watch has ended');
        // The documented way to resume: read, then watch from the read's revision + 1.
        const read = await store.range('s/');
        const resumed = store.watch('s/', { fromRevision: read.revision + 1n });
        try {
          const put = await store.put('s/new', 'x');
          assert.equal((await nextEvent(resumed[Symbol.asyncIterator]())).revision, put.revision);
        } finally {
          resumed.close();
        }
      });
    }));

  it('drains released events, then throws STORE_UNAVAILABLE when the store closes', () =>
    withTempDir(async (dataDir) => {
      const store = await openEmbeddedStore({ dataDir });
      const watch = store.watch('k', { fromRevision: 1n });
      await store.put('k', '1');
      await store.put('k', '2');
      await store.close();
      const seen: WatchEvent[] = [];
      await assert.rejects(
        (async () => {
          for await (const e of watch) seen.push(e);
        })(),
        (err) => isCorralError(err, 'STORE_UNAVAILABLE'),
      );
      assert.deepEqual(
        seen.map((e) => e.kv.value),
        ['1', '2'],
      );
      await assert.rejects(store.watch('k')[Symbol.asyncIterator]().next(), (err) => isCorralError(err, 'STORE_UNAVAILABLE'));
    }));

  it('many watches on different prefixes each see only their own keys', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store) => {
        const watches = Array.from({ length: 20 }, (_, i) => store.watch(`p${i}/`));
        try {
          await Promise.all(Array.from({ length: 200 }, (_, i) => store.put(`p${i % 20}/${i}`, String(i))));
          for (const [i, watch] of watches.entries()) {
            const it = watch[Symbol.asyncIterator]();
            const keys: string[] = [];
            for (let n = 0; n < 10; n++) keys.push((await nextEvent(it)).kv.key);
            assert.deepEqual(
              keys,
              Array.from({ length: 10 }, (_, n) => `p${i}/${i + 20 * n}`),
            );
          }
          assert.equal(store.stats().watchers, 20);
        } finally {
          for (const w of watches) w.close();
        }
        assert.equal(store.stats().watchers, 0, 'closed watches are forgotten');
      });
    }));
});
