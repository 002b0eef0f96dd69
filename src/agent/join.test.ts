import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusResponse } from '../api/types.js';
import { freePorts } from '../cli/local-cluster.js';
import { runCorral, startAgent, type AgentHandle } from '../testkit/cli.js';
import { waitUntil } from '../testkit/local.js';

describe('corral init and corral join', { timeout: 120_000 }, () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'corral-join-'));
  const a = path.join(tmp, 'a');
  const b = path.join(tmp, 'b');
  const agents: AgentHandle[] = [];
  let ports: number[];
  let token: string;

  before(async () => {
    ports = await freePorts(3);
    const r = await runCorral([
      'init', '--dir', a, '--name', 'demo', '--node', 'a1',
      '--address', `127.0.0.1:${ports[0]}`, '--join-address', `127.0.0.1:${ports[1]}`, '--data-dir', path.join(a, 'data'), '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    token = (JSON.parse(r.stdout) as { token: string }).token;
    agents.push(startAgent(path.join(a, 'corral.yaml'), 'a1'));
    await waitUntil('a1 to serve', async () => {
      const s = await runCorral(['status', '--json', '--config', path.join(a, 'corral.yaml')]);
      return s.code === 0 ? true : undefined;
    }, 20_000, 100);
  });

  after(async () => {
    for (const agent of agents) await agent.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('init writes the configuration and private credentials, and refuses to overwrite them', async () => {
    assert.ok(existsSync(path.join(a, 'corral.yaml')));
    for (const secret of ['ca.key', 'admin.key', 'join.secret', 'nodes/a1.key']) {
      assert.equal(statSync(path.join(a, 'pki', secret)).mode & 0o777, 0o600, secret);
    }
    const again = await runCorral(['init', '--dir', a, '--name', 'demo']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists; nothing changed/);
  });

  it('token prints the same join token on the coordinator', async () => {
    const r = await runCorral(['token', '--config', path.join(a, 'corral.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), token);
  });

  it('a wrong secret fails the handshake and writes nothing', async () => {
    const parts = token.split('.');
    const last = parts[parts.length - 1] as string;
    parts[parts.length - 1] = (last[0] === 'A' ? 'B' : 'A') + last.slice(1);
    const r = await runCorral(['join', `127.0.0.1:${ports[1]}`, '--token', parts.join('.'), '--node', 'b1', '--address', `127.0.0.1:${ports[2]}`, '--dir', b]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /JOIN_REFUSED/);
    assert.equal(existsSync(path.join(b, 'corral.yaml')), false);
  });

  it('a token whose CA fingerprint does not match is refused after the handshake', async () => {
    const forged = token.replace(/[0-9a-f]{64}/, '0'.repeat(64));
    assert.notEqual(forged, token);
    // The coordinator reserves the name before the joiner checks the CA, so use a name of its own.
    const r = await runCorral(['join', `127.0.0.1:${ports[1]}`, '--token', forged, '--node', 'b0', '--address', '127.0.0.1:2', '--dir', b]);
    assert.equal(r.code, 77, r.stderr);
    assert.match(r.stderr, /does not match the token/);
    assert.equal(existsSync(path.join(b, 'corral.yaml')), false);
  });

  it('a new node joins with one token and one command, then shows UP once its agent runs', async () => {
    const r = await runCorral([
      'join', `127.0.0.1:${ports[1]}`, '--token', token, '--node', 'b1',
      '--address', `127.0.0.1:${ports[2]}`, '--dir', b, '--data-dir', path.join(b, 'data'),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /joined cluster demo as node b1/);
    assert.equal(statSync(path.join(b, 'pki', 'nodes', 'b1.key')).mode & 0o777, 0o600);
    assert.equal(existsSync(path.join(b, 'pki', 'ca.key')), false, 'the CA key stays on the coordinator');
    assert.equal(readFileSync(path.join(b, 'pki', 'ca.crt'), 'utf8'), readFileSync(path.join(a, 'pki', 'ca.crt'), 'utf8'));

    const before = await runCorral(['status', '--json', '--config', path.join(a, 'corral.yaml')]);
    const listed = (JSON.parse(before.stdout) as StatusResponse).nodes.map((n) => n.name);
    assert.deepEqual(listed, ['a1'], 'a node enters the registry when its agent first starts');

    agents.push(startAgent(path.join(b, 'corral.yaml'), 'b1'));
    const { value } = await waitUntil('b1 to be up', async () => {
      const s = await runCorral(['status', '--json', '--config', path.join(b, 'corral.yaml')]);
      if (s.code !== 0) return undefined;
      const status = JSON.parse(s.stdout) as StatusResponse;
      return status.nodes.every((n) => n.state === 'up') && status.nodes.length === 2 ? status : undefined;
    }, 20_000, 100);
    assert.equal(value.cluster, 'demo');
    assert.equal(value.answeredBy, 'b1', "b's CLI reached b's own agent over its socket");
    assert.equal(value.master, 'a1');
    const ping = await runCorral(['ping', '--mesh', '--json', '--config', path.join(b, 'corral.yaml')]);
    assert.equal(ping.code, 0, ping.stderr);
  });

  it('a joined node is a fan-out target, not a relay: a configured node refuses its certificate', async () => {
    const echo = ['--', 'sh', '-c', 'echo "ran on $CORRAL_NODE"'];
    // From a's machine (a1 relays with its configured node certificate): both nodes run it.
    const fromA = await runCorral(['run', '--config', path.join(a, 'corral.yaml'), ...echo]);
    assert.equal(fromA.code, 0, fromA.stdout + fromA.stderr);
    assert.match(fromA.stdout, /^a1: ran on a1$/m);
    assert.match(fromA.stdout, /^b1: ran on b1$/m);
    // From b's machine (b1's agent relays with b1's joined certificate): a1 refuses it, nothing runs there.
    const fromB = await runCorral(['run', '--config', path.join(b, 'corral.yaml'), ...echo]);
    assert.equal(fromB.code, 4, fromB.stdout + fromB.stderr);
    assert.match(fromB.stdout, /^b1: ran on b1$/m);
    assert.doesNotMatch(fromB.stdout, /ran on a1/);
    assert.match(fromB.stderr, /unreachable: 1 \(a1: node b1 may not call POST \/v1\/node\/exec\)/);
    const ping = await runCorral(['ping', '--json', '--config', path.join(b, 'corral.yaml')]);
    assert.equal(ping.code, 4, ping.stdout + ping.stderr);
    const nodes = (JSON.parse(ping.stdout) as { nodes: { node: string; state: string; reason: string | null }[] }).nodes;
    assert.deepEqual(nodes.map((n) => [n.node, n.state, n.reason]), [['a1', 'OFF', 'auth refused'], ['b1', 'ON', null]]);
  });

  it('a name that exists cannot be joined again: up, down, or in the configuration', async () => {
    const c = path.join(tmp, 'c');
    const join = (node: string): ReturnType<typeof runCorral> =>
      runCorral(['join', `127.0.0.1:${ports[1]}`, '--token', token, '--node', node, '--address', '127.0.0.1:1', '--dir', c]);
    const up = await join('b1');
    assert.equal(up.code, 77, up.stderr);
    assert.match(up.stderr, /node b1 is already a member \(up/);
    const coordinator = await join('a1');
    assert.equal(coordinator.code, 77, coordinator.stderr);
    assert.match(coordinator.stderr, /node a1 is already/);
    const b1 = agents.pop() as AgentHandle;
    assert.equal(await b1.stop(), 0);
    const down = await join('b1');
    assert.equal(down.code, 77, down.stderr);
    assert.match(down.stderr, /node b1 is already a member \(down/);
    assert.equal(existsSync(path.join(c, 'corral.yaml')), false);
  });
});
