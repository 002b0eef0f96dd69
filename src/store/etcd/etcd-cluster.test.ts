// EtcdStore on a real 3-member etcd when members fail: a killed member (the one in use, or the
// leader) costs at most a few calls and the client moves on; a stopped member costs one deadline;
// with a majority or all members stopped every call fails with STORE_UNAVAILABLE within its
// deadline (never hangs), and the same store recovers when the members continue.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isCorralError } from '../../api/errors.js';
import { startEtcd, type EtcdCluster, type EtcdMember } from '../../testkit/etcd.js';
import type { WatchEvent } from '../store.js';
import { openEtcdStore, type EtcdStore } from './index.js';

const REQUEST_TIMEOUT_MS = 1_000;
/** What a deadline may overrun by on a busy test machine. */
const OVERRUN_MS = 400;

const run = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `op` until it succeeds (bounded); returns how many attempts failed, all with STORE_UNAVAILABLE. */
async function untilServed(op: () => Promise<unknown>, limitMs: number): Promise<number> {
  const t0 = performance.now();
  for (let failures = 0; ; failures++) {
    try {
      await op();
      return failures;
    } catch (err) {
      assert.ok(isCorralError(err, 'STORE_UNAVAILABLE'), `expected STORE_UNAVAILABLE, got ${String(err)}`);
      if (process.env.CORRAL_TEST_DEBUG) console.log(Math.round(performance.now() - t0), err.message);
      assert.ok(performance.now() - t0 < limitMs, `not served within ${limitMs} ms (${failures + 1} failures; last: ${err.message})`);
      await sleep(50);
    }
  }
}

/** Asserts `op` fails with STORE_UNAVAILABLE within the request deadline. */
async function failsInTime(what: string, op: () => Promise<unknown>): Promise<void> {
  const t0 = performance.now();
  await assert.rejects(op(), (err: unknown) => {
    assert.ok(isCorralError(err, 'STORE_UNAVAILABLE'), `${what}: expected STORE_UNAVAILABLE, got ${String(err)}`);
    return true;
  });
  const ms = performance.now() - t0;
  assert.ok(ms < REQUEST_TIMEOUT_MS + OVERRUN_MS, `${what} took ${Math.round(ms)} ms to fail; the deadline is ${REQUEST_TIMEOUT_MS} ms`);
}

async function nextEvent(it: AsyncIterator<WatchEvent>, ms = 5_000): Promise<WatchEvent | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const step = await Promise.race([it.next(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no watch event in time')), ms)))]);
    return step.done === true ? undefined : step.value;
  } finally {
    clearTimeout(timer);
  }
}

describe('EtcdStore on a 3-member etcd', () => {
  let etcd: EtcdCluster;
  let store: EtcdStore;
  const memberInUse = (): EtcdMember => {
    const current = store.describe().current;
    const m = etcd.members.find((x) => x.endpoint === current);
    assert.ok(m, current);
    return m;
  };

  before(async () => {
    etcd = await startEtcd({ members: 3 });
  });
  after(async () => {
    await etcd?.stop();
  });
  afterEach(async () => {
    await store?.close();
    // Bring every member back for the next test: continue stopped ones, restart killed ones.
    for (const m of etcd.members) {
      if (etcd.running(m)) etcd.kill(m, 'SIGCONT');
      else await etcd.restart(m);
    }
    await etcd.leader();
  });
  const open = async (): Promise<EtcdStore> =>
    (store = await openEtcdStore({ endpoints: etcd.endpoints, requestTimeoutMs: REQUEST_TIMEOUT_MS, keepAliveTimeoutMs: REQUEST_TIMEOUT_MS }));

  it('moves to another member when the one in use (a follower) is SIGKILLed: only the call in flight fails', async () => {
    await open();
    const lease = await store.grantLease(10);
    await store.put('kill/a', '1', { lease: lease.id });
    const watch = store.watch('kill/');
    const events = watch[Symbol.asyncIterator]();
    const victim = memberInUse();
    const leader = await etcd.leader();
    if (leader === victim) {
      // Make the member in use a follower, so that the kill costs no election.
      const other = etcd.members.find((m) => m !== victim) as EtcdMember;
      await run('etcdctl', ['--endpoints', victim.endpoint, 'move-leader', BigInt(other.id).toString(16)], { timeout: 10_000, env: { ...process.env, ETCDCTL_API: '3' } });
      assert.equal(await etcd.leader(), other);
    }
    etcd.kill(victim, 'SIGKILL');
    const failures = await untilServed(() => store.put('kill/b', '2'), 2_000);
    assert.ok(failures <= 1, `${failures} calls failed before the client moved on`);
    assert.notEqual(memberInUse(), victim);
    assert.equal(await untilServed(() => store.keepAlive(lease.id), 1_000), 0, 'the keepalive stream moved too');
    assert.equal((await store.get('kill/a')).kv?.value, '1', 'the leased key lived on');
    // The watch was on the killed member: it ends with STORE_UNAVAILABLE, and a new one from the
    // last revision seen + 1 misses nothing.
    await assert.rejects(nextEvent(events), (err: unknown) => isCorralError(err, 'STORE_UNAVAILABLE'));
    const again = store.watch('kill/', { fromRevision: (await store.get('kill/a')).kv?.modRevision ?? 0n });
    const it2 = again[Symbol.asyncIterator]();
    const seen = [await nextEvent(it2), await nextEvent(it2)];
    assert.deepEqual(
      seen.map((e) => e?.kv.key),
      ['kill/a', 'kill/b'],
    );
    again.close();
  });

  it('is served again within an election and a deadline when the leader is SIGKILLed, and leases survive', async () => {
    await open();
    const lease = await store.grantLease(10);
    const leader = await etcd.leader();
    etcd.kill(leader, 'SIGKILL');
    const t0 = performance.now();
    // A write in flight on a follower when the leader dies is lost with it and waits out its
    // deadline; then "no leader" until the election ends (at most 2 election timeouts).
    const limit = REQUEST_TIMEOUT_MS + 2 * etcd.electionTimeoutMs + OVERRUN_MS;
    await untilServed(() => store.put('leader/a', '1'), limit);
    await untilServed(() => store.keepAlive(lease.id), limit - (performance.now() - t0));
    assert.ok(performance.now() - t0 < limit, `served again after ${Math.round(performance.now() - t0)} ms`);
    assert.notEqual(await etcd.leader(), leader);
  });

  it('a SIGSTOPped member in use costs one deadline, then the client uses another', async () => {
    await open();
    await store.put('stop/a', '1');
    const victim = memberInUse();
    etcd.kill(victim, 'SIGSTOP');
    await failsInTime('get on a stopped member', () => store.get('stop/a'));
    assert.notEqual(memberInUse(), victim);
    const failures = await untilServed(() => store.put('stop/b', '2'), 5_000);
    assert.ok(failures <= 2, `${failures} more calls failed`);
  });

  it('with a majority SIGSTOPped, calls fail with STORE_UNAVAILABLE within the deadline; the store recovers after SIGCONT', async () => {
    await open();
    const lease = await store.grantLease(30);
    const survivor = memberInUse();
    const stopped = etcd.members.filter((m) => m !== survivor);
    for (const m of stopped) etcd.kill(m, 'SIGSTOP');
    // Whichever member the client tries, none can commit or read linearizably.
    for (let i = 0; i < 3; i++) {
      await failsInTime(`put #${i}`, () => store.put('majority/a', 'x'));
      await failsInTime(`get #${i}`, () => store.get('majority/a'));
      await failsInTime(`keepAlive #${i}`, () => store.keepAlive(lease.id));
    }
    for (const m of stopped) etcd.kill(m, 'SIGCONT');
    await untilServed(() => store.put('majority/a', 'back'), 10_000);
    await untilServed(() => store.keepAlive(lease.id), 5_000);
    assert.equal((await store.get('majority/a')).kv?.value, 'back');
  });

  it('with every member SIGSTOPped, nothing hangs: each call fails within its deadline; after SIGCONT the same store serves again', async () => {
    await open();
    const lease = await store.grantLease(30);
    await store.put('all/a', '1');
    for (const m of etcd.members) etcd.kill(m, 'SIGSTOP');
    // A watch whose creation etcd cannot confirm holds back later requests, but within their deadline.
    const pending = store.watch('all/');
    await failsInTime('put right after watch()', () => store.put('all/a', '2'));
    pending.close();
    await failsInTime('get', () => store.get('all/a'));
    await failsInTime('put', () => store.put('all/a', '2'));
    await failsInTime('txn', () => store.txn({ compare: [], success: [{ type: 'put', key: 'all/b', value: 'x' }] }));
    await failsInTime('keepAlive', () => store.keepAlive(lease.id));
    await failsInTime('grantLease', () => store.grantLease(5));
    await failsInTime('leaseStatus', () => store.leaseStatus(lease.id));
    await failsInTime('revision', () => store.revision());
    await failsInTime('watch', async () => {
      for await (const _ of store.watch('all/')) break;
    });
    for (const m of etcd.members) etcd.kill(m, 'SIGCONT');
    // A write that timed out has an unknown outcome: a stopped member may still apply it after
    // SIGCONT (even after a later write), so recovery is checked on a key nothing wrote before.
    await untilServed(() => store.put('all/after', '3'), 10_000);
    await untilServed(() => store.keepAlive(lease.id), 5_000);
    assert.equal((await store.get('all/after')).kv?.value, '3');
    // Watches work again too.
    const watch = store.watch('all/');
    const events = watch[Symbol.asyncIterator]();
    const put = await store.put('all/c', 'x');
    assert.equal((await nextEvent(events))?.revision, put.revision);
    watch.close();
  });
});
