// The Store contract suite: the behaviour every backend (embedded, etcd, remote over HTTP/2) must
// share, written once against the Store interface. A backend's test file calls
//
//   storeContract('embedded', async () => ({ store, traits, close }));
//
// open() is called before every test and close() after it (a test may already have closed the
// store itself; Store.close() must be idempotent). The suite assumes nobody else writes to
// the store while a test runs (it asserts exact revision steps); each test also uses its own random
// key prefix, so leftovers of earlier tests are never seen. What backends may differ on is stated
// in StoreTraits, never special-cased here.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { isCorralError, type ErrorCode } from '../api/errors.js';
import {
  NO_LEASE,
  type Compare,
  type CompareOp,
  type KeyValue,
  type Revision,
  type Store,
  type StoreTraits,
  type Watch,
  type WatchEvent,
} from './store.js';

export interface StoreUnderTest {
  store: Store;
  traits: StoreTraits;
  close(): Promise<void>;
}

/** How long a test waits for watch events before it fails. */
const WATCH_TIMEOUT_MS = 5_000;
const POLL_MS = 20;

export function storeContract(name: string, open: () => Promise<StoreUnderTest>): void {
  describe(`Store contract: ${name}`, () => {
    let sut!: StoreUnderTest;
    let store!: Store;
    /** This test's own key prefix. */
    let p = '';

    beforeEach(async () => {
      sut = await open();
      store = sut.store;
      p = `contract/${randomUUID()}/`;
    });

    afterEach(async () => {
      await sut.close();
    });

    describe('keys, revisions and versions', () => {
      it('a put creates the key at version 1 and advances the revision by exactly one', async () => {
        const before = await store.revision();
        const put = await store.put(`${p}a`, 'one');
        assert.equal(put.revision, before + 1n);
        assert.equal(put.prev, undefined);
        const got = await store.get(`${p}a`);
        assert.equal(got.revision, put.revision);
        assert.deepEqual(got.kv, kv(`${p}a`, 'one', { create: put.revision, mod: put.revision, version: 1n }));
        assert.equal(await store.revision(), put.revision);
      });

      it('overwriting a key bumps version and modRevision, keeps createRevision and returns the previous value', async () => {
        const first = await store.put(`${p}a`, 'one');
        await store.put(`${p}other`, 'x');
        const second = await store.put(`${p}a`, 'two');
        assert.equal(second.revision, first.revision + 2n);
        assert.deepEqual(second.prev, kv(`${p}a`, 'one', { create: first.revision, mod: first.revision, version: 1n }));
        const third = await store.put(`${p}a`, 'two');
        assert.equal(third.revision, second.revision + 1n, 'a put of an unchanged value is still a write');
        const got = await store.get(`${p}a`);
        assert.deepEqual(got.kv, kv(`${p}a`, 'two', { create: first.revision, mod: third.revision, version: 3n }));
      });

      it('a get of a missing key returns no kv and the current revision', async () => {
        const put = await store.put(`${p}present`, 'x');
        const got = await store.get(`${p}absent`);
        assert.equal(got.kv, undefined);
        assert.equal(got.revision, put.revision);
      });

      it('a deleted and recreated key starts again at version 1 with a new createRevision', async () => {
        await store.put(`${p}a`, 'one');
        await store.put(`${p}a`, 'two');
        const del = await store.delete(`${p}a`);
        assert.equal(del.deleted, 1);
        assert.equal((await store.get(`${p}a`)).kv, undefined);
        const again = await store.put(`${p}a`, 'three');
        assert.equal(again.revision, del.revision + 1n);
        assert.equal(again.prev, undefined);
        assert.deepEqual((await store.get(`${p}a`)).kv, kv(`${p}a`, 'three', { create: again.revision, mod: again.revision, version: 1n }));
      });

      it('deleting a key advances the revision by one; deleting a missing key does not advance it', async () => {
        const put = await store.put(`${p}a`, 'x');
        const del = await store.delete(`${p}a`);
        assert.deepEqual(del, { revision: put.revision + 1n, deleted: 1 });
        const nothing = await store.delete(`${p}a`);
        assert.deepEqual(nothing, { revision: del.revision, deleted: 0 });
        assert.equal(await store.revision(), del.revision);
      });

      it('an empty key is refused with BAD_REQUEST', async () => {
        await rejectsWith(store.put('', 'x'), 'BAD_REQUEST');
        await rejectsWith(store.get(''), 'BAD_REQUEST');
      });
    });

    describe('range', () => {
      it('returns the keys under a prefix in UTF-8 byte order, and nothing outside it', async () => {
        // U+FF5E sorts before U+1F600 in UTF-8 bytes, but after it in UTF-16 code units.
        const names = ['b', 'a/2', 'a', '\u{1F600}', '\uFF5E', 'a/10', 'é', 'B', 'a/1'];
        for (const n of names) await store.put(`${p}in/${n}`, n);
        await store.put(`${p}im`, 'before the prefix');
        await store.put(`${p}in0`, 'after the prefix');
        const expected = names.map((n) => `${p}in/${n}`).sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
        const result = await store.range(`${p}in/`);
        assert.deepEqual(
          result.kvs.map((k) => k.key),
          expected,
        );
        assert.equal(result.more, false);
        assert.equal(result.revision, await store.revision());
        for (const k of result.kvs) assert.equal(k.value, k.key.slice(`${p}in/`.length));
      });

      it('limit cuts the result short and says so with more', async () => {
        for (const n of ['1', '2', '3', '4', '5']) await store.put(`${p}k${n}`, n);
        const two = await store.range(p, { limit: 2 });
        assert.deepEqual(
          two.kvs.map((k) => k.value),
          ['1', '2'],
        );
        assert.equal(two.more, true);
        const five = await store.range(p, { limit: 5 });
        assert.equal(five.kvs.length, 5);
        assert.equal(five.more, false, 'a limit equal to the count leaves nothing more');
        const all = await store.range(p, { limit: 0 });
        assert.equal(all.kvs.length, 5, 'limit 0 means no limit');
        assert.equal(all.more, false);
      });

      it('an empty prefix range returns no keys and the current revision', async () => {
        const put = await store.put(`${p}x`, 'x');
        const result = await store.range(`${p}nothing/`);
        assert.deepEqual(result, { revision: put.revision, kvs: [], more: false });
      });
    });

    describe('delete by prefix', () => {
      it('deletes every key under the prefix in one revision and leaves other keys alone', async () => {
        for (const k of ['d/1', 'd/2', 'd/3/x']) await store.put(`${p}${k}`, k);
        await store.put(`${p}d`, 'the prefix itself is a key too');
        await store.put(`${p}e/1`, 'sibling');
        const before = await store.revision();
        const del = await store.delete(`${p}d/`, { prefix: true });
        assert.deepEqual(del, { revision: before + 1n, deleted: 3 });
        assert.deepEqual((await store.range(`${p}d/`)).kvs, []);
        assert.equal((await store.get(`${p}d`)).kv?.value, 'the prefix itself is a key too');
        assert.equal((await store.get(`${p}e/1`)).kv?.value, 'sibling');
        const events = await readEvents(store.watch(`${p}d/`, { fromRevision: del.revision }), 3);
        assert.deepEqual(
          events.map((e) => [e.type, e.kv.key, e.revision]),
          [`${p}d/1`, `${p}d/2`, `${p}d/3/x`].map((k) => ['delete', k, del.revision]),
        );
      });

      it('a prefix delete that matches nothing does not advance the revision', async () => {
        const put = await store.put(`${p}a`, 'x');
        assert.deepEqual(await store.delete(`${p}none/`, { prefix: true }), { revision: put.revision, deleted: 0 });
        assert.equal(await store.revision(), put.revision);
      });
    });

    describe('txn', () => {
      it('compares every target with every operator, on success and on failure', async () => {
        const lease = await store.grantLease(Math.max(30, sut.traits.minLeaseTtlSeconds));
        const created = await store.put(`${p}k`, 'm', { lease: lease.id });
        await store.put(`${p}other`, 'x');
        const updated = await store.put(`${p}k`, 'm', { lease: lease.id });
        // The key: value 'm', version 2, createRevision c, modRevision c + 2, lease L.
        const c = created.revision;
        const table: [Compare, boolean][] = [];
        const numeric = {
          version: 2n,
          createRevision: c,
          modRevision: updated.revision,
          lease: lease.id,
        } as const;
        for (const [target, actual] of Object.entries(numeric) as [keyof typeof numeric, bigint][]) {
          for (const [op, value, holds] of orderCases(actual)) table.push([{ key: `${p}k`, target, op, value }, holds]);
        }
        const valueCases: [CompareOp, string, boolean][] = [
          ['=', 'm', true],
          ['=', 'n', false],
          ['!=', 'n', true],
          ['!=', 'm', false],
          ['<', 'n', true],
          ['<', 'l', false],
          ['>', 'l', true],
          ['>', 'm', false],
        ];
        for (const [op, value, holds] of valueCases) table.push([{ key: `${p}k`, target: 'value', op, value }, holds]);
        for (const [compare, holds] of table) {
          const before = await store.revision();
          const result = await store.txn({
            compare: [compare],
            success: [{ type: 'get', key: `${p}k` }],
            failure: [{ type: 'range', prefix: `${p}nothing/` }],
          });
          const what = `${compare.target} ${compare.op} ${String(compare.value)}`;
          assert.equal(result.succeeded, holds, what);
          assert.equal(result.revision, before, `${what}: a txn that only reads does not advance the revision`);
          assert.equal(result.results[0]?.type, holds ? 'get' : 'range', `${what}: the matching branch ran`);
        }
      });

      it('on a missing key the numeric targets are 0 and every value compare is false', async () => {
        const missing = `${p}missing`;
        const cases: [Compare, boolean][] = [
          [{ key: missing, target: 'version', op: '=', value: 0n }, true],
          [{ key: missing, target: 'createRevision', op: '=', value: 0n }, true],
          [{ key: missing, target: 'modRevision', op: '<', value: 1n }, true],
          [{ key: missing, target: 'lease', op: '=', value: NO_LEASE }, true],
          [{ key: missing, target: 'version', op: '>', value: 0n }, false],
          [{ key: missing, target: 'value', op: '=', value: '' }, false],
          [{ key: missing, target: 'value', op: '!=', value: 'anything' }, false],
          [{ key: missing, target: 'value', op: '<', value: '\u{10FFFF}' }, false],
          [{ key: missing, target: 'value', op: '>', value: '' }, false],
        ];
        for (const [compare, holds] of cases) {
          const result = await store.txn({ compare: [compare], success: [], failure: [] });
          assert.equal(result.succeeded, holds, `${compare.target} ${compare.op} ${String(compare.value)}`);
        }
      });

      it('requires every compare to hold, and an empty compare list always succeeds', async () => {
        await store.put(`${p}a`, '1');
        const both = (second: string): Promise<boolean> =>
          store
            .txn({
              compare: [
                { key: `${p}a`, target: 'value', op: '=', value: '1' },
                { key: `${p}a`, target: 'value', op: '=', value: second },
              ],
              success: [],
            })
            .then((r) => r.succeeded);
        assert.equal(await both('1'), true);
        assert.equal(await both('2'), false);
        assert.equal((await store.txn({ compare: [], success: [] })).succeeded, true);
      });

      it('runs the success branch with one revision for all its writes and returns each result', async () => {
        await store.put(`${p}old`, 'old');
        await store.put(`${p}gone`, 'bye');
        await store.put(`${p}r/1`, 'r1');
        await store.put(`${p}r/2`, 'r2');
        const before = await store.revision();
        const result = await store.txn({
          compare: [{ key: `${p}old`, target: 'version', op: '=', value: 1n }],
          success: [
            { type: 'put', key: `${p}old`, value: 'new' },
            { type: 'put', key: `${p}fresh`, value: 'f' },
            { type: 'delete', key: `${p}gone` },
            { type: 'get', key: `${p}old` },
            { type: 'range', prefix: `${p}r/`, limit: 1 },
          ],
          failure: [{ type: 'put', key: `${p}failure-ran`, value: 'x' }],
        });
        const rev = before + 1n;
        assert.equal(result.succeeded, true);
        assert.equal(result.revision, rev);
        assert.equal(result.results.length, 5);
        const [putOld, putFresh, del, get, range] = result.results;
        assert.deepEqual(putOld, { type: 'put', prev: kv(`${p}old`, 'old', { create: before - 3n, mod: before - 3n, version: 1n }) });
        assert.deepEqual(putFresh, { type: 'put', prev: undefined });
        assert.deepEqual(del, { type: 'delete', deleted: 1 });
        assert.deepEqual(get, { type: 'get', kv: kv(`${p}old`, 'new', { create: before - 3n, mod: rev, version: 2n }) }, 'reads see earlier writes of the txn');
        assert.deepEqual(range, { type: 'range', kvs: [kv(`${p}r/1`, 'r1', { create: before - 1n, mod: before - 1n, version: 1n })], more: true });
        assert.equal((await store.get(`${p}fresh`)).kv?.modRevision, rev);
        assert.equal((await store.get(`${p}gone`)).kv, undefined);
        assert.equal((await store.get(`${p}failure-ran`)).kv, undefined);
        assert.equal(await store.revision(), rev, 'the whole txn advanced the revision once');
      });

      it('runs the failure branch when a compare fails, and not the success branch', async () => {
        await store.put(`${p}a`, '1');
        const before = await store.revision();
        const result = await store.txn({
          compare: [{ key: `${p}a`, target: 'value', op: '=', value: 'not 1' }],
          success: [{ type: 'put', key: `${p}success-ran`, value: 'x' }],
          failure: [
            { type: 'put', key: `${p}failure-ran`, value: 'y' },
            { type: 'delete', key: `${p}a` },
          ],
        });
        assert.equal(result.succeeded, false);
        assert.equal(result.revision, before + 1n);
        assert.deepEqual(result.results, [
          { type: 'put', prev: undefined },
          { type: 'delete', deleted: 1 },
        ]);
        assert.equal((await store.get(`${p}success-ran`)).kv, undefined);
        assert.equal((await store.get(`${p}failure-ran`)).kv?.value, 'y');
        assert.equal((await store.get(`${p}a`)).kv, undefined);
      });

      it('a txn whose writes change nothing does not advance the revision', async () => {
        const put = await store.put(`${p}a`, 'x');
        const result = await store.txn({
          compare: [],
          success: [
            { type: 'delete', key: `${p}missing` },
            { type: 'delete', key: `${p}none/`, prefix: true },
          ],
        });
        assert.deepEqual(result, {
          succeeded: true,
          revision: put.revision,
          results: [
            { type: 'delete', deleted: 0 },
            { type: 'delete', deleted: 0 },
          ],
        });
        assert.equal(await store.revision(), put.revision);
      });

      it('refuses a txn that puts one key twice, with BAD_REQUEST, and writes nothing', async () => {
        const before = await store.revision();
        await rejectsWith(
          store.txn({
            compare: [],
            success: [
              { type: 'put', key: `${p}dup`, value: '1' },
              { type: 'put', key: `${p}dup`, value: '2' },
            ],
          }),
          'BAD_REQUEST',
        );
        assert.equal((await store.get(`${p}dup`)).kv, undefined);
        assert.equal(await store.revision(), before);
      });

      it('refuses a txn that puts with an unknown lease, with LEASE_NOT_FOUND, and writes nothing', async () => {
        const before = await store.revision();
        await rejectsWith(
          store.txn({
            compare: [],
            success: [
              { type: 'put', key: `${p}plain`, value: '1' },
              { type: 'put', key: `${p}leased`, value: '2', lease: 987_654_321_123n },
            ],
          }),
          'LEASE_NOT_FOUND',
        );
        assert.equal((await store.get(`${p}plain`)).kv, undefined);
        assert.equal(await store.revision(), before);
      });

      it('lets exactly one of several concurrent compare-and-swaps on one version win', async () => {
        const created = await store.put(`${p}cas`, 'start');
        const attempts = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            store.txn({
              compare: [{ key: `${p}cas`, target: 'modRevision', op: '=', value: created.revision }],
              success: [{ type: 'put', key: `${p}cas`, value: `winner ${i}` }],
            }),
          ),
        );
        const winners = attempts.flatMap((a, i) => (a.succeeded ? [i] : []));
        assert.equal(winners.length, 1);
        assert.equal((await store.get(`${p}cas`)).kv?.value, `winner ${winners[0]}`);
      });
    });

    describe('leases', () => {
      it('grants distinct non-zero ids with at least the requested TTL, whole seconds, no less than the minimum', async () => {
        const min = sut.traits.minLeaseTtlSeconds;
        const a = await store.grantLease(min + 10);
        const b = await store.grantLease(min + 10);
        const small = await store.grantLease(0.5);
        assert.notEqual(a.id, NO_LEASE);
        assert.notEqual(a.id, b.id);
        assert.notEqual(small.id, a.id);
        assert.equal(a.ttlSeconds, min + 10);
        assert.ok(small.ttlSeconds >= Math.max(1, min), `a 0.5 s request was granted ${small.ttlSeconds} s`);
        assert.ok(Number.isInteger(small.ttlSeconds));
        await rejectsWith(store.grantLease(0), 'BAD_REQUEST');
      });

      it('reports a lease’s TTL, remaining time and attached keys', async () => {
        const ttl = sut.traits.minLeaseTtlSeconds + 20;
        const lease = await store.grantLease(ttl);
        await store.put(`${p}b`, 'x', { lease: lease.id });
        await store.put(`${p}a`, 'x', { lease: lease.id });
        await store.put(`${p}c`, 'x');
        const put = await store.put(`${p}d`, 'x', { lease: lease.id });
        assert.equal((await store.get(`${p}d`)).kv?.lease, lease.id);
        await store.put(`${p}d`, 'detached');
        const status = await store.leaseStatus(lease.id);
        assert.equal(status.id, lease.id);
        assert.equal(status.grantedTtlSeconds, ttl);
        assert.ok(status.remainingSeconds > ttl - 5 && status.remainingSeconds <= ttl, `remaining ${status.remainingSeconds}`);
        assert.deepEqual(status.keys, [`${p}a`, `${p}b`], 'a put without the lease detaches the key');
        assert.ok(put.revision > 0n);
      });

      it('keepAlive renews a lease to its full TTL', async () => {
        const lease = await store.grantLease(sut.traits.minLeaseTtlSeconds + 20);
        const renewed = await store.keepAlive(lease.id);
        assert.equal(renewed.ttlSeconds, lease.ttlSeconds);
        const status = await store.leaseStatus(lease.id);
        assert.ok(status.remainingSeconds >= lease.ttlSeconds - 2, `remaining ${status.remainingSeconds}`);
      });

      it('revoking a lease deletes its keys in one revision, and the lease is gone', async () => {
        const lease = await store.grantLease(sut.traits.minLeaseTtlSeconds + 20);
        await store.put(`${p}l/1`, 'x', { lease: lease.id });
        await store.put(`${p}l/2`, 'x', { lease: lease.id });
        await store.put(`${p}l/3`, 'not leased');
        const before = await store.revision();
        await store.revokeLease(lease.id);
        assert.equal(await store.revision(), before + 1n);
        assert.deepEqual(
          (await store.range(`${p}l/`)).kvs.map((k) => k.key),
          [`${p}l/3`],
        );
        const events = await readEvents(store.watch(`${p}l/`, { fromRevision: before + 1n }), 2);
        assert.deepEqual(
          events.map((e) => [e.type, e.kv.key, e.revision]),
          [
            ['delete', `${p}l/1`, before + 1n],
            ['delete', `${p}l/2`, before + 1n],
          ],
        );
        assert.equal((await store.leaseStatus(lease.id)).remainingSeconds, -1);
        await rejectsWith(store.keepAlive(lease.id), 'LEASE_NOT_FOUND');
        await rejectsWith(store.put(`${p}l/4`, 'x', { lease: lease.id }), 'LEASE_NOT_FOUND');
      });

      it('revoking an unknown lease is not an error', async () => {
        await store.revokeLease(987_654_321_987n);
        assert.deepEqual(await store.leaseStatus(987_654_321_987n), {
          id: 987_654_321_987n,
          grantedTtlSeconds: 0,
          remainingSeconds: -1,
          keys: [],
        });
      });

      it('a put attached to an unknown lease fails with LEASE_NOT_FOUND and writes nothing', async () => {
        const before = await store.revision();
        await rejectsWith(store.put(`${p}a`, 'x', { lease: 987_654_321_555n }), 'LEASE_NOT_FOUND');
        await rejectsWith(store.keepAlive(987_654_321_555n), 'LEASE_NOT_FOUND');
        assert.equal((await store.get(`${p}a`)).kv, undefined);
        assert.equal(await store.revision(), before);
      });

      it('an expired lease’s keys vanish within its TTL plus the backend’s slack, not before', async () => {
        const start = performance.now();
        const lease = await store.grantLease(sut.traits.minLeaseTtlSeconds);
        const ttlMs = lease.ttlSeconds * 1000;
        await store.put(`${p}ephemeral`, 'x', { lease: lease.id });
        await store.put(`${p}durable`, 'x');
        await sleep(ttlMs / 2 - (performance.now() - start));
        assert.notEqual((await store.get(`${p}ephemeral`)).kv, undefined, 'still there halfway through the TTL');
        const limit = ttlMs + sut.traits.leaseExpirySlackMs;
        const goneAt = await pollUntil(async () => (await store.get(`${p}ephemeral`)).kv === undefined, start, limit + 2_000);
        assert.ok(goneAt !== undefined, 'the key never vanished');
        assert.ok(goneAt <= limit + POLL_MS, `the key vanished ${Math.round(goneAt)} ms after the grant; allowed ${limit} ms`);
        assert.ok(goneAt >= ttlMs - 100, `the key vanished early, ${Math.round(goneAt)} ms after the grant`);
        assert.equal((await store.leaseStatus(lease.id)).remainingSeconds, -1);
        assert.notEqual((await store.get(`${p}durable`)).kv, undefined);
      });

      it('keepAlive keeps a lease and its keys beyond the TTL', async () => {
        const lease = await store.grantLease(sut.traits.minLeaseTtlSeconds);
        const ttlMs = lease.ttlSeconds * 1000;
        await store.put(`${p}held`, 'x', { lease: lease.id });
        const start = performance.now();
        while (performance.now() - start < ttlMs * 1.5) {
          await store.keepAlive(lease.id);
          await sleep(ttlMs / 4);
        }
        assert.notEqual((await store.get(`${p}held`)).kv, undefined, 'the key outlived its TTL thanks to keepAlive');
        assert.ok((await store.leaseStatus(lease.id)).remainingSeconds > 0);
      });
    });

    describe('watch', () => {
      it('replays events from a past revision in order, then continues live', async () => {
        const a = await store.put(`${p}a`, '1');
        const b = await store.put(`${p}b`, '2');
        const d = await store.delete(`${p}a`);
        const watch = store.watch(p, { fromRevision: a.revision });
        const reader = new WatchReader(watch);
        try {
          const past = await reader.take(3);
          assert.deepEqual(past, [
            { type: 'put', revision: a.revision, kv: kv(`${p}a`, '1', { create: a.revision, mod: a.revision, version: 1n }) },
            { type: 'put', revision: b.revision, kv: kv(`${p}b`, '2', { create: b.revision, mod: b.revision, version: 1n }) },
            { type: 'delete', revision: d.revision, kv: { ...deletedKv(`${p}a`, d.revision) } },
          ]);
          const live = await store.put(`${p}b`, '3');
          const [event] = await reader.take(1);
          assert.equal(event?.type, 'put');
          assert.equal(event?.revision, live.revision);
          assert.deepEqual(event?.kv, kv(`${p}b`, '3', { create: b.revision, mod: live.revision, version: 2n }));
        } finally {
          watch.close();
        }
      });

      it('by default starts after the current revision', async () => {
        await store.put(`${p}old`, 'before the watch');
        const watch = store.watch(p);
        try {
          const reader = new WatchReader(watch);
          const put = await store.put(`${p}new`, 'after');
          const [event] = await reader.take(1);
          assert.equal(event?.kv.key, `${p}new`);
          assert.equal(event?.revision, put.revision);
        } finally {
          watch.close();
        }
      });

      it('delivers only keys under its prefix', async () => {
        const watch = store.watch(`${p}w/`);
        try {
          const reader = new WatchReader(watch);
          await store.put(`${p}x`, 'outside');
          await store.put(`${p}w/1`, 'inside');
          await store.put(`${p}wx`, 'outside, shares the first letter');
          await store.put(`${p}w`, 'outside, the prefix without its slash');
          await store.delete(`${p}w/1`);
          await store.put(`${p}w/2`, 'inside');
          const events = await reader.take(3);
          assert.deepEqual(
            events.map((e) => [e.type, e.kv.key]),
            [
              ['put', `${p}w/1`],
              ['delete', `${p}w/1`],
              ['put', `${p}w/2`],
            ],
          );
        } finally {
          watch.close();
        }
      });

      it('reports a delete with an empty value and the deleting revision', async () => {
        await store.put(`${p}a`, 'value');
        const watch = store.watch(p);
        try {
          const reader = new WatchReader(watch);
          const del = await store.delete(`${p}a`);
          const [event] = await reader.take(1);
          assert.equal(event?.type, 'delete');
          assert.equal(event?.revision, del.revision);
          assert.equal(event?.kv.key, `${p}a`);
          assert.equal(event?.kv.value, '');
          assert.equal(event?.kv.modRevision, del.revision);
        } finally {
          watch.close();
        }
      });

      it('gives all the writes of one txn the same revision', async () => {
        const watch = store.watch(p);
        try {
          const reader = new WatchReader(watch);
          await store.put(`${p}c`, 'to delete');
          const txn = await store.txn({
            compare: [],
            success: [
              { type: 'put', key: `${p}a`, value: '1' },
              { type: 'put', key: `${p}b`, value: '2' },
              { type: 'delete', key: `${p}c` },
            ],
          });
          const events = await reader.take(4);
          assert.deepEqual(
            events
              .slice(1)
              .map((e) => `${e.type} ${e.kv.key} ${e.revision}`)
              .sort(),
            [`delete ${p}c ${txn.revision}`, `put ${p}a ${txn.revision}`, `put ${p}b ${txn.revision}`],
          );
        } finally {
          watch.close();
        }
      });

      it('never skips or repeats an event under a burst of concurrent writes', async () => {
        const watch = store.watch(p);
        try {
          const reader = new WatchReader(watch);
          const puts = await Promise.all(Array.from({ length: 50 }, (_, i) => store.put(`${p}k${i % 7}`, String(i))));
          const events = await reader.take(50);
          const revisions = events.map((e) => e.revision);
          assert.deepEqual(
            revisions,
            puts.map((r) => r.revision).sort((x, y) => (x < y ? -1 : 1)),
          );
          for (let i = 1; i < revisions.length; i++) assert.ok((revisions[i] as bigint) > (revisions[i - 1] as bigint));
        } finally {
          watch.close();
        }
      });

      it('a watch from a future revision waits for it', async () => {
        const now = await store.put(`${p}a`, '0');
        const watch = store.watch(p, { fromRevision: now.revision + 3n });
        try {
          const reader = new WatchReader(watch);
          await store.put(`${p}a`, '1');
          await store.put(`${p}a`, '2');
          const third = await store.put(`${p}a`, '3');
          const [event] = await reader.take(1);
          assert.equal(event?.revision, third.revision);
          assert.equal(event?.kv.value, '3');
        } finally {
          watch.close();
        }
      });

      it('close() ends the iteration without an error', async () => {
        const watch = store.watch(p);
        const seen: WatchEvent[] = [];
        const loop = (async () => {
          for await (const e of watch) seen.push(e);
        })();
        await store.put(`${p}a`, '1');
        await pollUntil(() => Promise.resolve(seen.length === 1), performance.now(), WATCH_TIMEOUT_MS);
        watch.close();
        await withTimeout(loop, WATCH_TIMEOUT_MS, 'the for-await loop did not end after close()');
        assert.equal(seen.length, 1);
      });

      it('an aborted signal ends the iteration', async () => {
        const controller = new AbortController();
        const watch = store.watch(p, { signal: controller.signal });
        const loop = (async () => {
          let n = 0;
          for await (const _ of watch) n++;
          return n;
        })();
        await store.put(`${p}a`, '1');
        await sleep(50);
        controller.abort();
        const n = await withTimeout(loop, WATCH_TIMEOUT_MS, 'the for-await loop did not end after abort');
        assert.ok(n <= 1);
      });
    });

    describe('close', () => {
      it('ends open watches, and later calls fail with STORE_UNAVAILABLE', async () => {
        const watch = store.watch(p);
        const loop = (async () => {
          try {
            for await (const _ of watch) {
              // no events are expected
            }
          } catch (err) {
            if (!isCorralError(err, 'STORE_UNAVAILABLE')) throw err;
          }
        })();
        await store.close();
        await withTimeout(loop, WATCH_TIMEOUT_MS, 'an open watch did not end when the store closed');
        await rejectsWith(store.get(`${p}a`), 'STORE_UNAVAILABLE');
        await rejectsWith(store.put(`${p}a`, 'x'), 'STORE_UNAVAILABLE');
        await store.close(); // close is idempotent
      });
    });

    describe('concurrent writers', () => {
      it('get distinct revisions that together advance the store by exactly their number', async () => {
        const before = await store.revision();
        const n = 64;
        const results = await Promise.all(Array.from({ length: n }, (_, i) => store.put(`${p}c/${i}`, String(i))));
        const revisions = results.map((r) => r.revision).sort((x, y) => (x < y ? -1 : 1));
        assert.deepEqual(
          revisions,
          Array.from({ length: n }, (_, i) => before + 1n + BigInt(i)),
        );
        for (const [i, r] of results.entries()) assert.equal((await store.get(`${p}c/${i}`)).kv?.modRevision, r.revision);
      });

      it('writing one key concurrently yields one version per write', async () => {
        const n = 20;
        const results = await Promise.all(Array.from({ length: n }, (_, i) => store.put(`${p}same`, String(i))));
        assert.equal(new Set(results.map((r) => r.revision)).size, n);
        const last = results.reduce((a, b) => (a.revision > b.revision ? a : b));
        const got = await store.get(`${p}same`);
        assert.equal(got.kv?.version, BigInt(n));
        assert.equal(got.kv?.modRevision, last.revision);
      });

      it('one writer’s successive writes get increasing revisions', async () => {
        let last = 0n;
        for (let i = 0; i < 20; i++) {
          const { revision } = await store.put(`${p}seq/${i}`, 'x');
          assert.ok(revision > last);
          last = revision;
        }
      });
    });
  });
}

// --- helpers

function kv(key: string, value: string, r: { create: Revision; mod: Revision; version: bigint; lease?: bigint }): KeyValue {
  return { key, value, createRevision: r.create, modRevision: r.mod, version: r.version, lease: r.lease ?? NO_LEASE };
}

function deletedKv(key: string, revision: Revision): KeyValue {
  // A delete event's kv: the key and the deleting revision; the rest is zero, as etcd reports it.
  return { key, value: '', createRevision: 0n, modRevision: revision, version: 0n, lease: NO_LEASE };
}

// [op, compare value, holds] around an actual value, for every operator both ways.
function orderCases(actual: bigint): [CompareOp, bigint, boolean][] {
  return [
    ['=', actual, true],
    ['=', actual + 1n, false],
    ['!=', actual + 1n, true],
    ['!=', actual, false],
    ['<', actual + 1n, true],
    ['<', actual, false],
    ['>', actual - 1n, true],
    ['>', actual, false],
  ];
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isCorralError(err, code), `expected CorralError ${code}, got ${String(err)}`);
    return true;
  });
}

/** Reads events from one watch; a read that does not complete in time closes the watch and fails. */
class WatchReader {
  private readonly it: AsyncIterator<WatchEvent>;

  constructor(private readonly watch: Watch) {
    this.it = watch[Symbol.asyncIterator]();
  }

  async take(n: number): Promise<WatchEvent[]> {
    const events: WatchEvent[] = [];
    const timer = setTimeout(() => this.watch.close(), WATCH_TIMEOUT_MS);
    try {
      while (events.length < n) {
        const next = await this.it.next();
        if (next.done === true) break;
        events.push(next.value);
      }
    } finally {
      clearTimeout(timer);
    }
    assert.equal(events.length, n, `expected ${n} watch events within ${WATCH_TIMEOUT_MS} ms, got ${events.length}`);
    return events;
  }
}

/** Reads n events from a fresh watch, then closes it. */
async function readEvents(watch: Watch, n: number): Promise<WatchEvent[]> {
  try {
    return await new WatchReader(watch).take(n);
  } finally {
    watch.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/** Polls until `cond` holds; returns the ms elapsed since `start` when it did, or undefined at `limitMs`. */
async function pollUntil(cond: () => Promise<boolean>, start: number, limitMs: number): Promise<number | undefined> {
  while (performance.now() - start < limitMs) {
    if (await cond()) return performance.now() - start;
    await sleep(POLL_MS);
  }
  return undefined;
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
