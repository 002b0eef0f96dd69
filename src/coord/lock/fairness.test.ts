// First come, first served among conflicting requests, where FLoM lets readers starve writers.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import { acquire } from './acquire.js';
import { inLine, LOCK_BACKENDS, stateAfter, useLockFixture } from './fixtures.js';
import type { LockGrant } from './grant.js';

for (const backend of LOCK_BACKENDS) {
  describe(`lock fairness on the ${backend} store`, () => {
    const fx = useLockFixture(backend);

    it('a PR request waits behind a waiting PW instead of starving it (FLoM use case 5 grants it at once)', async () => {
      const [a, b, c] = [await fx.session(), await fx.session(), await fx.session()];
      const resource = fx.name('uc5');
      const order: string[] = [];
      const reader1 = await acquire(fx.store, a, { resource, mode: 'PR' });
      const q = inLine();
      const writer = acquire(fx.store, b, { resource, mode: 'PW' }, q).then((l) => (order.push('PW'), l));
      await q.queued(writer);
      const reader2 = acquire(fx.store, c, { resource, mode: 'PR' }).then((l) => (order.push('PR2'), l));
      assert.equal((await stateAfter(reader2, 30)).state, 'pending', 'FLoM grants this PR at once; corral queues it behind the PW');
      await reader1.release();
      const w = await writer;
      assert.equal((await stateAfter(reader2, 30)).state, 'pending', 'the second reader waits for the writer');
      await w.release();
      await (await reader2).release();
      assert.deepEqual(order, ['PW', 'PR2']);
    });

    it('grants conflicting waiters in arrival order', async () => {
      const resource = fx.name('fifo');
      const first = await acquire(fx.store, await fx.session(), { resource });
      const order: number[] = [];
      const waiters: Promise<LockGrant>[] = [];
      for (let i = 0; i < 6; i++) {
        const s = await fx.session();
        const q = inLine();
        waiters.push(acquire(fx.store, s, { resource, mode: i % 2 === 0 ? 'EX' : 'PW' }, q).then((l) => (order.push(i), l)));
        await q.queued(waiters[i] as Promise<LockGrant>); // arrive in order
      }
      await first.release();
      for (const w of waiters) await (await w).release();
      assert.deepEqual(order, [0, 1, 2, 3, 4, 5]);
    });

    it('a request compatible with everyone ahead still goes at once: CR and NL pass a waiting PW', async () => {
      const [a, b, c] = [await fx.session(), await fx.session(), await fx.session()];
      const resource = fx.name('pass');
      const reader = await acquire(fx.store, a, { resource, mode: 'PR' });
      const q = inLine();
      const writer = acquire(fx.store, b, { resource, mode: 'PW' }, q);
      await q.queued(writer);
      const cr = await acquire(fx.store, c, { resource, mode: 'CR', timeoutMs: 0 });
      const nl = await acquire(fx.store, c, { resource, mode: 'NL', timeoutMs: 0 });
      await assert.rejects(acquire(fx.store, c, { resource, mode: 'PR', timeoutMs: 0 }), (err) => isCorralError(err, 'LOCK_BUSY'));
      await Promise.all([reader.release(), cr.release(), nl.release()]);
      await (await writer).release();
    });

    it('tokens follow grant order: a CR that passes a waiting PW gets a lower token than the PW, granted later', async () => {
      const [a, b, c] = [await fx.session(), await fx.session(), await fx.session()];
      const resource = fx.name('order');
      const reader = await acquire(fx.store, a, { resource, mode: 'PR' });
      const q = inLine();
      const writer = acquire(fx.store, b, { resource, mode: 'PW' }, q);
      await q.queued(writer);
      const cr = await acquire(fx.store, c, { resource, mode: 'CR' });
      assert.ok(cr.fencingToken > reader.fencingToken);
      await reader.release();
      const w = await writer;
      assert.ok(w.fencingToken > cr.fencingToken, `PW granted after CR has token ${w.fencingToken}, CR ${cr.fencingToken}`);
      // The token is the revision of the write that recorded the grant: the key's last write.
      assert.equal((await fx.store.get(w.key)).kv?.modRevision, w.fencingToken);
      await Promise.all([cr.release(), w.release()]);
    });

    it('a waiter that gives up leaves the line and the next moves up', async () => {
      const [a, b, c] = [await fx.session(), await fx.session(), await fx.session()];
      const resource = fx.name('giveup');
      const holder = await acquire(fx.store, a, { resource });
      const impatient = acquire(fx.store, b, { resource, timeoutMs: 50 });
      const patient = acquire(fx.store, c, { resource });
      await assert.rejects(impatient, (err) => isCorralError(err, 'LOCK_TIMEOUT'));
      await holder.release();
      await (await patient).release();
    });
  });
}
