// Fencing tokens, session loss and release: a lost holder is told before anyone else gets in.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import { faultyStore } from '../../testkit/faulty-store.js';
import { Session } from '../session.js';
import { acquire } from './acquire.js';
import { LOCK_BACKENDS, sleep, stateAfter, track, useLockFixture } from './fixtures.js';

for (const backend of LOCK_BACKENDS) {
  describe(`lock fencing and loss on the ${backend} store`, () => {
    const fx = useLockFixture(backend);

    it('fencing tokens strictly increase across every grant of the store', async () => {
      const s = await fx.session();
      const tokens: bigint[] = [];
      const resources = [fx.name('f'), fx.name('f'), `${fx.name('s')}.b`, fx.name('_s_q', '[2]'), `/${fx.name('h')}/x`];
      for (let i = 0; i < 20; i++) {
        const lock = await acquire(fx.store, s, { resource: resources[i % resources.length] as string });
        assert.equal(typeof lock.fencingToken, 'bigint');
        tokens.push(lock.fencingToken);
        await lock.release();
      }
      for (let i = 1; i < tokens.length; i++) assert.ok((tokens[i] as bigint) > (tokens[i - 1] as bigint), `token ${i}: ${tokens.join(' ')}`);
    });

    it('a holder whose session is lost is told at once; the next waiter gets in only once its key is gone', async () => {
      const crashing = await fx.session({ ttlSeconds: 1, keepaliveIntervalMs: 200 });
      const resource = fx.name('lost');
      const holder = await acquire(fx.store, crashing, { resource });
      let lostAt = 0;
      const lost = holder.whenLost().then((reason) => ((lostAt = performance.now()), reason));
      const next = track(acquire(fx.store, await fx.session(), { resource }));
      await sleep(20);
      const closedAt = performance.now();
      await crashing.close({ revoke: false }); // as if the process died: the lease runs out on the store
      assert.ok(isCorralError(await lost, 'SESSION_LOST'));
      assert.ok(holder.lost.aborted);
      await sleep(300);
      assert.ok((await fx.store.get(holder.key)).kv !== undefined, 'the key outlives the process until the lease expires');
      assert.equal(next.now().state, 'pending', 'and the waiter waits for it');
      const granted = await next.promise;
      const grantedAt = performance.now();
      assert.equal((await fx.store.get(holder.key)).kv, undefined, 'the lost holder’s key is gone');
      // The last keepalive was at most 200 ms before the close; the TTL is 1 s.
      assert.ok(grantedAt - closedAt >= 700, `granted ${grantedAt - closedAt} ms after the crash`);
      assert.ok(lostAt > 0 && lostAt < grantedAt);
      assert.ok(granted.fencingToken > holder.fencingToken);
      await holder.release(); // after loss: harmless
      await granted.release();
    });

    it('a session that cannot renew signals the loss while its key is still there, before anyone else is granted', async () => {
      const { store: faulty, fail } = faultyStore(fx.store);
      const stalled = await Session.open(faulty, { ttlSeconds: 1, keepaliveIntervalMs: 150 });
      const resource = fx.name('stall');
      const holder = await acquire(faulty, stalled, { resource });
      const next = track(acquire(fx.store, await fx.session(), { resource }));
      fail.add('keepAlive');
      await holder.whenLost();
      const keyAtLoss = (await fx.store.get(holder.key)).kv;
      assert.ok(keyAtLoss !== undefined, 'the loss is signalled before the lease expires on the store');
      assert.equal(next.now().state, 'pending');
      const granted = await next.promise;
      assert.equal((await fx.store.get(holder.key)).kv, undefined);
      await granted.release();
      await stalled.close();
    });

    it('a waiter whose session is lost fails with SESSION_LOST and withdraws', async () => {
      const resource = fx.name('waitlost');
      const holder = await acquire(fx.store, await fx.session(), { resource });
      const doomed = await fx.session();
      const waiting = acquire(fx.store, doomed, { resource });
      assert.equal((await stateAfter(waiting, 20)).state, 'pending');
      await doomed.close();
      await assert.rejects(waiting, (err) => isCorralError(err, 'SESSION_LOST'));
      await assert.rejects(acquire(fx.store, doomed, { resource }), (err) => isCorralError(err, 'SESSION_LOST'));
      assert.equal((await fx.store.range(holder.key.slice(0, holder.key.lastIndexOf('/') + 1))).kvs.length, 1);
      await holder.release();
    });

    it('release is idempotent: one delete, later calls share it', async () => {
      const s = await fx.session();
      const resource = fx.name('idem');
      const lock = await acquire(fx.store, s, { resource });
      const before = await fx.store.revision();
      await Promise.all([lock.release(), lock.release(), lock.close()]);
      await lock.release({ rollback: true });
      assert.equal(await fx.store.revision(), before + 1n);
      assert.ok(lock.released);
      assert.equal((await fx.store.get(lock.key)).kv, undefined);
    });

    it('acquire is one transaction and release one delete on the hot path', async () => {
      const { store: counting, calls } = faultyStore(fx.store);
      const s = await fx.session();
      const lock = await acquire(counting, s, { resource: fx.name('hot') });
      await lock.release();
      assert.deepEqual(Object.fromEntries(calls), { txn: 1, delete: 1 });
    });
  });
}
