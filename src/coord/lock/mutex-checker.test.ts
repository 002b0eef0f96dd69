// A mutual-exclusion checker: many concurrent holders, random modes, random timeouts, holders
// that crash or lose their session while holding. Each records when it asked, entered and left its
// critical section and its fencing token; the checker proves that no two conflicting holders
// overlapped and that tokens rose in the order grants happened (checkTokenOrder).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import { faultyStore } from '../../testkit/faulty-store.js';
import type { Store } from '../../store/store.js';
import { Session } from '../session.js';
import { acquire } from './acquire.js';
import { LOCK_BACKENDS, sleep, useLockFixture } from './fixtures.js';
import type { LockGrant } from './grant.js';
import { compatible, LOCK_MODES, type LockMode } from './modes.js';
import { pathsRelated } from './resource.js';

interface Tenure {
  worker: number;
  resource: string;
  mode: LockMode;
  quantity: number;
  value: string | undefined;
  token: bigint;
  /** When the request was made. */
  requested: number;
  enter: number;
  leave: number;
  how: 'released' | 'crashed' | 'lost';
}

// Deterministic randomness, so that a failure can be replayed.
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const overlap = (a: Tenure, b: Tenure): boolean => a.enter < b.leave && b.enter < a.leave;

/** Every pair that conflicts: disjoint in time, and the earlier holds the lower token. */
function checkPairs(tenures: readonly Tenure[], conflict: (a: Tenure, b: Tenure) => boolean): number {
  const tokens = new Set(tenures.map((t) => t.token));
  assert.equal(tokens.size, tenures.length, 'every grant has its own token');
  let pairs = 0;
  for (let i = 0; i < tenures.length; i++) {
    for (let j = i + 1; j < tenures.length; j++) {
      const a = tenures[i] as Tenure;
      const b = tenures[j] as Tenure;
      if (!conflict(a, b)) continue;
      pairs++;
      assert.ok(!overlap(a, b), `conflicting holders overlapped: ${JSON.stringify([a, b], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`);
      const [first, second] = a.enter < b.enter ? [a, b] : [b, a];
      assert.ok(first.token < second.token, `token ${second.token} (entered later) is not above ${first.token}`);
    }
  }
  return pairs;
}

/**
 * Tokens rise in the order grants happen. Grant A certainly happened before grant B when A's
 * holder entered before B was requested, or before a holder that B had to wait for (one it
 * conflicts with and that left before B entered) left: B's grant is recorded after that holder's
 * key is deleted. Then A's token must be below B's. This catches a request that passes a waiting
 * one (a CR passing a waiting PW) being granted with a token above the PW's, granted later.
 */
function checkTokenOrder(tenures: readonly Tenure[], conflict: (a: Tenure, b: Tenure) => boolean): number {
  let ordered = 0;
  for (const b of tenures) {
    let cut = b.requested;
    for (const x of tenures) if (x !== b && conflict(x, b) && x.leave <= b.enter) cut = Math.max(cut, x.leave);
    for (const a of tenures) {
      if (a === b || a.enter >= cut) continue;
      ordered++;
      assert.ok(a.token < b.token, `grant ${a.token} happened before grant ${b.token} (entered at ${a.enter.toFixed(2)}, before ${cut.toFixed(2)}) but has the higher token`);
    }
  }
  return ordered;
}

/** At no moment do the holders' quantities add up to more than `total`. */
function checkCapacity(tenures: readonly Tenure[], total: number): number {
  const events = tenures.flatMap((t) => [
    { at: t.enter, delta: t.quantity },
    { at: t.leave, delta: -t.quantity },
  ]);
  // Leaves before enters at the same instant: a holder that left lets the next in.
  events.sort((x, y) => x.at - y.at || x.delta - y.delta);
  let held = 0;
  let peak = 0;
  for (const e of events) {
    held += e.delta;
    peak = Math.max(peak, held);
    assert.ok(held <= total, `${held} units held at once, of ${total}`);
  }
  return peak;
}

interface Scenario {
  workers: number;
  rounds: number;
  seed: number;
  pick: (rand: () => number) => { resource: string; mode: LockMode; quantity?: number };
  /** Worker 0 crashes (session closed, not revoked) while holding in this round. */
  crashRound?: number;
  /** Worker 1 runs over a store whose keepalives start failing while it holds in this round. */
  stallRound?: number;
}

for (const backend of LOCK_BACKENDS) {
  describe(`mutual exclusion under concurrency on the ${backend} store`, () => {
    const fx = useLockFixture(backend);

    async function runScenario(scenario: Scenario): Promise<{ tenures: Tenure[]; refused: number }> {
      const tenures: Tenure[] = [];
      let refused = 0;
      const worker = async (w: number): Promise<void> => {
        const rand = random(scenario.seed * 1000 + w);
        const faulty = w === 1 && scenario.stallRound !== undefined ? faultyStore(fx.store) : undefined;
        const store: Store = faulty?.store ?? fx.store;
        const mortal = (w === 0 && scenario.crashRound !== undefined) || faulty !== undefined;
        const session = mortal ? await Session.open(store, { ttlSeconds: 1, keepaliveIntervalMs: 150 }) : await fx.session();
        try {
          for (let round = 0; round < scenario.rounds; round++) {
            const { resource, mode, quantity } = scenario.pick(rand);
            const r = rand();
            const timeoutMs = r < 0.15 ? 0 : r < 0.3 ? 1 + Math.floor(rand() * 20) : -1;
            let lock: LockGrant;
            const requested = performance.now();
            try {
              lock = await acquire(store, session, { resource, mode, quantity, timeoutMs });
            } catch (err) {
              if (isCorralError(err, 'LOCK_BUSY') || isCorralError(err, 'LOCK_TIMEOUT')) {
                refused++;
                continue;
              }
              throw err;
            }
            const tenure: Tenure = { worker: w, resource, mode: lock.mode, quantity: lock.quantity, value: lock.value, token: lock.fencingToken, requested, enter: performance.now(), leave: 0, how: 'released' };
            tenures.push(tenure);
            // The protected work stops the moment the session is reported lost.
            const stop = new Promise<void>((resolve) => lock.lost.addEventListener('abort', () => resolve(), { once: true }));
            if (w === 0 && round === scenario.crashRound) {
              await sleep(5);
              tenure.leave = performance.now();
              tenure.how = 'crashed';
              await session.close({ revoke: false });
              return;
            }
            if (faulty && round === scenario.stallRound) {
              faulty.fail.add('keepAlive');
              await stop;
              tenure.leave = performance.now();
              tenure.how = 'lost';
              return;
            }
            const hold = rand() < 0.5 ? 0 : rand() * 3;
            await Promise.race([hold === 0 ? new Promise<void>((resolve) => setImmediate(resolve)) : sleep(hold), stop]);
            tenure.leave = performance.now();
            await lock.release();
          }
        } finally {
          await session.close();
        }
      };
      await Promise.all(Array.from({ length: scenario.workers }, (_, w) => worker(w)));
      assert.ok(tenures.every((t) => t.leave >= t.enter));
      return { tenures, refused };
    }

    it('random modes on one simple resource, with a crash and a lost session: no conflicting overlap, tokens rise', async () => {
      const resource = fx.name('mx');
      const { tenures, refused } = await runScenario({
        workers: 10,
        rounds: 30,
        seed: 1,
        crashRound: 8,
        stallRound: 12,
        pick: (rand) => ({ resource, mode: LOCK_MODES[Math.floor(rand() * 6)] as LockMode }),
      });
      const pairs = checkPairs(tenures, (a, b) => !compatible(a.mode, b.mode));
      assert.ok(checkTokenOrder(tenures, (a, b) => !compatible(a.mode, b.mode)) > 1000);
      assert.ok(tenures.some((t) => t.how === 'crashed') && tenures.some((t) => t.how === 'lost'));
      assert.ok(tenures.length > 150 && pairs > 1000, `${tenures.length} tenures, ${pairs} conflicting pairs, ${refused} refused`);
      assert.ok(tenures.some((a) => tenures.some((b) => a !== b && overlap(a, b))), 'compatible holders did share the resource');
    });

    it('random modes on related hierarchical paths: no conflicting overlap, tokens rise', async () => {
      const root = `/${fx.name('tree')}`;
      const paths = [root, `${root}/a`, `${root}/a/b`, `${root}/c`, `${root}/c/d`, `${root}/ab`];
      const { tenures } = await runScenario({
        workers: 10,
        rounds: 30,
        seed: 2,
        pick: (rand) => ({ resource: paths[Math.floor(rand() * paths.length)] as string, mode: LOCK_MODES[Math.floor(rand() * 6)] as LockMode }),
      });
      const conflict = (a: Tenure, b: Tenure): boolean => pathsRelated(a.resource, b.resource) && !compatible(a.mode, b.mode);
      const pairs = checkPairs(tenures, conflict);
      checkTokenOrder(tenures, conflict);
      assert.ok(pairs > 500, `${pairs} conflicting pairs`);
    });

    it('random quantities on a numeric pool never exceed it; sequences and sets never hand one value out twice', async () => {
      const pool = fx.name('pool', '[4]');
      const { tenures } = await runScenario({ workers: 8, rounds: 25, seed: 3, crashRound: 5, pick: (rand) => ({ resource: pool, mode: 'EX', quantity: 1 + Math.floor(rand() * 4) }) });
      assert.ok(checkCapacity(tenures, 4) >= 2);
      checkTokenOrder(tenures, () => false);

      const seq = fx.name('_S_mx', '[3]');
      const seqRun = await runScenario({ workers: 8, rounds: 15, seed: 4, pick: () => ({ resource: seq, mode: 'EX' }) });
      checkCapacity(seqRun.tenures.map((t) => ({ ...t, quantity: 1 })), 3);
      checkPairs(seqRun.tenures, (a, b) => a.value === b.value);

      const set = `${fx.name('red')}.green.blue`;
      const setRun = await runScenario({ workers: 6, rounds: 15, seed: 5, pick: () => ({ resource: set, mode: 'EX' }) });
      checkCapacity(setRun.tenures.map((t) => ({ ...t, quantity: 1 })), 3);
      for (const a of setRun.tenures) for (const b of setRun.tenures) if (a !== b && overlap(a, b)) assert.notEqual(a.value, b.value);
    });
  });
}
