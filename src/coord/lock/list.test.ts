// listLocks(): every resource with its holders and waiters, as `corral locks` will show them.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { acquire } from './acquire.js';
import { LOCK_BACKENDS, sleep, useLockFixture } from './fixtures.js';
import { listLocks } from './list.js';

for (const backend of LOCK_BACKENDS) {
  describe(`listing locks on the ${backend} store`, () => {
    const fx = useLockFixture(backend);

    it('shows holders and waiters with mode, quantity, value, owner, since and token', async () => {
      const [a, b, c] = [await fx.session(), await fx.session(), await fx.session()];
      const owner = { node: 'n1', pid: 4242, command: 'make backup' };
      const reader = await acquire(fx.store, a, { resource: 'db', mode: 'PR', owner });
      const writer = acquire(fx.store, b, { resource: 'db', mode: 'EX', owner: { node: 'n2', pid: 7, command: 'migrate' } });
      const pool = await acquire(fx.store, c, { resource: 'cpu[4]', quantity: 3 });
      const element = await acquire(fx.store, c, { resource: 'red.green' });
      const path = await acquire(fx.store, c, { resource: '/srv/www', mode: 'PW' });
      await sleep(20);

      const { resources } = await listLocks(fx.store);
      assert.deepEqual(resources.map((r) => r.name), ['/srv/www', 'cpu[4]', 'db', 'red.green']);
      const db = resources.find((r) => r.name === 'db');
      assert.equal(db?.kind, 'simple');
      assert.deepEqual(db?.holders.map((h) => [h.mode, h.owner, h.fencingToken, h.granted, h.lease]), [['PR', owner, reader.fencingToken, true, a.lease]]);
      assert.deepEqual(db?.waiters.map((w) => [w.mode, w.owner.command, w.granted, w.lease]), [['EX', 'migrate', false, b.lease]]);
      assert.ok(!Number.isNaN(Date.parse(db?.holders[0]?.since ?? '')));
      assert.equal(resources.find((r) => r.name === 'cpu[4]')?.holders[0]?.quantity, 3);
      const set = resources.find((r) => r.name === 'red.green');
      assert.equal(set?.holders[0]?.value, 'red');
      assert.deepEqual(set?.state, { kind: 'set', index: 1 });
      assert.equal(resources.find((r) => r.name === '/srv/www')?.holders[0]?.mode, 'PW');

      await reader.release();
      const w = await writer;
      const after1 = await listLocks(fx.store);
      assert.deepEqual(after1.resources.find((r) => r.name === 'db')?.holders.map((h) => h.fencingToken), [w.fencingToken]);
      await Promise.all([w.release(), pool.release(), element.release(), path.release()]);
      assert.deepEqual((await listLocks(fx.store)).resources.map((r) => r.name), []);
    });

    it('shows a resource kept within its idle lifespan', async () => {
      const s = await fx.session();
      await (await acquire(fx.store, s, { resource: '_s_kept[1]', idleLifespanMs: 1000 })).release();
      const kept = (await listLocks(fx.store)).resources.find((r) => r.name === '_s_kept[1]');
      assert.equal(kept?.kept, true);
      assert.deepEqual(kept?.holders, []);
      assert.deepEqual(kept?.state, { kind: 'sequence', next: 2, reuse: [], outstanding: [] });
    });
  });
}
