// The full 36-pair mode matrix over the real store: a lock held in mode X, a request in mode Y,
// granted at once or waiting until X is released.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import { acquire } from './acquire.js';
import { LOCK_BACKENDS, stateAfter, useLockFixture } from './fixtures.js';
import { compatible, LOCK_MODES } from './modes.js';

for (const backend of LOCK_BACKENDS) {
  describe(`the lock mode matrix on the ${backend} store`, () => {
    const fx = useLockFixture(backend);

    for (const held of LOCK_MODES) {
      for (const requested of LOCK_MODES) {
        const expectation = compatible(held, requested) ? 'is granted at once' : 'waits until the holder releases';
        it(`${held} held, ${requested} requested: ${expectation}`, async () => {
          const [a, b] = [await fx.session(), await fx.session()];
          for (const resource of [fx.name('m'), `/${fx.name('m')}`]) {
            const holder = await acquire(fx.store, a, { resource, mode: held });
            if (compatible(held, requested)) {
              const second = await acquire(fx.store, b, { resource, mode: requested, timeoutMs: 0 });
              await second.release();
              await holder.release();
              continue;
            }
            await assert.rejects(acquire(fx.store, b, { resource, mode: requested, timeoutMs: 0 }), (err) => isCorralError(err, 'LOCK_BUSY'));
            const waiting = acquire(fx.store, b, { resource, mode: requested });
            assert.equal((await stateAfter(waiting, 30)).state, 'pending', `${requested} must wait while ${held} is held on ${resource}`);
            await holder.release();
            const second = await waiting;
            assert.ok(second.fencingToken > holder.fencingToken);
            await second.release();
          }
        });
      }
    }
  });
}
