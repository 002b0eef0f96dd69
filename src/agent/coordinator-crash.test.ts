import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { adminStore, LocalClusterFixture, sleep } from '../testkit/local.js';

interface Ack {
  key: string;
  value: string;
  revision: bigint;
}

describe('the coordinator killed with SIGKILL during concurrent writes', { timeout: 120_000 }, () => {
  const lc = new LocalClusterFixture(2);
  before(() => lc.up());
  after(() => lc.destroy());

  it('keeps every acknowledged write and never reuses a revision', async () => {
    const store = await adminStore(lc.config);
    const acks: Ack[] = [];
    let failures = 0;
    let stop = false;
    const writer = async (w: number): Promise<void> => {
      for (let seq = 0; !stop && seq < 100_000; seq++) {
        const key = `/crash/w${w}/${String(seq).padStart(6, '0')}`;
        const value = `${w}:${seq}`;
        try {
          const { revision } = await store.put(key, value);
          acks.push({ key, value, revision });
        } catch {
          failures++;
          return; // the coordinator is gone
        }
      }
    };
    const writers = Array.from({ length: 64 }, (_, w) => writer(w));
    // Let the writers run, then kill the coordinator in the middle of the stream.
    while (acks.length < 500) await sleep(5);
    process.kill(lc.pid('n1'), 'SIGKILL');
    const settled = await Promise.race([Promise.all(writers).then(() => true), sleep(15_000, { ref: false }).then(() => false)]);
    assert.ok(settled, 'every writer saw its request fail within 15 s of the kill');
    stop = true;
    await store.close();
    assert.ok(acks.length >= 500, `${acks.length} writes acknowledged before the kill`);
    assert.ok(failures > 0, 'writers saw the coordinator die');

    await lc.up(); // restarts n1 on the same data directory
    const after = await adminStore(lc.config);
    try {
      const { kvs } = await after.range('/crash/');
      const byKey = new Map(kvs.map((kv) => [kv.key, kv]));
      const revisionOwners = new Map<bigint, string>();
      for (const kv of kvs) {
        assert.equal(revisionOwners.has(kv.modRevision), false, `revision ${kv.modRevision} used twice`);
        revisionOwners.set(kv.modRevision, kv.key);
      }
      let maxAcked = 0n;
      for (const ack of acks) {
        const kv = byKey.get(ack.key);
        assert.ok(kv, `acknowledged write ${ack.key} (revision ${ack.revision}) is missing after the restart`);
        assert.equal(kv.value, ack.value);
        assert.equal(kv.modRevision, ack.revision, `${ack.key} has revision ${kv.modRevision}, acknowledged as ${ack.revision}`);
        if (ack.revision > maxAcked) maxAcked = ack.revision;
      }
      // Revisions after the restart are new: above every acknowledged one and every one stored
      // (including writes that reached the journal but whose answer the kill cut off).
      const maxStored = kvs.reduce((m, kv) => (kv.modRevision > m ? kv.modRevision : m), 0n);
      let previous = 0n;
      for (let i = 0; i < 20; i++) {
        const { revision } = await after.put(`/crash/after-restart/${i}`, 'x');
        assert.ok(revision > maxAcked && revision > maxStored, `revision ${revision} after the restart was handed out before`);
        assert.ok(revision > previous);
        previous = revision;
      }
    } finally {
      await after.close();
    }
  });
});
