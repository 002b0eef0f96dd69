import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { StatusResponse } from '../api/types.js';
import { loadClusterConfig } from '../config/cluster-config.js';
import { startEtcd, type EtcdCluster } from '../testkit/etcd.js';
import { LocalClusterFixture, sleep, waitUntil } from '../testkit/local.js';

describe('a 3-agent corral cluster on a 3-member etcd cluster', { timeout: 300_000 }, () => {
  let etcd: EtcdCluster;
  const lc = new LocalClusterFixture(3);

  before(async () => {
    etcd = await startEtcd({ members: 3 });
    const r = await lc.corral(['local', 'up', '-n', '3', '--dir', lc.dir, '--store', `etcd://${etcd.endpoints.join(',')}`], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await lc.destroy();
    await etcd.stop();
  });

  const status = async (node?: string): Promise<StatusResponse> => (await lc.status(node)).status;

  it('forms: every node up and one master, on the etcd store', async () => {
    const { code, status: s } = await lc.status();
    assert.equal(code, 0);
    assert.equal(s.store.backend, 'etcd');
    assert.deepEqual(s.store.endpoints, etcd.endpoints);
    assert.equal(s.state, 'up');
    assert.deepEqual(s.nodes.map((n) => [n.name, n.state]), [['n1', 'up'], ['n2', 'up'], ['n3', 'up']]);
    assert.ok(s.master);
    assert.equal(s.nodes.filter((n) => n.coordinator).length, 0, 'no node hosts the store');
  });

  it('killing the etcd leader reports no node DOWN and does not change the corral master', async () => {
    const before = await status();
    const leader = await etcd.leader();
    etcd.kill(leader, 'SIGKILL');
    const t0 = performance.now();
    let unavailable = 0;
    // Watch the cluster through the election and well past a session TTL.
    while (performance.now() - t0 < 5000) {
      const r = await lc.corral(['status', '--json'], { timeoutMs: 15_000 });
      assert.ok(r.code === 0 || r.code === 1, r.stderr);
      const s = JSON.parse(r.stdout) as StatusResponse;
      assert.deepEqual(s.nodes.filter((n) => n.state === 'down').map((n) => n.name), [], 'a node was reported DOWN');
      if (r.code === 0) {
        assert.equal(s.master, before.master, 'the master changed');
        assert.equal(s.term, before.term, 'the term changed');
      } else {
        unavailable++; // mid-election, beyond a read's retries: master unknown, not changed
      }
      await sleep(200);
    }
    assert.ok(unavailable <= 2, `status reported the store unavailable ${unavailable} times during one election`);
    await etcd.restart(leader);
    const after = await status();
    assert.equal(after.master, before.master);
    assert.ok(after.nodes.every((n) => n.state === 'up'));
  });

  it('a killed agent is reported DOWN when its session TTL runs out, as on the embedded store', async () => {
    const ttlMs = loadClusterConfig(lc.config).timings.sessionTtlSeconds * 1000;
    const s = await status();
    const victim = s.nodes.find((n) => !n.master)?.name as string;
    process.kill(lc.pid(victim), 'SIGKILL');
    const killedAt = performance.now();
    await waitUntil(`${victim} DOWN`, async () => ((await status()).nodes.find((n) => n.name === victim)?.state === 'down' ? true : undefined), ttlMs + 5000);
    const took = performance.now() - killedAt;
    // etcd's leader checks expiry every 500 ms; add a second for that and for the status read.
    assert.ok(took <= ttlMs + 1000, `DOWN after ${took.toFixed(0)} ms (TTL ${ttlMs} ms)`);
    await lc.up();
  });

  it('with a majority of etcd stopped, corral says the store is unavailable and recovers without restarts', async () => {
    const pids = lc.pids();
    const [a, b] = etcd.members;
    assert.ok(a && b);
    etcd.kill(a, 'SIGSTOP');
    etcd.kill(b, 'SIGSTOP');
    try {
      // Past a session TTL: agents must neither hang nor report stale membership as current.
      await sleep(loadClusterConfig(lc.config).timings.sessionTtlSeconds * 1000 + 500);
      const t0 = performance.now();
      const r = await lc.corral(['status', '--json'], { timeoutMs: 20_000 });
      const took = performance.now() - t0;
      assert.equal(r.code, 1, r.stderr);
      const s = JSON.parse(r.stdout) as StatusResponse;
      assert.equal(s.state, 'store-unavailable');
      assert.equal(s.store.available, false);
      assert.equal(s.master, null);
      assert.match(s.note ?? '', /etcd cluster .* is unavailable/);
      assert.ok(took < 10_000, `status answered after ${took.toFixed(0)} ms`);
    } finally {
      etcd.kill(a, 'SIGCONT');
      etcd.kill(b, 'SIGCONT');
    }
    const { value } = await waitUntil('the cluster to recover', async () => {
      const s = await status();
      return s.state === 'up' && s.nodes.every((n) => n.state === 'up') ? s : undefined;
    }, 20_000, 200);
    assert.ok(value.master);
    assert.deepEqual(lc.pids(), pids, 'no agent was restarted');
  });
});

describe('an agent started while etcd is down', { timeout: 120_000 }, () => {
  let etcd: EtcdCluster;
  const lc = new LocalClusterFixture(1);
  before(async () => {
    etcd = await startEtcd({ members: 1 });
  });
  after(async () => {
    await lc.destroy();
    await etcd.stop();
  });

  it('starts anyway and joins once etcd answers', async () => {
    const member = etcd.members[0];
    assert.ok(member);
    etcd.kill(member, 'SIGSTOP');
    const up = lc.corral(['local', 'up', '-n', '1', '--dir', lc.dir, '--store', `etcd://${etcd.endpoints.join(',')}`], { timeoutMs: 90_000 });
    try {
      await sleep(4000);
      const r = await lc.corral(['status', '--json']);
      assert.equal(r.code, 1, 'the agent answers while etcd is down');
      assert.equal((JSON.parse(r.stdout) as StatusResponse).state, 'store-unavailable');
    } finally {
      etcd.kill(member, 'SIGCONT');
    }
    const formed = await up;
    assert.equal(formed.code, 0, formed.stderr);
    assert.match(await lc.log('n1'), /etcd does not answer yet; starting anyway/);
  });
});
