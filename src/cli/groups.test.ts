// Cluster-wide resource groups through the real CLI on a local 3-node cluster (issue 5, points 6,
// 7, 8 and 9): groups declared in corral.yaml, published by `corral reload` (validated, and
// validated again by every agent), moved by `corral tell`, shown by `corral status [GROUP]` and
// `corral logs`, re-applied by an agent that restarts.

import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { GROUP_KEYS } from '../api/groups-wire.js';
import { loadClusterConfig, type ClusterConfig } from '../config/cluster-config.js';
import { CORRAL } from '../testkit/cli.js';
import { startEtcd, type EtcdCluster } from '../testkit/etcd.js';
import { adminStore, LocalClusterFixture, sleep, waitUntil } from '../testkit/local.js';
import { isProcessAlive } from '../util/process.js';

interface ProcDetail {
  tag: string;
  mode: string;
  pid: number | null;
  state: string;
  restarts: number;
  lastExit: { code: number | null; signal: string | null } | null;
}
interface GroupDetail {
  group: string;
  target: string | null;
  nodes: { node: string; up: boolean; level: string | null; state: string; processes: ProcDetail[] }[];
}

const STOP = '    stop: { termAfterMs: 500, killAfterMs: 1500 }\n';

/** `web` on every node, `solo` on n2 only. `marker` tags the stamp entry so an edit is visible. */
function groupsYaml(marker: string, extra = ''): string {
  return `groups:
  web:
${STOP}    env: { GREETING: hello }
    entries:
      - { tag: setup, levels: "1", mode: wait, command: "echo $GREETING from $CORRAL_NODE > setup.out" }
      - { tag: ticker, levels: "12", mode: respawn, command: "i=0; while [ $i -lt 600 ]; do echo tick $CORRAL_NODE $i; i=$((i+1)); sleep 0.1; done" }
      - { tag: stamp, levels: "1", mode: respawn, command: "trap 'echo ${marker} >> stopped.out; exit 0' INT; echo ${marker} > stamp.out; while true; do sleep 0.1; done" }
      - { tag: two, levels: "2", mode: once, command: "echo two > two.out; exec sleep 600" }
  solo:
    nodes: n2
${STOP}    entries:
      - { tag: check, levels: [up, check], mode: test, command: "test -d ." }
${extra}`;
}

describe('cluster-wide resource groups on a local 3-node cluster', { timeout: 240_000 }, () => {
  const lc = new LocalClusterFixture(3);
  let base = '';
  let config: ClusterConfig;
  const work = (node: string): string => config.nodes.find((n) => n.name === node)?.workDir as string;
  const corral = (args: string[], timeoutMs = 30_000): ReturnType<LocalClusterFixture['corral']> => lc.corral(args, { timeoutMs });
  const detail = async (group: string): Promise<GroupDetail> => {
    const r = await corral(['status', group, '--json']);
    assert.ok(r.code === 0 || r.code === 1, r.stderr);
    return JSON.parse(r.stdout) as GroupDetail;
  };
  const proc = (d: GroupDetail, node: string, tag: string): ProcDetail => {
    const p = d.nodes.find((n) => n.node === node)?.processes.find((x) => x.tag === tag);
    assert.ok(p, `${node}/${tag} in ${JSON.stringify(d)}`);
    return p;
  };
  const writeGroups = (yaml: string): void => writeFileSync(lc.config, base + yaml);

  before(async () => {
    await lc.up();
    base = readFileSync(lc.config, 'utf8');
    config = loadClusterConfig(lc.config);
  });
  after(async () => {
    const pids: number[] = [];
    try {
      const d = await detail('web');
      for (const n of d.nodes) for (const p of n.processes) if (p.pid) pids.push(p.pid);
    } catch {
      // the cluster may be down already
    }
    await lc.destroy();
    // The agents' stop ladders ended every supervised process.
    assert.deepEqual(pids.filter(isProcessAlive), [], 'supervised processes outlived their agents');
  });

  it('an invalid groups section is refused with FILE:LINE by reload (78) and nothing is published', async () => {
    const bad = path.join(lc.dir, 'bad.yaml');
    writeFileSync(bad, base + 'groups:\n  bad:\n    entries:\n      - { tag: a, levels: "1", mode: sometimes, command: "true" }\n');
    const r = await corral(['reload', '--config', bad]);
    assert.equal(r.code, 78, r.stderr);
    assert.match(r.stderr, /bad\.yaml:\d+:\d+: groups\.bad\.entries\[0\]\.mode: invalid mode 'sometimes'/);
    const s = await corral(['status', '--json']);
    assert.equal((JSON.parse(s.stdout) as { groups?: unknown[] }).groups?.length ?? 0, 0);
    const tell = await corral(['tell', 'bad', '1']);
    assert.equal(tell.code, 65);
    assert.match(tell.stderr, /no such group: bad/);
  });

  it('reload publishes the groups to every node; tell --wait brings web to DONE everywhere and solo only to n2', async () => {
    writeGroups(groupsYaml('v1'));
    const r = await corral(['reload']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /added web, solo; removed -; changed -/);
    const t = await corral(['tell', 'web', '1', '--wait', '--json']);
    assert.equal(t.code, 0, t.stderr + t.stdout);
    const tell = JSON.parse(t.stdout.slice(t.stdout.indexOf('{'))) as { settled: boolean; results: { node: string; state: string; level: string }[] };
    assert.equal(tell.settled, true);
    assert.deepEqual(tell.results.map((x) => `${x.node}:${x.level}:${x.state}`), ['n1:1:DONE', 'n2:1:DONE', 'n3:1:DONE']);
    for (const node of ['n1', 'n2', 'n3']) assert.equal(readFileSync(path.join(work(node), 'setup.out'), 'utf8'), `hello from ${node}\n`);
    const solo = await corral(['tell', 'solo', 'up', '--wait']);
    assert.equal(solo.code, 0, solo.stderr);
    assert.match(solo.stdout, /n2\s+up\s+PASSED/);
    assert.doesNotMatch(solo.stdout, /n1|n3/);
    const status = await corral(['status']);
    assert.equal(status.code, 0, status.stderr);
    for (const node of ['n1', 'n2', 'n3']) assert.match(status.stdout, new RegExp(`web\\s+${node}\\s+1\\s+1\\s+DONE`));
    assert.match(status.stdout, /solo\s+n2\s+up\s+up\s+PASSED/);
  });

  it('status GROUP --json gives each process: tag, mode, pid, state, restarts, last exit; a kill -9 is respawned', async () => {
    const d = await detail('web');
    assert.deepEqual(d.nodes.map((n) => `${n.node}:${n.state}`), ['n1:DONE', 'n2:DONE', 'n3:DONE']);
    const setup = proc(d, 'n1', 'setup');
    assert.deepEqual([setup.mode, setup.pid, setup.lastExit?.code], ['wait', null, 0]);
    const ticker = proc(d, 'n3', 'ticker');
    assert.equal(ticker.mode, 'respawn');
    assert.ok(ticker.pid && isProcessAlive(ticker.pid));
    process.kill(-ticker.pid, 'SIGKILL');
    const { value: again } = await waitUntil(
      'n3/ticker respawned',
      async () => {
        const p = proc(await detail('web'), 'n3', 'ticker');
        return p.restarts >= 1 && p.pid && p.pid !== ticker.pid ? p : undefined;
      },
      15_000,
      100,
    );
    assert.equal(again.lastExit?.signal, 'SIGKILL');
    assert.ok(isProcessAlive(again.pid as number));
  });

  it('logs GROUP[/TAG] shows every node’s process output; --node picks one; -f follows new lines', async () => {
    const all = await corral(['logs', 'web/ticker', '-n', '3']);
    assert.equal(all.code, 0, all.stderr);
    for (const node of ['n1', 'n2', 'n3']) assert.match(all.stdout, new RegExp(`^${node}/ticker: tick ${node} \\d+$`, 'm'));
    const one = await corral(['logs', 'web', '--node', 'n2', '-n', '2']);
    assert.equal(one.code, 0, one.stderr);
    assert.ok(one.stdout.trim().split('\n').every((l) => l.startsWith('n2/')), one.stdout);
    const missing = await corral(['logs', 'web/nope']);
    assert.equal(missing.code, 65);
    // Follow: lines written after the command started appear.
    const child = spawn(process.execPath, [CORRAL, 'logs', 'web/ticker', '--node', 'n1', '-n', '0', '-f'], { env: { ...process.env, CORRAL_CONFIG: lc.config }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await waitUntil('two followed lines', () => Promise.resolve(out.split('\n').filter((l) => /^n1\/ticker: tick n1 \d+$/.test(l)).length >= 2 ? true : undefined), 15_000, 50);
    } finally {
      child.kill('SIGTERM');
    }
    await new Promise((resolve) => child.once('exit', resolve));
  });

  it('tell to another level stops what leaves it (with SIGINT first) and keeps what stays in it running', async () => {
    const before = await detail('web');
    const ticker = proc(before, 'n1', 'ticker').pid;
    const t = await corral(['tell', 'web', '2', '--wait']);
    assert.equal(t.code, 0, t.stderr + t.stdout);
    const d = await detail('web');
    assert.equal(proc(d, 'n1', 'ticker').pid, ticker, 'an entry in both levels keeps running');
    assert.equal(d.nodes[0]?.processes.find((p) => p.tag === 'stamp')?.pid ?? null, null, 'stamp left level 2');
    for (const node of ['n1', 'n2', 'n3']) {
      assert.equal(readFileSync(path.join(work(node), 'stopped.out'), 'utf8'), 'v1\n', 'stamp was stopped by SIGINT, gracefully');
      assert.ok(existsSync(path.join(work(node), 'two.out')));
    }
    const back = await corral(['tell', 'web', '1', '--wait']);
    assert.equal(back.code, 0, back.stderr);
  });

  it('reload with an edited entry restarts only that entry (gracefully) on every node; a removed group stops and disappears', async () => {
    const before = await detail('web');
    writeGroups(groupsYaml('v2').replace(/ {2}solo:[\s\S]*$/, ''));
    const r = await corral(['reload']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /added -; removed solo; changed web; unchanged -/);
    await waitUntil(
      'the edited stamp restarted everywhere',
      () => Promise.resolve(['n1', 'n2', 'n3'].every((n) => existsSync(path.join(work(n), 'stamp.out')) && readFileSync(path.join(work(n), 'stamp.out'), 'utf8') === 'v2\n') ? true : undefined),
      15_000,
      50,
    );
    const d = await waitUntil('web settled again', async () => {
      const x = await detail('web');
      return x.nodes.every((n) => n.state === 'DONE') ? x : undefined;
    }, 15_000, 100);
    for (const node of ['n1', 'n2', 'n3']) {
      assert.equal(proc(d.value, node, 'ticker').pid, proc(before, node, 'ticker').pid, `${node}: the unchanged ticker kept running`);
      assert.equal(readFileSync(path.join(work(node), 'stopped.out'), 'utf8'), 'v1\nv1\n', `${node}: the old stamp got SIGINT`);
    }
    const gone = await corral(['status', 'solo']);
    assert.equal(gone.code, 65);
    assert.match(gone.stderr, /no such group: solo/);
  });

  it('a configuration put into the store behind the CLI’s back is validated again by each agent and never applied', async () => {
    const before = await detail('web');
    const store = await adminStore(lc.config);
    try {
      const { kv } = await store.get(GROUP_KEYS.config);
      const doc = JSON.parse(kv?.value ?? '{}') as { groups: { entries: { mode: string }[] }[] };
      (doc.groups[0] as { entries: { mode: string }[] }).entries[0] = { ...(doc.groups[0]?.entries[0] as { mode: string }), mode: 'sometimes' };
      await store.put(GROUP_KEYS.config, JSON.stringify(doc));
    } finally {
      await store.close();
    }
    // The agents' reports carry the error; the processes are untouched.
    const reports = await waitUntil('errors reported by every node', async () => {
      const store2 = await adminStore(lc.config);
      try {
        const { kvs } = await store2.range(GROUP_KEYS.status);
        const errs = kvs.map((kv) => (JSON.parse(kv.value) as { configError?: string }).configError).filter(Boolean);
        return errs.length === 3 ? errs : undefined;
      } finally {
        await store2.close();
      }
    }, 10_000, 100);
    for (const e of reports.value) assert.match(e as string, /mode must be one of/);
    const shown = await corral(['status']);
    assert.match(shown.stdout, /group configuration invalid: .*mode must be one of.*corral reload/);
    const tell = await corral(['tell', 'web', '1']);
    assert.equal(tell.code, 78, tell.stderr);
    assert.match(tell.stderr, /the group configuration in the store is invalid/);
    await sleep(300);
    const d = await detail('web');
    for (const node of ['n1', 'n2', 'n3']) assert.equal(proc(d, node, 'ticker').pid, proc(before, node, 'ticker').pid);
    // A good reload clears it.
    const ok = await corral(['reload']);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('an agent killed with SIGKILL leaves no process behind; restarted, it brings its groups back to their target level', async () => {
    const before = await detail('web');
    const pids = ['ticker', 'stamp'].map((tag) => proc(before, 'n2', tag).pid as number);
    process.kill(lc.pid('n2'), 'SIGKILL');
    // The supervisor's guard runs the stop ladder for the dead agent.
    await waitUntil('n2’s processes stopped', () => Promise.resolve(pids.every((p) => !isProcessAlive(p)) ? true : undefined), 10_000, 50);
    await lc.up();
    const d = await waitUntil('n2 back at level 1', async () => {
      const x = await detail('web');
      const n2 = x.nodes.find((n) => n.node === 'n2');
      // Until the old member key expires, the dead incarnation's last report may still be shown.
      const pid = n2?.processes.find((p) => p.tag === 'ticker')?.pid;
      return n2?.state === 'DONE' && n2.level === '1' && pid && !pids.includes(pid) ? x : undefined;
    }, 30_000, 200);
    const ticker = proc(d.value, 'n2', 'ticker');
    assert.ok(ticker.pid && isProcessAlive(ticker.pid) && !pids.includes(ticker.pid));
    // The others were not disturbed.
    assert.equal(proc(d.value, 'n1', 'ticker').pid, proc(before, 'n1', 'ticker').pid);
  });
});


describe('cluster-wide resource groups on the etcd store', { timeout: 180_000 }, () => {
  const lc = new LocalClusterFixture(3);
  let etcd: EtcdCluster | undefined;
  before(async () => {
    etcd = await startEtcd({ members: 1 });
    const r = await lc.corral(['local', 'up', '-n', '3', '--dir', lc.dir, '--store', `etcd://${etcd.endpoints.join(',')}`], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await lc.destroy();
    await etcd?.stop();
  });

  it('reload, tell --wait, status and logs behave as on the embedded store', async () => {
    const base = readFileSync(lc.config, 'utf8');
    writeFileSync(lc.config, base + groupsYaml('e1'));
    const r = await lc.corral(['reload'], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    const t = await lc.corral(['tell', 'web', '1', '--wait'], { timeoutMs: 60_000 });
    assert.equal(t.code, 0, t.stderr + t.stdout);
    for (const node of ['n1', 'n2', 'n3']) assert.match(t.stdout, new RegExp(`${node}\\s+1\\s+DONE`));
    const s = await lc.corral(['status', 'web', '--json'], { timeoutMs: 30_000 });
    assert.equal(s.code, 0, s.stderr);
    const d = JSON.parse(s.stdout) as GroupDetail;
    assert.ok(d.nodes.every((n) => n.processes.some((p) => p.tag === 'ticker' && p.pid !== null && isProcessAlive(p.pid))));
    const logs = await waitUntil('ticker output on every node', async () => {
      const l = await lc.corral(['logs', 'web/ticker', '-n', '1'], { timeoutMs: 30_000 });
      return ['n1', 'n2', 'n3'].every((n) => l.stdout.includes(`${n}/ticker: tick ${n}`)) ? l : undefined;
    }, 10_000, 200);
    assert.equal(logs.value.code, 0);
  });
});
