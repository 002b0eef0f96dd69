// Every resource kind over the real store: numeric quantities, sets, hierarchies, sequences and
// timestamps, with FLoM's use cases that can be reproduced at the recipe level.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError, type ErrorCode } from '../../api/errors.js';
import { systemClock, type Clock } from '../../util/clock.js';
import { acquire } from './acquire.js';
import { inLine, LOCK_BACKENDS, sleep, stateAfter, useLockFixture } from './fixtures.js';
import type { LockGrant } from './grant.js';
import { resourceKeys } from './keys.js';
import { parseResourceName } from './resource.js';

const failsWith = (code: ErrorCode) => (err: unknown) => isCorralError(err, code);

for (const backend of LOCK_BACKENDS) {
  describe(`lock resource kinds on the ${backend} store`, () => {
    const fx = useLockFixture(backend);

    /** Waits until the resource's idle markers have expired (its idle lifespan is over). */
    async function idleOver(resource: string): Promise<void> {
      const { idlePrefix } = resourceKeys(parseResourceName(resource));
      for (let i = 0; i < 100; i++) {
        if ((await fx.store.range(idlePrefix)).kvs.length === 0) return;
        await sleep(50);
      }
      assert.fail(`${resource} is still kept after 5 s`);
    }

    describe('numeric name[N]', () => {
      it('grants units while they last and makes the next request wait (use case 10)', async () => {
        const s = await fx.session();
        const pool = fx.name('ping', '[2]');
        const a = await acquire(fx.store, s, { resource: pool });
        const b = await acquire(fx.store, s, { resource: pool });
        await assert.rejects(acquire(fx.store, s, { resource: pool, timeoutMs: 0 }), failsWith('LOCK_BUSY'));
        const c = acquire(fx.store, s, { resource: pool });
        assert.equal((await stateAfter(c, 30)).state, 'pending');
        await b.release();
        await (await c).release();
        await a.release();
      });

      it('counts quantities; a large blocked request is not overtaken by a small one (strict FIFO)', async () => {
        const s = await fx.session();
        const pool = fx.name('pool', '[3]');
        const two = await acquire(fx.store, s, { resource: pool, quantity: 2 });
        const q = inLine();
        const three = acquire(fx.store, s, { resource: pool, quantity: 3 }, q);
        await q.queued(three);
        // FLoM would grant this one at once (2 + 1 <= 3); here it queues behind the request for 3.
        const one = acquire(fx.store, s, { resource: pool, quantity: 1 });
        assert.equal((await stateAfter(three, 30)).state, 'pending');
        assert.equal((await stateAfter(one, 0)).state, 'pending');
        await two.release();
        const threeHeld = await three;
        assert.equal(threeHeld.quantity, 3);
        assert.equal((await stateAfter(one, 30)).state, 'pending');
        await threeHeld.release();
        await (await one).release();
      });

      it('refuses a quantity larger than the pool (LOCK_IMPOSSIBLE), and a quantity below 1', async () => {
        const s = await fx.session();
        await assert.rejects(acquire(fx.store, s, { resource: 'pool[3]', quantity: 4 }), failsWith('LOCK_IMPOSSIBLE'));
        await assert.rejects(acquire(fx.store, s, { resource: 'empty[0]' }), failsWith('LOCK_IMPOSSIBLE'));
        await assert.rejects(acquire(fx.store, s, { resource: 'pool[3]', quantity: 0 }), failsWith('BAD_LOCK_REQUEST'));
        await assert.rejects(acquire(fx.store, s, { resource: 'pool[3]', quantity: 1.5 }), failsWith('BAD_LOCK_REQUEST'));
        assert.deepEqual((await fx.store.range('/corral/locks/r/pool[3]/')).kvs, []);
      });

      it('grants numeric resources in EX whatever mode is asked, and ignores quantity elsewhere', async () => {
        const s = await fx.session();
        const lock = await acquire(fx.store, s, { resource: fx.name('n', '[5]'), mode: 'PR', quantity: 2 });
        assert.equal(lock.mode, 'EX');
        assert.equal(lock.quantity, 2);
        await lock.release();
        const simple = await acquire(fx.store, s, { resource: fx.name('simple'), quantity: 7 });
        assert.equal(simple.quantity, 1);
        await simple.release();
      });
    });

    describe('set a.b.c', () => {
      it('gives concurrent holders distinct elements in order; a fourth cannot have one (use case 13)', async () => {
        const [s1, s2, s3, s4] = [await fx.session(), await fx.session(), await fx.session(), await fx.session()];
        const set = `${fx.name('red')}.green.blue`;
        const held = [await acquire(fx.store, s1, { resource: set }), await acquire(fx.store, s2, { resource: set }), await acquire(fx.store, s3, { resource: set })];
        assert.deepEqual(held.map((l) => l.value), [set.split('.')[0], 'green', 'blue']);
        await assert.rejects(acquire(fx.store, s4, { resource: set, timeoutMs: 0 }), failsWith('LOCK_BUSY'));
        const fourth = acquire(fx.store, s4, { resource: set });
        await (held[1] as LockGrant).release();
        assert.equal((await fourth).value, 'green');
        await Promise.all([held[0]?.release(), held[2]?.release(), (await fourth).release()]);
        // All released, nothing kept: the next holder starts from the first element again.
        assert.equal((await acquire(fx.store, s1, { resource: set })).value, set.split('.')[0]);
      });

      it('allows duplicate elements, each position held once', async () => {
        const s = await fx.session();
        const set = `${fx.name('a')}.b.b`;
        const held = [await acquire(fx.store, s, { resource: set }), await acquire(fx.store, s, { resource: set }), await acquire(fx.store, s, { resource: set })];
        assert.deepEqual(held.map((l) => l.value), [set.split('.')[0], 'b', 'b']);
        await assert.rejects(acquire(fx.store, s, { resource: set, timeoutMs: 0 }), failsWith('LOCK_BUSY'));
        await Promise.all(held.map((l) => l.release()));
      });

      it('moves round robin between holders within the idle lifespan, and starts over after it (use case 12)', async () => {
        const s = await fx.session();
        const set = `${fx.name('one')}.two.three`;
        const first = set.split('.')[0];
        const one = async (idleLifespanMs: number): Promise<string | undefined> => {
          const lock = await acquire(fx.store, s, { resource: set, idleLifespanMs });
          await lock.release();
          return lock.value;
        };
        assert.deepEqual([await one(1000), await one(1000), await one(1000), await one(1000)], [first, 'two', 'three', first]);
        assert.equal(await one(1000), 'two');
        await idleOver(set);
        assert.equal(await one(0), first);
        // Idle lifespan 0 (the default): forgotten at once after each release.
        assert.deepEqual([await one(0), await one(0)], [first, first]);
      });
    });

    describe('hierarchical /a/b', () => {
      const concurrent = async (held: [string, 'PR' | 'EX'], requested: [string, 'PR' | 'EX']): Promise<boolean> => {
        const [a, b] = [await fx.session(), await fx.session()];
        const holder = await acquire(fx.store, a, { resource: held[0], mode: held[1] });
        try {
          const second = await acquire(fx.store, b, { resource: requested[0], mode: requested[1], timeoutMs: 0 });
          await second.release();
          return true;
        } catch (err) {
          if (isCorralError(err, 'LOCK_BUSY')) return false;
          throw err;
        } finally {
          await holder.release();
        }
      };

      it('conflicts with ancestors and descendants per the matrix, never with siblings (use case 15)', async () => {
        const root = `/${fx.name('foo')}`;
        assert.equal(await concurrent([`${root}/bar`, 'PR'], [`${root}/blue/apple`, 'EX']), true, 'siblings are independent');
        assert.equal(await concurrent([`${root}/bar`, 'PR'], [`${root}/bar/apple`, 'EX']), false, 'a descendant waits for its ancestor');
        assert.equal(await concurrent([`${root}/bar/apple`, 'EX'], [`${root}/bar`, 'PR']), false, 'an ancestor waits for its descendant');
        assert.equal(await concurrent([root, 'PR'], [`${root}/blue/apple`, 'EX']), false, 'a backup of the root waits for writers below');
        assert.equal(await concurrent([root, 'PR'], [`${root}/bar`, 'PR']), true, 'readers share ancestor and descendant');
        assert.equal(await concurrent([`${root}/bar`, 'EX'], [`${root}/bar2`, 'EX']), true, 'a name that extends another is a sibling');
        assert.equal(await concurrent([`${root}/bar`, 'EX'], [`${root}/bar`, 'EX']), false, 'the same path conflicts');
        assert.equal(await concurrent([root, 'EX'], [`${root}x/bar`, 'EX']), true, 'another root is independent');
      });

      it('lets a waiter on a descendant in once the ancestor is released', async () => {
        const [a, b] = [await fx.session(), await fx.session()];
        const root = `/${fx.name('tree')}`;
        const backup = await acquire(fx.store, a, { resource: root, mode: 'PR' });
        const writer = acquire(fx.store, b, { resource: `${root}/x/y.txt`, mode: 'EX' });
        assert.equal((await stateAfter(writer, 30)).state, 'pending');
        await backup.release();
        await (await writer).release();
      });
    });

    describe('sequence _s_name[N] and transactional _S_name[N]', () => {
      // FLoM's Use Case 18 test: run these commands under the lock (-i 1000), `echo` prints the value,
      // `false` fails (a rollback).
      const commands = ['true', 'true', 'true', 'echo', 'true', 'true', 'echo', 'false', 'echo', 'false', 'echo', 'true', 'echo'];
      const printed = async (resource: string): Promise<string> => {
        const s = await fx.session();
        const out: string[] = [];
        for (const command of commands) {
          const lock = await acquire(fx.store, s, { resource, idleLifespanMs: 1000 });
          if (command === 'echo') out.push(lock.value ?? '?');
          await lock.release({ rollback: command === 'false' });
        }
        return out.join(' ');
      };

      it('prints 4 7 8 9 11 for a transactional sequence (use case 18)', async () => {
        assert.equal(await printed(fx.name('_S_a', '[1]')), '4 7 8 9 11');
      });

      it('prints 4 7 9 11 13 for a plain sequence (use case 18)', async () => {
        assert.equal(await printed(fx.name('_s_a', '[1]')), '4 7 9 11 13');
      });

      it('gives N concurrent holders distinct numbers and makes the next wait', async () => {
        const s = await fx.session();
        const seq = fx.name('_s_c', '[2]');
        const [a, b] = [await acquire(fx.store, s, { resource: seq }), await acquire(fx.store, s, { resource: seq })];
        assert.deepEqual([a.value, b.value], ['1', '2']);
        await assert.rejects(acquire(fx.store, s, { resource: seq, timeoutMs: 0 }), failsWith('LOCK_BUSY'));
        const c = acquire(fx.store, s, { resource: seq });
        await a.release();
        assert.equal((await c).value, '3');
        await Promise.all([b.release(), (await c).release()]);
      });

      it('forgets the counter when nothing keeps the resource (idle lifespan 0)', async () => {
        const s = await fx.session();
        const seq = fx.name('_s_f', '[1]');
        for (let i = 0; i < 3; i++) {
          const lock = await acquire(fx.store, s, { resource: seq });
          assert.equal(lock.value, '1');
          await lock.release();
        }
      });

      it('returns the value of a transactional holder that died to the next holder', async () => {
        const dying = await fx.session({ ttlSeconds: 1, keepaliveIntervalMs: 200 });
        const next = await fx.session();
        const seq = fx.name('_S_d', '[1]');
        // The creating request's idle lifespan is the resource's: the next holder inherits it.
        const first = await acquire(fx.store, dying, { resource: seq, idleLifespanMs: 2000 });
        assert.equal(first.value, '1');
        const second = acquire(fx.store, next, { resource: seq });
        await dying.close({ revoke: false }); // a crash: the lease expires, the key goes without a release
        const taken = await second;
        assert.equal(taken.value, '1', 'the dead holder’s value is rolled back and reused');
        await taken.release();
        const third = await acquire(fx.store, next, { resource: seq });
        assert.equal(third.value, '2', 'kept within the inherited idle lifespan');
        await third.release();
      });

      it('rolls back only transactional values', async () => {
        const s = await fx.session();
        const plain = fx.name('_s_r', '[1]');
        const lock = await acquire(fx.store, s, { resource: plain, idleLifespanMs: 2000 });
        await lock.release({ rollback: true });
        assert.equal((await acquire(fx.store, s, { resource: plain, idleLifespanMs: 2000 })).value, '2');
      });
    });

    describe('timestamp _t_FORMAT[N]', () => {
      it('issues distinct values at the format’s resolution, even with nothing kept between holders', async () => {
        const s = await fx.session();
        const ts = fx.name('_t_ts', '%H%M%S#fff[1]');
        const values = new Set<string>();
        for (let i = 0; i < 20; i++) {
          const lock = await acquire(fx.store, s, { resource: ts });
          assert.match(lock.value ?? '', /^ts\d+\d{6}\.\d{3}$/);
          values.add(lock.value ?? '');
          await lock.release();
        }
        assert.equal(values.size, 20);
      });

      it('gives N concurrent holders distinct values; the next one waits', async () => {
        const s = await fx.session();
        const ts = fx.name('_t_c', '%S#ff[2]');
        const [a, b] = [await acquire(fx.store, s, { resource: ts }), await acquire(fx.store, s, { resource: ts })];
        assert.notEqual(a.value, b.value);
        await assert.rejects(acquire(fx.store, s, { resource: ts, timeoutMs: 0 }), failsWith('LOCK_BUSY'));
        await Promise.all([a.release(), b.release()]);
      });

      it('waits until the wall clock leaves the last value’s interval (use case 19)', async () => {
        const s = await fx.session();
        const ts = fx.name('_t_w', '%S#fff[1]');
        let wall = Date.UTC(2024, 0, 1, 0, 0, 7) + 250;
        const clock: Clock = { ...systemClock, wallNow: () => wall };
        const first = await acquire(fx.store, s, { resource: ts }, { clock });
        assert.match(first.value ?? '', /^w\d+07\.250$/);
        await first.release();
        await assert.rejects(acquire(fx.store, s, { resource: ts, timeoutMs: 0 }, { clock }), failsWith('LOCK_BUSY'));
        const second = acquire(fx.store, s, { resource: ts }, { clock });
        assert.equal((await stateAfter(second, 60)).state, 'pending', 'the clock has not moved: same millisecond');
        wall += 1;
        assert.match((await second).value ?? '', /^w\d+07\.251$/);
        await (await second).release();
      });
    });
  });
}
