// Cluster-wide tells (issue 5, point 10, the cluster part): the time for `corral tell GROUP LEVEL
// --wait` to bring a group to DONE on every node of a local cluster of 3 and of 32 agents.
//
// For each size: `corral local up -n N` in a temporary directory (its wall time and the
// formation time it reports, and the agents' RSS once the group runs), a group published with
// `corral reload`:
//
//   g: prep (wait, level 1), svc (respawn, level 1), svc2 (respawn, level 2)
//
// then K tells alternating levels 2 and 1 (after one unmeasured tell to 1), so that every tell
// stops one respawn entry (SIGINT) and starts another on every node. Each tell records
//
//   (a) the agent-side `ms` of `tell --wait --json`: from the target's write to the store until
//       every UP node reported the group settled at the new level;
//   (b) the wall time of the whole `corral tell --wait` process (node's start, TLS, the request).
//
// No peer is named for this measurement; the floor it is compared with is the spine's own: the
// wall time of `corral status` (one round-trip through the CLI) in the same run, and the ratio.
//
//   npm run bench:groups            node dist/bench/groups.js [--quick]

import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CORRAL, runCorral, type RunResult } from '../src/testkit/cli.js';
import { isProcessAlive as alive } from '../src/util/process.js';
import { printTable, summarize, writeResults, type LatencySummary, type Row } from './lib.js';

const quick = process.argv.includes('--quick');
/** Tells measured per cluster size (alternating levels), and `corral status` runs for the floor. */
const SIZES: { nodes: number; tells: number }[] = [
  { nodes: 3, tells: quick ? 6 : 20 },
  { nodes: 32, tells: quick ? 4 : 10 },
];
/** The whole benchmark stops measuring after this long (the clusters are still taken down). */
const BUDGET_MS = 200_000;
const UP_LIMIT_MS = 120_000;
const TELL_TIMEOUT_MS = 30_000;

const GROUPS_YAML = `
groups:
  g:
    stop: { termAfterMs: 500, killAfterMs: 1500 }
    entries:
      - { tag: prep, levels: "1", mode: wait, command: "true" }
      - { tag: svc, levels: "1", mode: respawn, command: "exec sleep 600" }
      - { tag: svc2, levels: "2", mode: respawn, command: "exec sleep 600" }
`;

const t0 = performance.now();
const left = (): number => BUDGET_MS - (performance.now() - t0);

interface Timed {
  result: RunResult;
  ms: number;
}

async function corral(config: string, args: string[], timeoutMs = 30_000): Promise<Timed> {
  const t = performance.now();
  const result = await runCorral(args, { env: { CORRAL_CONFIG: config }, timeoutMs });
  return { result, ms: performance.now() - t };
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function agentPids(dir: string, n: number): number[] {
  return Array.from({ length: n }, (_, i) => readPid(path.join(dir, `n${i + 1}`, 'agent.pid'))).filter((p): p is number => p !== undefined);
}

function rssKiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Proportional set size: shared pages (node's own text, mostly) divided among the sharers. */
function pssKiB(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** The direct children of `pid` whose command line mentions `needle` (the supervisor guards). */
function childrenMatching(pid: number, needle: string): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const task of tasks) {
    let children = '';
    try {
      children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const c of children.trim().split(/\s+/).filter(Boolean).map(Number)) {
      try {
        if (readFileSync(`/proc/${c}/cmdline`, 'utf8').includes(needle)) out.push(c);
      } catch {
        // gone meanwhile
      }
    }
  }
  return out;
}

/** SIGKILLs those of `pids` still running (a zombie waiting for init to reap it is not). */
function killByPid(pids: number[]): number[] {
  const killed: number[] = [];
  for (const pid of pids) {
    if (!alive(pid)) continue;
    try {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  return killed;
}

interface ProcDetail {
  tag: string;
  pid: number | null;
}
interface TellJson {
  ms?: number;
  settled?: boolean;
  results?: { node: string; level: string | null; state: string }[];
}

interface SizeResult {
  nodes: number;
  localUp: { wallMs: number; formationMs: number | null };
  rss: { agentsMiB: number; perAgentMaxMiB: number; agentsPssMiB: number; guardsMiB: number; guardsPssMiB: number; agents: number; guards: number };
  tells: { measured: number; levels: string[]; agentMs: LatencySummary; cliMs: LatencySummary; failures: string[] };
  status: { runs: number; cliMs: LatencySummary };
  ratio: { tellCliP50OverStatusP50: number; tellAgentP50OverStatusP50: number };
  cleanup: { leftoverAgentsKilled: number[]; leftoverGuardsKilled: number[]; leftoverSupervisedKilled: number[] };
}

/** One cluster size, start to teardown. Throws on a failed `local up` (reported, not worked around). */
async function benchSize(nodes: number, tells: number): Promise<SizeResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-bench-groups-'));
  const config = path.join(dir, 'corral.yaml');
  const guards = new Set<number>();
  const supervised = new Set<number>();
  const cleanup = { leftoverAgentsKilled: [] as number[], leftoverGuardsKilled: [] as number[], leftoverSupervisedKilled: [] as number[] };
  activeDirs.set(dir, nodes);
  try {
    process.stdout.write(`\n${nodes} nodes: local up...\n`);
    const up = await corral(config, ['local', 'up', '-n', String(nodes), '--dir', dir, '--json'], UP_LIMIT_MS + 10_000);
    if (up.result.code !== 0) throw new Error(`local up -n ${nodes} failed (exit ${up.result.code}, ${up.ms.toFixed(0)} ms): ${up.result.stderr.trim()}${up.result.stdout.trim()}`);
    if (up.ms > UP_LIMIT_MS) throw new Error(`local up -n ${nodes} took ${up.ms.toFixed(0)} ms (over ${UP_LIMIT_MS} ms)`);
    const formationMs = (JSON.parse(up.result.stdout) as { formationMs?: number }).formationMs ?? null;
    process.stdout.write(`  up in ${up.ms.toFixed(0)} ms (formation ${formationMs} ms)\n`);

    appendFileSync(config, GROUPS_YAML);
    const reload = await corral(config, ['reload']);
    if (reload.result.code !== 0) throw new Error(`corral reload failed (exit ${reload.result.code}): ${reload.result.stderr.trim()}`);

    const failures: string[] = [];
    const tell = async (level: string): Promise<{ agentMs: number; cliMs: number } | undefined> => {
      const t = await corral(config, ['tell', 'g', level, '--wait', '--json', '--timeout', String(TELL_TIMEOUT_MS)], TELL_TIMEOUT_MS + 15_000);
      const out = t.result.stdout;
      let parsed: TellJson = {};
      try {
        parsed = JSON.parse(out.slice(out.indexOf('{'))) as TellJson;
      } catch {
        // reported below
      }
      const results = parsed.results ?? [];
      const good = t.result.code === 0 && parsed.settled === true && results.length === nodes && results.every((r) => r.state === 'DONE' && r.level === level);
      if (!good || typeof parsed.ms !== 'number') {
        const states = results.map((r) => `${r.node}:${r.level}:${r.state}`).filter((s) => !s.endsWith(`:${level}:DONE`));
        failures.push(`tell g ${level}: exit ${t.result.code}, settled ${parsed.settled}, ${results.length}/${nodes} results${states.length ? ` (${states.slice(0, 5).join(' ')})` : ''} ${t.result.stderr.trim()}`.trim());
        return undefined;
      }
      return { agentMs: parsed.ms, cliMs: t.ms };
    };

    // The first tell starts the group from nothing (prep runs): not measured.
    if ((await tell('1')) === undefined) throw new Error(`the first tell to level 1 on ${nodes} nodes failed: ${failures.join('; ')}`);

    const agentSamples: number[] = [];
    const cliSamples: number[] = [];
    const levels: string[] = [];
    for (let i = 0; i < tells && left() > 0; i++) {
      const level = i % 2 === 0 ? '2' : '1';
      const r = await tell(level);
      levels.push(level);
      if (r) {
        agentSamples.push(r.agentMs);
        cliSamples.push(r.cliMs);
      }
    }

    // The floor: `corral status`, as many runs as tells (exit 1 only says a node is not OK).
    const statusSamples: number[] = [];
    for (let i = 0; i < tells && left() > 0; i++) {
      const s = await corral(config, ['status']);
      if (s.result.code === 0 || s.result.code === 1) statusSamples.push(s.ms);
      else failures.push(`status: exit ${s.result.code} ${s.result.stderr.trim()}`);
    }

    // Memory with the group running; the guards and supervised pids are noted for the teardown.
    const agents = agentPids(dir, nodes);
    for (const a of agents) for (const g of childrenMatching(a, 'guard.js')) guards.add(g);
    const agentRss = agents.map(rssKiB);
    const guardRss = [...guards].map(rssKiB);
    const agentPss = agents.map(pssKiB);
    const guardPss = [...guards].map(pssKiB);
    const detail = await corral(config, ['status', 'g', '--json']).catch(() => undefined);
    try {
      const d = JSON.parse(detail?.result.stdout ?? '{}') as { nodes?: { processes: ProcDetail[] }[] };
      for (const n of d.nodes ?? []) for (const p of n.processes) if (p.pid) supervised.add(p.pid);
    } catch {
      // no detail: nothing to check at teardown
    }

    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    const agentMs = summarize(agentSamples);
    const cliMs = summarize(cliSamples);
    const statusMs = summarize(statusSamples);
    return {
      nodes,
      localUp: { wallMs: Math.round(up.ms), formationMs },
      rss: { agentsMiB: sum(agentRss) / 1024, perAgentMaxMiB: Math.max(...agentRss) / 1024, agentsPssMiB: sum(agentPss) / 1024, guardsMiB: sum(guardRss) / 1024, guardsPssMiB: sum(guardPss) / 1024, agents: agents.length, guards: guards.size },
      tells: { measured: agentSamples.length, levels, agentMs, cliMs, failures },
      status: { runs: statusSamples.length, cliMs: statusMs },
      ratio: { tellCliP50OverStatusP50: cliMs.p50 / statusMs.p50, tellAgentP50OverStatusP50: agentMs.p50 / statusMs.p50 },
      cleanup,
    };
  } finally {
    const agents = agentPids(dir, nodes);
    for (const a of agents) for (const g of childrenMatching(a, 'guard.js')) guards.add(g);
    await corral(config, ['local', 'down', '--dir', dir], 90_000).catch((err: unknown) => process.stderr.write(`local down --dir ${dir}: ${(err as Error).message}\n`));
    cleanup.leftoverAgentsKilled = killByPid(agents);
    // A guard ends by itself once its agent is gone (after stopping what it listed): give it a moment.
    const end = performance.now() + 5_000;
    while (performance.now() < end && [...guards, ...supervised].some(alive)) await new Promise((r) => setTimeout(r, 100));
    cleanup.leftoverGuardsKilled = killByPid([...guards]);
    cleanup.leftoverSupervisedKilled = killByPid([...supervised]);
    rmSync(dir, { recursive: true, force: true });
    activeDirs.delete(dir);
  }
}

// Interrupted (Ctrl-C): take the clusters down synchronously and leave.
const activeDirs = new Map<string, number>();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const [dir, n] of activeDirs) {
      spawnSync(process.execPath, [CORRAL, 'local', 'down', '--dir', dir], { stdio: 'ignore', timeout: 60_000 });
      killByPid(agentPids(dir, n));
      rmSync(dir, { recursive: true, force: true });
    }
    process.exit(130);
  });
}

const ca = process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset';
process.stdout.write(`NODE_EXTRA_CA_CERTS is ${ca} (every CLI run below starts node with it ${ca === 'set' ? 'loaded' : 'absent'})\n`);
const rows: Row[] = [];
const results: SizeResult[] = [];
const errors: string[] = [];
for (const { nodes, tells } of SIZES) {
  if (left() <= 0) {
    errors.push(`${nodes} nodes: skipped, the time budget (${BUDGET_MS} ms) was spent`);
    continue;
  }
  try {
    const r = await benchSize(nodes, tells);
    results.push(r);
    const n = `${nodes} nodes`;
    const k = `${r.tells.measured} tells`;
    rows.push({ metric: `local up -n ${nodes}, wall`, value: r.localUp.wallMs, unit: 'ms', note: `formation reported: ${r.localUp.formationMs} ms` });
    rows.push({ metric: `agents' RSS, ${n} (sum)`, value: r.rss.agentsMiB, unit: 'MiB', note: `${r.rss.agents} agents, max ${r.rss.perAgentMaxMiB.toFixed(1)} MiB; PSS sum ${r.rss.agentsPssMiB.toFixed(0)} MiB` });
    rows.push({ metric: `guards' RSS, ${n} (sum)`, value: r.rss.guardsMiB, unit: 'MiB', note: `${r.rss.guards} guards (one node process per agent); PSS sum ${r.rss.guardsPssMiB.toFixed(0)} MiB` });
    for (const [what, s] of [['agent-side ms', r.tells.agentMs], ['CLI wall', r.tells.cliMs]] as const) {
      rows.push({ metric: `tell --wait to DONE, ${n}, ${what} p50`, value: s.p50, unit: 'ms', note: k });
      rows.push({ metric: `tell --wait to DONE, ${n}, ${what} p99`, value: s.p99, unit: 'ms', note: s.count < 100 ? `= max of ${s.count}` : '' });
      rows.push({ metric: `tell --wait to DONE, ${n}, ${what} max`, value: s.max, unit: 'ms' });
    }
    rows.push({ metric: `corral status, ${n}, CLI wall p50`, value: r.status.cliMs.p50, unit: 'ms', note: `p99 ${r.status.cliMs.p99.toFixed(0)} ms, ${r.status.runs} runs` });
    rows.push({ metric: `tell CLI p50 / status CLI p50, ${n}`, value: r.ratio.tellCliP50OverStatusP50, unit: '×', note: `agent-side p50 / status p50: ${r.ratio.tellAgentP50OverStatusP50.toFixed(2)}` });
    if (r.tells.failures.length) errors.push(...r.tells.failures.map((f) => `${n}: ${f}`));
    const leftovers = [...r.cleanup.leftoverAgentsKilled, ...r.cleanup.leftoverGuardsKilled, ...r.cleanup.leftoverSupervisedKilled];
    if (leftovers.length) errors.push(`${n}: killed by pid after local down: agents ${r.cleanup.leftoverAgentsKilled.join(',') || '-'}, guards ${r.cleanup.leftoverGuardsKilled.join(',') || '-'}, supervised ${r.cleanup.leftoverSupervisedKilled.join(',') || '-'}`);
  } catch (err) {
    errors.push(`${nodes} nodes: ${(err as Error).message}`);
  }
}

printTable(`groups: corral tell g LEVEL --wait to DONE on every node (levels alternate 2/1; each tell stops one respawn entry and starts another per node; NODE_EXTRA_CA_CERTS ${ca})`, rows);
for (const e of errors) process.stdout.write(`problem: ${e}\n`);
const file = writeResults('groups', {
  notes: [
    'agent-side ms: from the target write to the store to every UP node reporting the group settled (TellResponse.ms)',
    'CLI wall: the whole `corral tell g LEVEL --wait --json` process, node start-up and TLS included',
    'floor: `corral status` through the CLI in the same run; no peer is named for this measurement',
    'the group: prep (wait, 1), svc (respawn, 1), svc2 (respawn, 2), stop ladder 500/1500 ms; sleep dies on the first SIGINT',
    'every agent also runs a supervisor guard process; the agents\' RSS excludes the guards (reported apart)',
  ],
  group: GROUPS_YAML.trim(),
  sizes: results,
  errors,
  rows,
});
process.stdout.write(`\nwritten to ${file} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
if (errors.length) process.exitCode = 1;
