import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openEmbeddedStore } from '../store/embedded/index.js';
import type { Store } from '../store/store.js';
import { faultyStore } from '../testkit/faulty-store.js';
import { Election, currentLeader } from './election.js';
import { joinMembership, KEYS, readClusterView } from './membership.js';
import { Session } from './session.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    if (await cond()) return performance.now() - t0;
    await sleep(10);
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

describe('coordination recipes on the embedded store', () => {
  let dir: string;
  let store: Store;
  let n = 0;
  const prefix = (): string => `/t${++n}/`;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'corral-coord-'));
    store = await openEmbeddedStore({ dataDir: dir });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a session keeps its lease alive past the TTL and revokes it on close', async () => {
    const s = await Session.open(store, { ttlSeconds: 1, keepaliveIntervalMs: 200 });
    const key = `${prefix()}k`;
    await store.put(key, 'v', { lease: s.lease });
    await sleep(1600);
    assert.equal(s.state, 'alive');
    assert.equal((await store.get(key)).kv?.value, 'v');
    await s.close();
    assert.equal(s.state, 'closed');
    assert.equal((await store.get(key)).kv, undefined);
  });

  it('a session that cannot renew reports loss before the store expires its lease', async () => {
    const { store: faulty, fail } = faultyStore(store);
    const s = await Session.open(faulty, { ttlSeconds: 1, keepaliveIntervalMs: 200 });
    const key = `${prefix()}k`;
    await store.put(key, 'v', { lease: s.lease });
    await sleep(300);
    fail.add('keepAlive');
    let lostAt = 0;
    const lost = s.done().then(() => (lostAt = performance.now()));
    const vanishedAfter = await waitFor('the lease to expire on the store', async () => (await store.get(key)).kv === undefined, 3000);
    const vanishedAt = performance.now();
    await lost;
    assert.equal(s.state, 'lost');
    assert.equal(s.reason, 'deadline');
    assert.ok(lostAt > 0 && lostAt < vanishedAt, `lost at ${lostAt}, key vanished at ${vanishedAt} (after ${vanishedAfter} ms)`);
    assert.ok(s.signal.aborted);
    await s.close();
  });

  it('a session whose lease is revoked elsewhere reports lease-gone at its next keepalive', async () => {
    const s = await Session.open(store, { ttlSeconds: 5, keepaliveIntervalMs: 100 });
    await store.revokeLease(s.lease);
    await Promise.race([s.done(), sleep(2000)]);
    assert.equal(s.state, 'lost');
    assert.equal(s.reason, 'lease-gone');
  });

  it('the first candidate leads; the next leads after it resigns, with a higher term', async () => {
    const p = prefix();
    const a = await Session.open(store, { ttlSeconds: 5, keepaliveIntervalMs: 500 });
    const b = await Session.open(store, { ttlSeconds: 5, keepaliveIntervalMs: 500 });
    const ea = new Election(store, p, a);
    const eb = new Election(store, p, b);
    const la = await ea.campaign('a');
    let bLeads = false;
    const lbPromise = eb.campaign('b').then((l) => ((bLeads = true), l));
    await sleep(200);
    assert.equal(bLeads, false, 'b must wait while a leads');
    assert.equal((await currentLeader(store, p))?.value, 'a');
    await ea.resign();
    const lb = await lbPromise;
    assert.equal(lb.value, 'b');
    assert.ok(lb.term > la.term, 'terms strictly increase');
    assert.equal((await currentLeader(store, p))?.value, 'b');
    await a.close();
    await b.close();
  });

  it("a dead leader's candidacy ends with its lease and the next candidate takes over", async () => {
    const p = prefix();
    const a = await Session.open(store, { ttlSeconds: 1, keepaliveIntervalMs: 200 });
    const b = await Session.open(store, { ttlSeconds: 5, keepaliveIntervalMs: 200 });
    await new Election(store, p, a).campaign('a');
    const t0 = performance.now();
    const lb = new Election(store, p, b).campaign('b');
    await a.close({ revoke: false }); // the leader dies: no revoke, no more keepalives
    const leader = await lb;
    const took = performance.now() - t0;
    assert.equal(leader.value, 'b');
    assert.ok(took < 2500, `takeover took ${took} ms (TTL 1 s)`);
    await b.close();
  });

  it('three candidates are served in campaign order', async () => {
    const p = prefix();
    const sessions = await Promise.all([0, 1, 2].map(() => Session.open(store, { ttlSeconds: 5, keepaliveIntervalMs: 500 })));
    const elections = sessions.map((s) => new Election(store, p, s));
    const order: string[] = [];
    const first = await (elections[0] as Election).campaign('c0');
    order.push(first.value);
    const rest = [1, 2].map((i) => (elections[i] as Election).campaign(`c${i}`).then((l) => order.push(l.value)));
    await sleep(100);
    await (elections[0] as Election).resign();
    await waitFor('c1 to lead', () => Promise.resolve(order.length === 2), 2000);
    await (elections[1] as Election).resign();
    await Promise.all(rest);
    assert.deepEqual(order, ['c0', 'c1', 'c2']);
    await Promise.all(sessions.map((s) => s.close()));
  });

  it('membership shows a node up while its session lives and down after', async () => {
    // The membership keys are global; this test owns them on this store.
    const s = await Session.open(store, { ttlSeconds: 5, keepaliveIntervalMs: 500 });
    await store.put(KEYS.registry + 'other', JSON.stringify({ address: '127.0.0.1:2' })); // registered, never started
    await joinMembership(store, s, 'me', { address: '127.0.0.1:1', pid: 1, startedAt: new Date().toISOString(), version: 'test' });
    const e = new Election(store, KEYS.masterElection, s);
    await e.campaign('me');
    let view = await readClusterView(store);
    assert.deepEqual(view.nodes.map((x) => [x.name, x.up]), [['me', true], ['other', false]]);
    assert.equal(view.master?.value, 'me');
    await s.close();
    view = await readClusterView(store);
    assert.deepEqual(view.nodes.map((x) => [x.name, x.up]), [['me', false], ['other', false]]);
    assert.equal(view.master, undefined);
  });
});
