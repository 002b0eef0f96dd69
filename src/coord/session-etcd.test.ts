import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { openEtcdStore, type EtcdStore } from '../store/etcd/index.js';
import type { LeaseId, Store } from '../store/store.js';
import { startEtcd, type EtcdCluster } from '../testkit/etcd.js';
import { sleep, waitUntil } from '../testkit/local.js';
import { Session } from './session.js';

/** The Store, recording when each keepalive was sent and whether it succeeded. */
function recordingKeepalives(inner: Store): { store: Store; sentOk: number[] } {
  const sentOk: number[] = [];
  const store: Store = Object.create(inner) as Store;
  store.keepAlive = async (id: LeaseId) => {
    const sentAt = performance.now();
    const r = await inner.keepAlive(id);
    sentOk.push(sentAt);
    return r;
  };
  return { store, sentOk };
}

describe('a session on a real etcd that stops answering', { timeout: 120_000 }, () => {
  let etcd: EtcdCluster;
  let inner: EtcdStore;
  let observer: EtcdStore;

  before(async () => {
    etcd = await startEtcd({ members: 1 });
    inner = await openEtcdStore({ endpoints: etcd.endpoints, requestTimeoutMs: 1000, keepAliveTimeoutMs: 500 });
    observer = await openEtcdStore({ endpoints: etcd.endpoints, requestTimeoutMs: 1000 });
  });
  after(async () => {
    await inner.close();
    await observer.close();
    await etcd.stop();
  });

  it('reports the loss before the lease can have expired on the server, counted from the last keepalive sent', async () => {
    const { store, sentOk } = recordingKeepalives(inner);
    const session = await Session.open(store, { ttlSeconds: 2, keepaliveIntervalMs: 250 });
    const ttlMs = session.ttlSeconds * 1000;
    await inner.put('/session-test/held', 'x', { lease: session.lease });
    await sleep(1000); // several keepalives succeed
    assert.ok(sentOk.length >= 2, 'keepalives succeeded before the pause');

    const member = etcd.members[0];
    assert.ok(member);
    etcd.kill(member, 'SIGSTOP');
    try {
      await Promise.race([session.done(), sleep(ttlMs + 3000, { ref: false })]);
      const lostAt = performance.now();
      assert.equal(session.state, 'lost', 'the session noticed within TTL + 3 s');
      assert.equal(session.reason, 'deadline');
      const lastOkSentAt = Math.max(...sentOk);
      // The server renews the lease on *receiving* a keepalive, which is after it was sent: it
      // cannot expire before lastOkSentAt + TTL. The session must have given up before that.
      assert.ok(lostAt < lastOkSentAt + ttlMs, `lost ${(lostAt - lastOkSentAt).toFixed(0)} ms after the last good keepalive was sent (TTL ${ttlMs} ms)`);
      // ... and not absurdly early: only after keepalives had failed for a while.
      assert.ok(lostAt - lastOkSentAt > ttlMs / 2, `lost only ${(lostAt - lastOkSentAt).toFixed(0)} ms after the last good keepalive`);
      // Stay paused past the TTL so the server-side lease is due to expire.
      await sleep(Math.max(0, lastOkSentAt + ttlMs + 500 - performance.now()));
    } finally {
      etcd.kill(member, 'SIGCONT');
    }
    // Once etcd runs again it expires the lease (the scenario was real: the lease did die), and a
    // keepalive on it now says so.
    await waitUntil('the lease to expire on etcd', async () => ((await observer.get('/session-test/held')).kv === undefined ? true : undefined), 10_000, 100);
    await assert.rejects(inner.keepAlive(session.lease), (err: Error & { code?: string }) => err.code === 'LEASE_NOT_FOUND');
    await session.close();
  });
});
