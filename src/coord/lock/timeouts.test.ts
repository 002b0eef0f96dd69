// Timeouts (0, N, -1 with abort), one deadline per request, resource existence (create: false)
// and the idle lifespan that keeps a resource existing after its last release.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError, type ErrorCode } from '../../api/errors.js';
import { acquire } from './acquire.js';
import { LOCK_BACKENDS, sleep, stateAfter, useLockFixture } from './fixtures.js';
import { resourceKeys } from './keys.js';
import { parseResourceName } from './resource.js';

const failsWith = (code: ErrorCode) => (err: unknown) => isCorralError(err, code);

for (const backend of LOCK_BACKENDS) {
  describe(`lock timeouts and resource existence on the ${backend} store`, () => {
    const fx = useLockFixture(backend);

    const waiterKeys = async (resource: string): Promise<string[]> =>
      (await fx.store.range(resourceKeys(parseResourceName(resource)).waiterPrefix)).kvs.map((kv) => kv.key);

    it('timeout 0 on a busy resource fails at once with LOCK_BUSY and leaves no key behind (use case 3)', async () => {
      const resource = fx.name('busy');
      const holder = await acquire(fx.store, await fx.session(), { resource });
      const other = await fx.session();
      const t0 = performance.now();
      await assert.rejects(acquire(fx.store, other, { resource, timeoutMs: 0 }), failsWith('LOCK_BUSY'));
      // Two store writes (join, withdraw), nothing waited for. On etcd each write is fsync'd, which
      // takes tens of ms on a loaded machine: the bound leaves room for that, not for a wait.
      const elapsed = performance.now() - t0;
      assert.ok(elapsed < 500, `failed after ${elapsed} ms`);
      assert.deepEqual(await waiterKeys(resource), [holder.key]);
      await holder.release();
    });

    it('timeout N fails with LOCK_TIMEOUT after N ms and withdraws the request (use case 4)', async () => {
      const resource = fx.name('slow');
      const holder = await acquire(fx.store, await fx.session(), { resource });
      const other = await fx.session();
      const t0 = performance.now();
      await assert.rejects(acquire(fx.store, other, { resource, timeoutMs: 150 }), failsWith('LOCK_TIMEOUT'));
      const elapsed = performance.now() - t0;
      assert.ok(elapsed >= 145 && elapsed < 650, `timed out after ${elapsed} ms`);
      assert.deepEqual(await waiterKeys(resource), [holder.key]);
      await holder.release();
    });

    it('the timeout is one deadline for the whole request, not restarted by each release', async () => {
      const resource = fx.name('deadline');
      const [r1, r2] = [await acquire(fx.store, await fx.session(), { resource, mode: 'PR' }), await acquire(fx.store, await fx.session(), { resource, mode: 'PR' })];
      const s = await fx.session();
      const t0 = performance.now();
      const writer = acquire(fx.store, s, { resource, mode: 'EX', timeoutMs: 400 });
      await sleep(300);
      await r2.release(); // wakes the writer, which finds r1 still there and waits again
      await assert.rejects(writer, failsWith('LOCK_TIMEOUT'));
      const elapsed = performance.now() - t0;
      assert.ok(elapsed >= 395 && elapsed < 650, `a per-step timer would have given up after 700 ms or more; gave up after ${elapsed} ms`);
      await r1.release();
    });

    it('timeout -1 waits until the caller aborts, then withdraws the request', async () => {
      const resource = fx.name('forever');
      const holder = await acquire(fx.store, await fx.session(), { resource });
      const abort = new AbortController();
      const waiting = acquire(fx.store, await fx.session(), { resource, timeoutMs: -1, signal: abort.signal });
      assert.equal((await stateAfter(waiting, 50)).state, 'pending');
      abort.abort(new Error('caller gave up'));
      await assert.rejects(waiting, /caller gave up/);
      assert.deepEqual(await waiterKeys(resource), [holder.key]);
      await holder.release();
    });

    it('a timeout longer than a timer can count (2^31 ms) does not fire early', async () => {
      const resource = fx.name('long');
      const holder = await acquire(fx.store, await fx.session(), { resource });
      const abort = new AbortController();
      const waiting = acquire(fx.store, await fx.session(), { resource, timeoutMs: 2 ** 32, signal: abort.signal });
      assert.equal((await stateAfter(waiting, 50)).state, 'pending');
      abort.abort(new Error('done'));
      await assert.rejects(waiting, /done/);
      await holder.release();
    });

    it('a request whose signal is already aborted fails without joining the line', async () => {
      const resource = fx.name('preaborted');
      await assert.rejects(acquire(fx.store, await fx.session(), { resource, signal: AbortSignal.abort(new Error('no')) }), /no/);
      assert.deepEqual(await waiterKeys(resource), []);
    });

    it('create: false on a resource that does not exist fails with RESOURCE_NOT_FOUND (timeout 0) or LOCK_TIMEOUT', async () => {
      const resource = fx.name('absent');
      const s = await fx.session();
      await assert.rejects(acquire(fx.store, s, { resource, create: false, timeoutMs: 0 }), failsWith('RESOURCE_NOT_FOUND'));
      await assert.rejects(acquire(fx.store, s, { resource, create: false, timeoutMs: 80 }), failsWith('LOCK_TIMEOUT'));
      assert.deepEqual(await waiterKeys(resource), []);
    });

    it('create: false waits for a task not yet started to create the resource (use case 16)', async () => {
      const resource = fx.name('later');
      const consumer = acquire(fx.store, await fx.session(), { resource, create: false });
      assert.equal((await stateAfter(consumer, 40)).state, 'pending');
      const producer = await acquire(fx.store, await fx.session(), { resource });
      assert.equal((await stateAfter(consumer, 30)).state, 'pending', 'exists now, but the producer holds it');
      await producer.release();
      await (await consumer).release();
    });

    it('an idle lifespan keeps a resource existing after its last release, then it is gone (use case 17)', async () => {
      const resource = fx.name('longterm');
      const s = await fx.session();
      const { idlePrefix } = resourceKeys(parseResourceName(resource));
      const idleOver = async (): Promise<void> => {
        for (let i = 0; i < 80 && (await fx.store.range(idlePrefix)).kvs.length > 0; i++) await sleep(50);
      };
      await (await acquire(fx.store, s, { resource, idleLifespanMs: 1000 })).release();
      const consumer = await acquire(fx.store, s, { resource, create: false, timeoutMs: 0 });
      await idleOver(); // the producer's marker is gone while the consumer holds
      await consumer.release(); // with the creator's 1000 ms, inherited: kept again
      await acquire(fx.store, s, { resource, create: false, timeoutMs: 0 }).then((l) => l.release());
      await idleOver();
      await assert.rejects(acquire(fx.store, s, { resource, create: false, timeoutMs: 0 }), failsWith('RESOURCE_NOT_FOUND'));
    });

    it('create: false on a hierarchical path asks whether its root exists', async () => {
      const root = `/${fx.name('root')}`;
      const holder = await acquire(fx.store, await fx.session(), { resource: `${root}/a`, mode: 'PR' });
      const other = await acquire(fx.store, await fx.session(), { resource: `${root}/b`, create: false, timeoutMs: 0 });
      await Promise.all([holder.release(), other.release()]);
      await assert.rejects(acquire(fx.store, await fx.session(), { resource: `${root}/b`, create: false, timeoutMs: 0 }), failsWith('RESOURCE_NOT_FOUND'));
    });

    it('rejects a bad name, mode or option before touching the store', async () => {
      const s = await fx.session();
      await assert.rejects(acquire(fx.store, s, { resource: 'no-dashes' }), failsWith('BAD_RESOURCE'));
      await assert.rejects(acquire(fx.store, s, { resource: 'x', mode: 'Exclusive' as never }), failsWith('BAD_LOCK_MODE'));
      await assert.rejects(acquire(fx.store, s, { resource: 'x', idleLifespanMs: -1 }), failsWith('BAD_LOCK_REQUEST'));
      await assert.rejects(acquire(fx.store, s, { resource: 'x', timeoutMs: Number.NaN }), failsWith('BAD_LOCK_REQUEST'));
      await assert.rejects(acquire(fx.store, s, { resource: '_t_x%d[1]' }), failsWith('BAD_RESOURCE'));
    });
  });
}
