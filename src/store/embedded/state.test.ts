// The pure parts: key order, the sorted key set, and the state machine's determinism (replaying
// the records of live writes rebuilds the same state; an image round-trips).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareKeys } from './key-order.js';
import { decodeRecord, encodeRecord, type JournalRecord } from './records.js';
import { SortedKeySet } from './sorted-keys.js';
import { StoreState } from './state.js';

/** A small deterministic PRNG, so a failure reproduces. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET = ['a', 'b', 'z', '/', '0', 'é', '\uFF5E', '\u{1F600}', '\uE000', '\u{10000}'];

function randomKey(rand: () => number, maxLen = 4): string {
  let key = '';
  const n = 1 + Math.floor(rand() * maxLen);
  for (let i = 0; i < n; i++) key += ALPHABET[Math.floor(rand() * ALPHABET.length)];
  return key;
}

const byBytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

describe('key order', () => {
  it('compareKeys agrees with UTF-8 byte order, including characters beyond U+FFFF', () => {
    const rand = prng(1);
    for (let i = 0; i < 20_000; i++) {
      const a = randomKey(rand);
      const b = randomKey(rand);
      assert.equal(Math.sign(compareKeys(a, b)), Math.sign(byBytes(a, b)), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    }
    assert.ok(compareKeys('\uFF5E', '\u{1F600}') < 0, 'U+FF5E before U+1F600, unlike JavaScript <');
  });

  it('SortedKeySet keeps keys sorted through random adds and deletes, and iterates from any start', () => {
    const rand = prng(2);
    const set = new SortedKeySet();
    const reference = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      const key = randomKey(rand, 5);
      if (rand() < 0.65) assert.equal(set.add(key), !reference.has(key) && reference.add(key) !== undefined);
      else assert.equal(set.delete(key), reference.delete(key));
    }
    const sorted = [...reference].sort(byBytes);
    assert.equal(set.size, sorted.length);
    assert.ok(sorted.length > 1_000, 'enough keys to span several chunks');
    assert.deepEqual([...set.from('')], sorted);
    for (let i = 0; i < 200; i++) {
      const start = randomKey(rand, 3);
      assert.deepEqual([...set.from(start)].slice(0, 20), sorted.filter((k) => byBytes(k, start) >= 0).slice(0, 20));
    }
  });
});

describe('state machine', () => {
  it('replaying the records of live writes rebuilds the same state, and an image round-trips', () => {
    const rand = prng(3);
    const live = new StoreState();
    const records: JournalRecord[] = [];
    const leases: bigint[] = [];
    for (let i = 0; i < 3_000; i++) {
      const roll = rand();
      if (roll < 0.05) {
        const record = live.grant(1 + Math.floor(rand() * 30));
        leases.push(record.id);
        records.push(record);
      } else if (roll < 0.08 && leases.length > 0) {
        const revoked = live.revoke(leases.splice(Math.floor(rand() * leases.length), 1)[0] ?? 0n);
        if (revoked) records.push(revoked.record);
      } else {
        const txn = live.beginTxn();
        for (let n = 1 + Math.floor(rand() * 3); n > 0; n--) {
          const key = randomKey(rand, 3);
          const op = rand();
          if (op < 0.6) {
            // One put per key per txn, as the store's validation guarantees.
            if (txn.get(key)?.modRevision !== txn.rev) txn.put(key, String(i), rand() < 0.3 ? (leases[0] ?? 0n) : 0n);
          } else if (op < 0.97) txn.delete(key);
          else txn.deletePrefix(key.slice(0, 2));
        }
        const { record } = txn.commit();
        if (record) records.push(record);
      }
    }
    const replayed = new StoreState();
    for (const r of records) replayed.apply(decodeRecord(Buffer.from(encodeRecord(r))));
    assert.deepEqual(replayed.image(), live.image());
    assert.ok(live.keyCount > 50 && live.revision > 1_000n);
    assert.deepEqual(StoreState.fromImage(live.image()).image(), live.image());
  });

  it('refuses a record that does not follow the last one', () => {
    const state = new StoreState();
    state.grant(5);
    assert.throws(() => state.apply({ seq: 3, type: 'grant', id: 2n, ttl: 5 }), /does not follow/);
    assert.throws(() => state.apply({ seq: 2, type: 'txn', rev: 5n, muts: [] }), /revision/);
    assert.throws(() => state.apply({ seq: 2, type: 'grant', id: 1n, ttl: 5 }), /already granted/);
  });
});
