// `run -- true` on many nodes (issue 6, point 11): corral through its agents against pdsh and clush
// over SSH to the same number of loopback targets, and corral's own --ssh mode against pdsh.
//
// For each size N (8 and 32): a local cluster of N agents (`corral local up -n N`) and one real
// sshd (Debian's openssh-server, throwaway keys; 16 addresses per sshd process) listening on
// 127.0.0.1..127.0.0.N, each address a target. Every tool is pointed at the same ssh_config:
// corral through CORRAL_SSH_CONFIG, pdsh through PDSH_SSH_ARGS (-F FILE), clush through -o "-F FILE".
// The repetitions interleave the tools (agents, pdsh, clush, corral --ssh, then again, in a
// rotating order), so the shared machine's load falls on all of them alike; each sample is the wall time of the whole
// command, process start included, and must succeed on every target.
//
//   npm run bench:fanout-run       node dist/bench/fanout-run.js [--quick] [--reps N] [--kex ALG]
//
// --kex sets the client key exchange (default: OpenSSH's own, the issue's headline case;
// curve25519-sha256 is the cheap one); results go to bench/results/fanout-run.json, or
// fanout-run-ALG.json with --kex ALG.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CORRAL, runCorral } from '../src/testkit/cli.js';
import { sshdMissing, startSshd, type Sshd } from '../src/testkit/sshd.js';
import { benchArgs, printTable, summarize, timedSpawn, writeResults, type LatencySummary, type Row, type Timed } from './lib.js';

const { quick, opt } = benchArgs();
const REPS = Number(opt('--reps') ?? (quick ? 3 : 7));
const KEX = opt('--kex') ?? 'default';
const SIZES = quick ? [8] : [8, 32];
const RUN_TIMEOUT_MS = 120_000;
const SETTLE_MS = 300;

type Tool = 'agents' | 'pdsh' | 'clush' | 'corral-ssh';



interface SizeResult {
  nodes: number;
  samples: Record<Tool, number[]>;
  ms: Partial<Record<Tool, LatencySummary>>;
  failures: string[];
}

const missingTools = ['pdsh', 'clush'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
const sshdWhy = sshdMissing();

async function benchSize(n: number): Promise<SizeResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-bench-fanout-'));
  const config = path.join(dir, 'corral.yaml');
  const addresses = Array.from({ length: n }, (_, i) => `127.0.0.${i + 1}`);
  const samples: Record<Tool, number[]> = { agents: [], pdsh: [], clush: [], 'corral-ssh': [] };
  const failures: string[] = [];
  let sshd: Sshd | undefined;
  let up = false;
  activeDirs.add(dir);
  try {
    process.stdout.write(`\n${n} nodes: local up...\n`);
    const t = performance.now();
    const r = await runCorral(['local', 'up', '-n', String(n), '--dir', dir], { timeoutMs: 180_000 });
    if (r.code !== 0) throw new Error(`local up -n ${n} failed (exit ${r.code}): ${r.stderr.trim()}`);
    up = true;
    process.stdout.write(`  up in ${(performance.now() - t).toFixed(0)} ms; sshd on ${addresses[0]}..${addresses[n - 1]}\n`);
    if (!sshdWhy) sshd = await startSshd({ addresses, kex: KEX });
    const hosts = sshd?.hostsFile(addresses);
    const list = addresses.join(',');
    const run: Record<Tool, (() => Promise<Timed>) | undefined> = {
      agents: async () => {
        const t0 = performance.now();
        const res = await runCorral(['run', '--config', config, '--', 'true'], { timeoutMs: RUN_TIMEOUT_MS });
        return { ms: performance.now() - t0, ok: res.code === 0 && new RegExp(`^ok: ${n} `, 'm').test(res.stderr), detail: `exit ${res.code}: ${res.stderr.trim().slice(0, 300)}` };
      },
      pdsh:
        sshd && !missingTools.includes('pdsh')
          ? () => timedSpawn('pdsh', ['-S', '-R', 'ssh', '-f', String(Math.max(32, n)), '-w', list, 'true'], { PDSH_SSH_ARGS: `-F ${sshd?.sshConfig} -o BatchMode=yes -x -a -l%u %h` }, RUN_TIMEOUT_MS)
          : undefined,
      clush: sshd && !missingTools.includes('clush') ? () => timedSpawn('clush', ['-S', '-o', `-F ${sshd?.sshConfig}`, '-w', list, 'true'], {}, RUN_TIMEOUT_MS) : undefined,
      'corral-ssh': sshd && hosts
        ? async () => {
            const t0 = performance.now();
            const res = await runCorral(['run', '--ssh', '--hosts', hosts, '--', 'true'], { env: sshd?.env, timeoutMs: RUN_TIMEOUT_MS });
            return { ms: performance.now() - t0, ok: res.code === 0 && new RegExp(`^ok: ${n} `, 'm').test(res.stderr), detail: `exit ${res.code}: ${res.stderr.trim().slice(0, 300)}` };
          }
        : undefined,
    };
    const tools = (Object.keys(run) as Tool[]).filter((k) => run[k]);
    // One unmeasured round: page cache, node's compile cache, sshd's first fork.
    for (const tool of tools) {
      const w = await (run[tool] as () => Promise<Timed>)();
      if (!w.ok) failures.push(`${tool} warm-up: ${w.detail}`);
    }
    for (let rep = 0; rep < REPS; rep++) {
      // The order rotates, and sshd's sessions of one run end before the next starts.
      for (const tool of [...tools.slice(rep % tools.length), ...tools.slice(0, rep % tools.length)]) {
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        const s = await (run[tool] as () => Promise<Timed>)();
        if (s.ok) samples[tool].push(s.ms);
        else failures.push(`${tool} rep ${rep}: ${s.detail}`);
      }
      process.stdout.write(`  rep ${rep + 1}/${REPS}: ${tools.map((tool) => `${tool} ${(samples[tool].at(-1) ?? NaN).toFixed(0)} ms`).join(', ')}\n`);
    }
  } finally {
    await sshd?.stop();
    if (up || existsSync(config)) {
      const down = await runCorral(['local', 'down', '--dir', dir], { timeoutMs: 90_000 }).catch((err: unknown) => ({ code: -1, stderr: String(err) }));
      if (down.code !== 0) process.stderr.write(`local down --dir ${dir}: exit ${down.code} ${down.stderr}\n`);
    }
    rmSync(dir, { recursive: true, force: true });
    activeDirs.delete(dir);
  }
  const ms: Partial<Record<Tool, LatencySummary>> = {};
  for (const tool of Object.keys(samples) as Tool[]) if (samples[tool].length > 0) ms[tool] = summarize(samples[tool]);
  return { nodes: n, samples, ms, failures };
}

const ca = process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset';
process.stdout.write(`NODE_EXTRA_CA_CERTS is ${ca}; ${REPS} repetitions per tool and size; ssh key exchange: ${KEX === 'default' ? "OpenSSH's default" : KEX}\n`);
if (sshdWhy) process.stdout.write(`SSH rows skipped: ${sshdWhy}\n`);
if (missingTools.length) process.stdout.write(`missing: ${missingTools.join(', ')} (apt-get install pdsh clustershell)\n`);
process.stdout.write(`corral: ${CORRAL}\n`);

// Interrupted (Ctrl-C): take the cluster down synchronously and leave (sshd is our child and dies with us).
const activeDirs = new Set<string>();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const dir of activeDirs) {
      spawnSync(process.execPath, [CORRAL, 'local', 'down', '--dir', dir], { stdio: 'ignore', timeout: 60_000 });
      rmSync(dir, { recursive: true, force: true });
    }
    process.exit(130);
  });
}

const results: SizeResult[] = [];
for (const n of SIZES) results.push(await benchSize(n));

const rows: Row[] = [];
const ratios: Record<string, number> = {};
for (const r of results) {
  for (const tool of ['agents', 'corral-ssh', 'pdsh', 'clush'] as Tool[]) {
    const s = r.ms[tool];
    if (!s) continue;
    rows.push({ metric: `${tool} run -- true, ${r.nodes} nodes, p50`, value: Math.round(s.p50), unit: 'ms', note: `p90 ${Math.round(s.p90)} ms, n=${s.count}` });
  }
  const a = r.ms.agents?.p50;
  const clush = r.ms.clush?.p50;
  const pdsh = r.ms.pdsh?.p50;
  const cssh = r.ms['corral-ssh']?.p50;
  if (a && clush) {
    const x = clush / a;
    ratios[`clushOverAgents${r.nodes}`] = x;
    rows.push({ metric: `clush / agents, ${r.nodes} nodes (p50)`, value: Math.round(x * 100) / 100, unit: '×', ...(r.nodes === 32 ? { target: '≥ 5', ok: x >= 5 } : {}) });
  }
  if (a && pdsh) {
    const x = pdsh / a;
    ratios[`pdshOverAgents${r.nodes}`] = x;
    rows.push({ metric: `pdsh / agents, ${r.nodes} nodes (p50)`, value: Math.round(x * 100) / 100, unit: '×' });
  }
  if (cssh && pdsh) {
    const x = cssh / pdsh;
    ratios[`corralSshOverPdsh${r.nodes}`] = x;
    rows.push({ metric: `corral --ssh / pdsh, ${r.nodes} nodes (p50)`, value: Math.round(x * 100) / 100, unit: '×', target: '≤ 1.2', ok: x <= 1.2 });
  }
  for (const f of r.failures) rows.push({ metric: `failure (${r.nodes} nodes)`, value: 0, unit: '', note: f });
}
printTable(`corral run -- true: agents vs pdsh and clush over SSH (loopback targets; NODE_EXTRA_CA_CERTS ${ca}; kex ${KEX})`, rows);
const file = writeResults(KEX === 'default' ? 'fanout-run' : `fanout-run-${KEX}`, {
  reps: REPS,
  kex: KEX,
  nodeExtraCaCerts: ca,
  tools: { pdsh: !missingTools.includes('pdsh'), clush: !missingTools.includes('clush'), sshd: !sshdWhy },
  sizes: results,
  ratios,
});
process.stdout.write(`\nwritten to ${file}\n`);
