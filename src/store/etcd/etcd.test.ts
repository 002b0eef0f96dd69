// EtcdStore on a real single-member etcd, beyond the contract: 64-bit ids, compaction, connection
// failures, a member that dies and returns, and TLS with client certificates.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isCorralError, type ErrorCode } from '../../api/errors.js';
import { startEtcd, type EtcdCluster } from '../../testkit/etcd.js';
import { createCA, issueCertificate } from '../../transport/pki.js';
import type { WatchEvent } from '../store.js';
import { openEtcdStore, type EtcdStore } from './index.js';
import { RawEtcdClient } from './raw-bench-client.js';

const run = promisify(execFile);
const TWO_53 = 2n ** 53n;

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<Error> {
  let caught: unknown;
  await assert.rejects(promise, (err: unknown) => {
    caught = err;
    assert.ok(isCorralError(err, code), `expected CorralError ${code}, got ${String(err)}`);
    if (message) assert.match(err.message, message);
    return true;
  });
  return caught as Error;
}

/** The next event of a watch (undefined when it ended), or a failure after `ms`. */
async function nextEvent(it: AsyncIterator<WatchEvent>, ms = 5_000): Promise<WatchEvent | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const step = await Promise.race([it.next(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no watch event in time')), ms)))]);
    return step.done === true ? undefined : step.value;
  } finally {
    clearTimeout(timer);
  }
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address !== null && typeof address === 'object');
  return address.port;
}

describe('EtcdStore on one etcd member', () => {
  let etcd: EtcdCluster;
  let store: EtcdStore;

  before(async () => {
    etcd = await startEtcd();
    store = await openEtcdStore({ endpoints: etcd.endpoints });
  });
  after(async () => {
    await store?.close();
    await etcd?.stop();
  });

  it('keeps etcd’s lease ids (random 63-bit numbers) and revisions exact, as bigint', async () => {
    const granted = await store.grantLease(30);
    assert.equal(typeof granted.id, 'bigint');
    assert.ok(granted.id > TWO_53, `etcd granted lease ${granted.id}, expected an id past 2^53`);
    // A lease whose id is chosen to be far past 2^53, with low bits a double cannot hold.
    const id = 2n ** 62n + 12_345n;
    const raw = new RawEtcdClient(etcd.endpoints[0] as string);
    try {
      assert.equal((await raw.grant(30, id.toString())).ID, id.toString());
    } finally {
      raw.close();
    }
    const p = `big/${granted.id}/`;
    const watch = store.watch(p);
    const events = watch[Symbol.asyncIterator]();
    const put = await store.put(`${p}k`, 'v', { lease: id });
    assert.equal(typeof put.revision, 'bigint');
    assert.equal((await store.get(`${p}k`)).kv?.lease, id);
    assert.equal((await nextEvent(events))?.kv.lease, id);
    assert.equal((await store.keepAlive(id)).ttlSeconds, 30);
    const status = await store.leaseStatus(id);
    assert.equal(status.id, id);
    assert.deepEqual(status.keys, [`${p}k`]);
    const txn = await store.txn({ compare: [{ key: `${p}k`, target: 'lease', op: '=', value: id }], success: [] });
    assert.equal(txn.succeeded, true, 'a lease compare with the exact id holds');
    const off = await store.txn({ compare: [{ key: `${p}k`, target: 'lease', op: '=', value: id + 1n }], success: [] });
    assert.equal(off.succeeded, false, 'and with the id + 1 does not (a double could not tell them apart)');
    await store.revokeLease(id);
    const gone = await nextEvent(events);
    assert.equal(gone?.type, 'delete');
    watch.close();
    await store.revokeLease(granted.id);
    await rejectsWith(store.keepAlive(id), 'LEASE_NOT_FOUND');
  });

  it('a watch from a compacted revision throws COMPACTED, and naming the oldest revision kept', async () => {
    const first = await store.put('compact/a', '1');
    await store.put('compact/a', '2');
    const latest = await store.put('compact/a', '3');
    await run('etcdctl', ['--endpoints', etcd.endpoints[0] as string, 'compact', latest.revision.toString()], {
      timeout: 10_000,
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    const watch = store.watch('compact/', { fromRevision: first.revision });
    await rejectsWith(nextEvent(watch[Symbol.asyncIterator]()), 'COMPACTED', new RegExp(`oldest revision etcd keeps is ${latest.revision}`));
    // From the compaction revision on, history is there.
    const ok = store.watch('compact/', { fromRevision: latest.revision });
    assert.equal((await nextEvent(ok[Symbol.asyncIterator]()))?.kv.value, '3');
    ok.close();
  });

  it('a consumer that falls thousands of events behind gets every one, in order (the stream pauses and resumes)', async () => {
    const n = 6_000;
    const watch = store.watch('slow/');
    const events = watch[Symbol.asyncIterator]();
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < n) await store.put(`slow/${next++ % 500}`, 'x');
      }),
    );
    let last = 0n;
    for (let i = 0; i < n; i++) {
      const ev = await nextEvent(events);
      assert.ok(ev !== undefined && ev.revision > last, `event ${i} out of order`);
      last = ev.revision;
    }
    assert.equal(last, await store.revision());
    watch.close();
  });

  it('a txn that puts one key twice is refused by etcd with BAD_REQUEST', async () => {
    await rejectsWith(
      store.txn({ compare: [], success: [{ type: 'put', key: 'dup', value: '1' }, { type: 'delete', key: 'dup' }] }),
      'BAD_REQUEST',
      /duplicate key/,
    );
  });

  it('opening fails with STORE_UNAVAILABLE within connectTimeoutMs, naming the endpoint', async () => {
    const port = await closedPort();
    const t0 = performance.now();
    const err = await rejectsWith(openEtcdStore({ endpoints: [`127.0.0.1:${port}`], connectTimeoutMs: 500 }), 'STORE_UNAVAILABLE');
    const ms = performance.now() - t0;
    assert.ok(ms >= 400 && ms < 1_500, `gave up after ${Math.round(ms)} ms`);
    assert.match(err.message, new RegExp(`etcd at 127\\.0\\.0\\.1:${port} did not answer within 500 ms`));
    assert.ok(!err.message.includes('\n'));
  });

  it('refuses a malformed endpoint with CONFIG_INVALID before connecting', async () => {
    await rejectsWith(openEtcdStore({ endpoints: ['127.0.0.1'] }), 'CONFIG_INVALID', /HOST:PORT/);
  });
});

describe('EtcdStore when its only member dies and returns', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  it('an open watch throws STORE_UNAVAILABLE, calls fail fast, and the same store recovers after a restart', async () => {
    const store = await openEtcdStore({ endpoints: etcd.endpoints, requestTimeoutMs: 1_000 });
    try {
      const watch = store.watch('w/');
      const events = watch[Symbol.asyncIterator]();
      const before = await store.put('w/a', '1');
      assert.equal((await nextEvent(events))?.revision, before.revision);
      etcd.kill(etcd.members[0] as (typeof etcd.members)[number], 'SIGKILL');
      const err = await rejectsWith(nextEvent(events), 'STORE_UNAVAILABLE');
      assert.match(err.message, /etcd at 127\.0\.0\.1:\d+ is unavailable \(Watch on/);
      const t0 = performance.now();
      await rejectsWith(store.get('w/a'), 'STORE_UNAVAILABLE');
      assert.ok(performance.now() - t0 < 1_200, 'within the deadline');

      await etcd.restart(etcd.members[0] as (typeof etcd.members)[number]);
      const deadline = performance.now() + 10_000;
      for (;;) {
        try {
          await store.put('w/b', '2');
          break;
        } catch (e) {
          assert.ok(isCorralError(e, 'STORE_UNAVAILABLE'), String(e));
          assert.ok(performance.now() < deadline, 'the store did not recover within 10 s of the restart');
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      // Watch again from the last revision seen + 1: nothing is lost.
      const again = store.watch('w/', { fromRevision: before.revision + 1n });
      const next = await nextEvent(again[Symbol.asyncIterator]());
      assert.equal(next?.kv.key, 'w/b');
      again.close();
    } finally {
      await store.close();
    }
  });
});

describe('EtcdStore over TLS', () => {
  const ca = createCA({ clusterName: 'etcd-test' });
  const server = issueCertificate({ ca, commonName: 'etcd', role: 'node', clusterName: 'etcd-test', ipAddresses: ['127.0.0.1'] });
  const client = issueCertificate({ ca, commonName: 'corral', role: 'node', clusterName: 'etcd-test' });
  let etcd: EtcdCluster;

  before(async () => {
    etcd = await startEtcd({ tls: { ca: ca.certPem, cert: server.certPem, key: server.keyPem ?? '', clientCertAuth: true } });
  });
  after(async () => {
    await etcd?.stop();
  });

  it('works with the CA and a client certificate', async () => {
    assert.match(etcd.members[0]?.clientUrl ?? '', /^https:/);
    const store = await openEtcdStore({
      endpoints: etcd.members.map((m) => m.clientUrl),
      tls: { ca: ca.certPem, cert: client.certPem, key: client.keyPem ?? '' },
    });
    try {
      const put = await store.put('tls/a', 'x');
      assert.equal((await store.get('tls/a')).kv?.modRevision, put.revision);
    } finally {
      await store.close();
    }
  });

  it('fails to open, saying TLS, when the CA did not sign the server’s certificate', async () => {
    const other = createCA({ clusterName: 'other' });
    const err = await rejectsWith(
      openEtcdStore({ endpoints: etcd.endpoints, tls: { ca: other.certPem, cert: client.certPem, key: client.keyPem ?? '' }, connectTimeoutMs: 1_000 }),
      'TLS',
    );
    assert.match(err.message, /certificate/i);
  });

  it('fails to open when etcd requires a client certificate and none is given', async () => {
    await assert.rejects(openEtcdStore({ endpoints: etcd.endpoints, tls: { ca: ca.certPem }, connectTimeoutMs: 1_000 }), (err: unknown) => {
      assert.ok(isCorralError(err, 'TLS') || isCorralError(err, 'STORE_UNAVAILABLE'), String(err));
      return true;
    });
  });
});
