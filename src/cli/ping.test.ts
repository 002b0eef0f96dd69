// `corral ping` through the real CLI (issue 6, point 2): every node checked end to end (connect,
// authenticate, run `true`) over a local 3-node cluster's agents and over a real sshd on loopback;
// ON with latency, OFF with a short reason, natural order, exit 4 when some node is OFF, exit 2
// for an unknown node, colour only on a terminal without NO_COLOR; and the agents' own round
// trips under --mesh.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { compareNodeNames, offReason } from '../fanout/ping.js';
import { runCorral, type RunResult } from '../testkit/cli.js';
import { LocalClusterFixture } from '../testkit/local.js';
import { closedPort, sshdMissing, startSshd, type Sshd } from '../testkit/sshd.js';
import { runCorralInTty, scriptMissing } from '../testkit/tty.js';

const ESC = '\u001b';

interface PingJson {
  via: string;
  timeoutMs: number;
  nodes: { node: string; state: 'ON' | 'OFF'; ms: number; reason: string | null; error: string | null }[];
  summary: { on: number; off: number };
  exitCode: number;
}

/** The table's rows: node, state, latency in ms, reason. */
function rows(stdout: string): [string, string, number, string][] {
  const lines = stdout.trim().split('\n');
  assert.match(lines[0] as string, /^NODE\s+STATE\s+LATENCY\s+REASON$/);
  return lines.slice(1).map((l) => {
    const m = /^(\S+)\s+(ON|OFF)\s+(\d+\.\d) ms\s*(.*)$/.exec(l);
    assert.ok(m, `not a ping row: ${JSON.stringify(l)}`);
    return [m[1] as string, m[2] as string, Number(m[3]), m[4] as string];
  });
}

describe('ping: natural node order and reasons', () => {
  it('sorts n2 before n10 and names failures in one short phrase', () => {
    assert.deepEqual(['n10', 'n2', 'web1', 'n1', 'n01', '127.0.0.10', '127.0.0.2'].sort(compareNodeNames), ['127.0.0.2', '127.0.0.10', 'n1', 'n01', 'n2', 'n10', 'web1']);
    assert.equal(offReason('UNAVAILABLE', 'nothing listens on https://127.0.0.1:1 (ECONNREFUSED)'), 'unreachable');
    assert.equal(offReason('UNAVAILABLE', 'ssh: connect to host 127.0.0.3 port 22: Connection refused'), 'unreachable');
    assert.equal(offReason('TIMEOUT', 'https://127.0.0.1:1 did not answer POST /v1/node/exec within 1000 ms'), 'timed out');
    assert.equal(offReason('UNAVAILABLE', 'ssh: connect to host 10.1.1.1 port 22: Connection timed out'), 'timed out');
    assert.equal(offReason('FORBIDDEN', 'node b1 may not call POST /v1/node/exec'), 'auth refused');
    assert.equal(offReason('UNAVAILABLE', 'me@127.0.0.1: Permission denied (publickey).'), 'auth refused');
    assert.equal(offReason('UNAVAILABLE', 'Host key verification failed.'), 'auth refused');
  });
});

describe('ping over the agents of a local 3-node cluster', { timeout: 120_000 }, () => {
  const lc = new LocalClusterFixture(3);
  const corral = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> => lc.corral(args, { timeoutMs: 30_000, env });

  before(async () => {
    await lc.up();
  });
  after(async () => {
    await lc.destroy();
  });

  it('every node ON with its latency, in order, exit 0', async () => {
    const r = await corral(['ping']);
    assert.equal(r.code, 0, r.stderr);
    const table = rows(r.stdout);
    assert.deepEqual(table.map(([n, s, , reason]) => [n, s, reason]), [['n1', 'ON', ''], ['n2', 'ON', ''], ['n3', 'ON', '']]);
    for (const [, , ms] of table) assert.ok(ms > 0 && ms < 5000, `latency ${ms}`);
    assert.match(r.stderr, /^ON: 3 \(n\[1-3\]\)$/m);
    assert.ok(!(r.stdout + r.stderr).includes(ESC), 'no colour without a terminal');
  });

  it('--json: one document with every node, a summary and the exit code; -w picks and orders the nodes', async () => {
    const r = await corral(['ping', '--json', '-w', 'n[3,1]', '-t', '2.5']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as PingJson;
    assert.match(doc.via, /^agent /);
    assert.equal(doc.timeoutMs, 2500);
    assert.deepEqual(doc.nodes.map((n) => [n.node, n.state, n.reason, n.error]), [['n1', 'ON', null, null], ['n3', 'ON', null, null]]);
    for (const n of doc.nodes) assert.equal(typeof n.ms, 'number');
    assert.deepEqual(Object.keys(doc.nodes[0] as object).sort(), ['error', 'ms', 'node', 'reason', 'state']);
    assert.deepEqual(doc.summary, { on: 2, off: 0 });
    assert.equal(doc.exitCode, 0);
  });

  it('usage errors exit 2: an unknown node is named, a timeout in milliseconds is refused', async () => {
    const unknown = await corral(['ping', '-w', 'n1,nope']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown node nope/);
    assert.equal(unknown.stdout, '');
    const ms = await corral(['ping', '--timeout', '500']);
    assert.equal(ms.code, 2);
    assert.match(ms.stderr, /--timeout takes seconds/);
    const meshW = await corral(['ping', '--mesh', '-w', 'n1']);
    assert.equal(meshW.code, 2);
  });

  it('--mesh: the round trip from the agent reached to every agent, as before', async () => {
    const r = await corral(['ping', '--mesh', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { nodes: { name: string; ok: boolean; rttMs: number }[] };
    assert.deepEqual(out.nodes.map((n) => [n.name, n.ok]), [['n1', true], ['n2', true], ['n3', true]]);
  });

  it('on a terminal the state is coloured; never with NO_COLOR', { skip: scriptMissing() }, async () => {
    const tty = await runCorralInTty(['ping'], { env: { CORRAL_CONFIG: lc.config }, timeoutMs: 30_000 });
    assert.equal(tty.code, 0, tty.stdout);
    assert.ok(tty.stdout.includes(`${ESC}[32mON   ${ESC}[0m`), JSON.stringify(tty.stdout));
    const plain = await runCorralInTty(['ping'], { env: { CORRAL_CONFIG: lc.config, NO_COLOR: '1' }, timeoutMs: 30_000 });
    assert.equal(plain.code, 0, plain.stdout);
    assert.match(plain.stdout, /n2 +ON +\d/);
    assert.ok(!plain.stdout.includes(ESC), JSON.stringify(plain.stdout));
  });

  it('a hung agent (SIGSTOP): its node OFF (timed out) within the timeout, the others ON', async () => {
    const pid = lc.pid('n3');
    process.kill(pid, 'SIGSTOP');
    try {
      const t0 = performance.now();
      const r = await corral(['ping', '--timeout', '1']);
      const took = performance.now() - t0;
      assert.equal(r.code, 4, r.stdout + r.stderr);
      assert.deepEqual(rows(r.stdout).map(([n, s, , reason]) => [n, s, reason]), [['n1', 'ON', ''], ['n2', 'ON', ''], ['n3', 'OFF', 'timed out']]);
      assert.ok(took < 6000, `ping took ${took.toFixed(0)} ms with a 1 s timeout`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  it('an agent killed by pid: its node OFF (unreachable), the others ON, exit 4; --mesh agrees', async () => {
    const pid = lc.pid('n2');
    process.kill(pid, 'SIGKILL');
    await lc.waitForDeath(pid);
    const r = await corral(['ping']);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.deepEqual(rows(r.stdout).map(([n, s, , reason]) => [n, s, reason]), [['n1', 'ON', ''], ['n2', 'OFF', 'unreachable'], ['n3', 'ON', '']]);
    assert.match(r.stderr, /corral ping: n2: unreachable: .*ECONNREFUSED/);
    assert.match(r.stderr, /ON: 2 \(n\[1,3\]\), OFF: 1 \(n2\)/);
    const j = JSON.parse((await corral(['ping', '--json'])).stdout) as PingJson;
    assert.deepEqual(j.nodes.map((n) => [n.node, n.state, n.reason]), [['n1', 'ON', null], ['n2', 'OFF', 'unreachable'], ['n3', 'ON', null]]);
    assert.match(j.nodes[1]?.error ?? '', /ECONNREFUSED/);
    assert.equal(j.exitCode, 4);
    const m = await corral(['ping', '--mesh']);
    assert.equal(m.code, 4);
    assert.match(m.stderr, /did not answer: n2/);
  });
});


describe('ping over --ssh with a real sshd', { skip: sshdMissing(), timeout: 120_000 }, () => {
  let sshd: Sshd;
  const HOSTS = ['127.0.0.10', '127.0.0.2', '127.0.0.1'];
  const corral = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> => runCorral(['ping', '--ssh', ...args], { env: { ...sshd.env, ...env }, timeoutMs: 30_000 });

  before(async () => {
    sshd = await startSshd({ addresses: HOSTS });
  });
  after(async () => {
    await sshd?.stop();
  });

  it('every host ON, in natural order (127.0.0.2 before 127.0.0.10)', async () => {
    const r = await corral(['--hosts', sshd.hostsFile(HOSTS)]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(rows(r.stdout).map(([n, s]) => [n, s]), [['127.0.0.1', 'ON'], ['127.0.0.2', 'ON'], ['127.0.0.10', 'ON']]);
    const j = JSON.parse((await corral(['--hosts', sshd.hostsFile(HOSTS), '--json', '-w', '127.0.0.2'])).stdout) as PingJson;
    assert.match(j.via, /^ssh /);
    assert.deepEqual(j.nodes.map((n) => [n.node, n.state]), [['127.0.0.2', 'ON']]);
  });

  it('a host on a port nobody listens on is OFF (unreachable), a host whose key is not known is OFF (auth refused), exit 4', async () => {
    const port = await closedPort();
    const hosts = sshd.hostsFile(['127.0.0.1', `127.0.0.2:${port}`], 'hosts-closed');
    const r = await corral(['--hosts', hosts]);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.deepEqual(rows(r.stdout).map(([n, s, , reason]) => [n, s, reason]), [['127.0.0.1', 'ON', ''], ['127.0.0.2', 'OFF', 'unreachable']]);
    assert.match(r.stderr, /127\.0\.0\.2: unreachable: .*Connection refused/);
    // known_hosts lists only 127.0.0.1: ssh in batch mode refuses the others.
    const config = sshd.configWithKnownHosts(sshd.knownHostsLines(['127.0.0.1']), 'only-one');
    const auth = await corral(['--hosts', sshd.hostsFile(['127.0.0.1', '127.0.0.2'], 'hosts-two'), '--json'], { CORRAL_SSH_CONFIG: config });
    assert.equal(auth.code, 4, auth.stdout + auth.stderr);
    const doc = JSON.parse(auth.stdout) as PingJson;
    assert.deepEqual(doc.nodes.map((n) => [n.node, n.state, n.reason]), [['127.0.0.1', 'ON', null], ['127.0.0.2', 'OFF', 'auth refused']]);
    assert.match(doc.nodes[1]?.error ?? '', /Host key verification failed/);
  });
});
