import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CorralClient } from '../client/client.js';
import { loadClusterConfig } from '../config/cluster-config.js';
import { LocalClusterFixture, sleep, waitUntil } from '../testkit/local.js';
import { isProcessAlive } from '../util/process.js';

describe('a local 3-node cluster on the embedded store', { timeout: 240_000 }, () => {
  const lc = new LocalClusterFixture(3);

  before(async () => {
    const r = await lc.up();
    assert.match(r.stdout, /cluster local formed in \d+\.\d+ s: 3 nodes up, master n\d/);
  });
  after(() => lc.destroy());

  it('forms with every node up, its address, and one master', async () => {
    const { code, status } = await lc.status();
    assert.equal(code, 0);
    assert.equal(status.cluster, 'local');
    assert.equal(status.state, 'up');
    assert.deepEqual(status.nodes.map((n) => [n.name, n.state]), [['n1', 'up'], ['n2', 'up'], ['n3', 'up']]);
    for (const n of status.nodes) assert.match(n.address, /^127\.0\.0\.1:\d+$/);
    assert.ok(status.master && ['n1', 'n2', 'n3'].includes(status.master));
    assert.equal(status.nodes.filter((n) => n.master).length, 1);
  });

  it('prints a readable status table', async () => {
    const r = await lc.corral(['status']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^cluster: local - UP$/m);
    assert.match(r.stdout, /^nodes: 3 \[0 DOWN\/3 UP\]$/m);
    assert.match(r.stdout, /^n2\s+UP\s+127\.0\.0\.1:\d+\s+\d+s/m);
  });

  it('up on a running cluster says so and changes nothing', async () => {
    const before = lc.pids();
    const r = await lc.corral(['local', 'up', '--dir', lc.dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /already up.*nothing changed/);
    assert.deepEqual(lc.pids(), before);
  });

  it('ping --mesh reports a round trip to every node', async () => {
    const r = await lc.corral(['ping', '--mesh', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { nodes: { name: string; ok: boolean; rttMs: number }[] };
    assert.deepEqual(out.nodes.map((n) => [n.name, n.ok]), [['n1', true], ['n2', true], ['n3', true]]);
    for (const n of out.nodes) assert.ok(n.rttMs > 0 && n.rttMs < 5000);
  });

  it('agents log JSON lines to stderr when it is not a terminal', () => {
    const lines = readFileSync(path.join(lc.dir, 'n2', 'agent.log'), 'utf8').trim().split('\n');
    const entries = lines.map((l) => JSON.parse(l) as { msg: string; level: number; node: string });
    assert.ok(entries.some((e) => e.msg === 'agent started' && e.node === 'n2'));
    assert.ok(entries.some((e) => e.msg === 'joined the cluster'));
  });

  it('the agent socket is private (mode 0600)', async () => {
    const { statSync } = await import('node:fs');
    const mode = statSync(path.join(lc.dir, 'n1', 'agent.sock')).mode & 0o777;
    assert.equal(mode, 0o600);
  });

  it('a killed agent is reported DOWN within 3 s and ping fails until it returns', async () => {
    const { status } = await lc.status();
    const victim = status.nodes.find((n) => !n.master && !n.coordinator)?.name as string;
    const pid = lc.pid(victim);
    process.kill(pid, 'SIGKILL');
    const killedAt = performance.now();
    await waitUntil(`${victim} to be reported DOWN`, async () => {
      const s = (await lc.status()).status;
      return s.nodes.find((n) => n.name === victim)?.state === 'down' ? true : undefined;
    }, 6000);
    const detectedMs = performance.now() - killedAt;
    assert.ok(detectedMs <= 3000, `DOWN reported ${detectedMs.toFixed(0)} ms after the kill`);
    const ping = await lc.corral(['ping', '--mesh', '--timeout', '0.5']);
    assert.equal(ping.code, 4);
    assert.match(ping.stderr, new RegExp(`did not answer: ${victim}`));
    await lc.up();
    assert.notEqual(lc.pid(victim), pid);
  });

  it('a new master is elected within 3 s of the old master dying', async () => {
    const config = loadClusterConfig(lc.config);
    let { status } = await lc.status();
    if (status.master === config.coordinator) {
      // The coordinator's death halts the embedded store; hand mastership to another node first.
      const client = new CorralClient(config, { node: status.master });
      await client.stepDown();
      await client.close();
      ({ value: status } = await waitUntil('another master', async () => {
        const s = (await lc.status()).status;
        return s.master && s.master !== config.coordinator ? s : undefined;
      }, 5000));
    }
    const old = status.master as string;
    const oldTerm = BigInt(status.term as string);
    process.kill(lc.pid(old), 'SIGKILL');
    const killedAt = performance.now();
    const { value: next } = await waitUntil('a new master', async () => {
      const s = (await lc.status()).status;
      return s.master && s.master !== old ? s : undefined;
    }, 6000);
    const tookMs = performance.now() - killedAt;
    assert.ok(tookMs <= 3000, `new master after ${tookMs.toFixed(0)} ms`);
    assert.ok(BigInt(next.term as string) > oldTerm, 'the new term is higher');
    await lc.up();
  });

  it('SIGTERM stops an agent cleanly: exit, DOWN at once, socket removed', async () => {
    const pid = lc.pid('n3');
    const socket = path.join(lc.dir, 'n3', 'agent.sock');
    assert.ok(existsSync(socket));
    process.kill(pid, 'SIGTERM');
    await lc.waitForDeath(pid);
    const { status } = await lc.status();
    assert.equal(status.nodes.find((n) => n.name === 'n3')?.state, 'down', 'the session was revoked on the way out');
    assert.equal(existsSync(socket), false);
    const log = readFileSync(path.join(lc.dir, 'n3', 'agent.log'), 'utf8');
    assert.match(log, /"msg":"agent stopped"/);
    await lc.up();
  });

  it('ping --mesh lists a hung node as not answering, within its timeout', async () => {
    const pid = lc.pid('n3');
    process.kill(pid, 'SIGSTOP');
    try {
      const t0 = performance.now();
      const r = await lc.corral(['ping', '--mesh', '--json', '--timeout', '1.5']);
      const took = performance.now() - t0;
      assert.equal(r.code, 4, r.stderr);
      const out = JSON.parse(r.stdout) as { nodes: { name: string; ok: boolean; error: string | null }[] };
      assert.deepEqual(out.nodes.map((n) => [n.name, n.ok]), [['n1', true], ['n2', true], ['n3', false]]);
      assert.match(out.nodes[2]?.error ?? '', /within 1500 ms/);
      assert.ok(took < 8000, `ping took ${took.toFixed(0)} ms`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitUntil('n3 to be up again', async () => ((await lc.status()).status.nodes.every((n) => n.state === 'up') ? true : undefined), 10_000);
    await lc.up();
  });

  it('when the coordinator dies, status says the store is unavailable; the cluster recovers when it returns', async () => {
    const before = (await lc.status()).status;
    const pid = lc.pid('n1');
    process.kill(pid, 'SIGKILL');
    await lc.waitForDeath(pid);
    const { code, status } = await lc.status('n2');
    assert.equal(code, 1);
    assert.equal(status.state, 'store-unavailable');
    assert.equal(status.store.available, false);
    assert.equal(status.master, null);
    assert.match(status.note ?? '', /cannot make decisions/);
    assert.deepEqual(status.nodes.map((n) => [n.name, n.state]), [['n1', 'down'], ['n2', 'up'], ['n3', 'up']]);
    const human = await lc.corral(['status', '--node', 'n2']);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /STORE UNAVAILABLE/);
    // Longer than a session TTL: every agent's session is lost, so recovery means a real rejoin.
    await sleep(2500);
    await lc.up();
    // The store restores the old leases with a fresh TTL; within that TTL every live agent rejoins
    // with a new session and a new master is elected.
    const { value: after } = await waitUntil('a new term with every node up', async () => {
      const s = (await lc.status('n3')).status;
      return s.state === 'up' && s.nodes.every((n) => n.state === 'up') && BigInt(s.term ?? '0') > BigInt(before.term as string) ? s : undefined;
    }, 5000);
    assert.equal(after.answeredBy, 'n3');
    assert.match(await lc.log('n2'), /session lost; rejoining the cluster/);
  });

  it('down stops every agent and leaves no process behind', async () => {
    const pids = lc.pids();
    assert.equal(pids.length, 3);
    const r = await lc.corral(['local', 'down', '--dir', lc.dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /stopped n1 \(pid \d+\), n2 \(pid \d+\), n3 \(pid \d+\)/);
    assert.deepEqual(pids.filter(isProcessAlive), []);
    const again = await lc.corral(['local', 'down', '--dir', lc.dir]);
    assert.match(again.stdout, /nothing to stop/);
  });
});
