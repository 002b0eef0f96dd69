// File transfer to many nodes (issue 6, point 11): push of one 20 MB file, one 200 MB file and
// 200 files of 1 MB to 8 nodes, corral through its agents against pdcp (pdsh's copy tool) over
// SSH to the same number of loopback targets, and corral's own --ssh mode; then a scatter of
// 10,000 files of 10 kB across the 8 nodes by hash, in files per second (no peer tool scatters).
//
// A local cluster of 8 agents (`corral local up -n 8`) and one real sshd (Debian's
// openssh-server, throwaway keys) listening on 127.0.0.1..127.0.0.8, each address a target whose
// sessions start in a directory of its own, so that the 8 "hosts" on this machine do not share
// files. pdcp runs `pdcp` on every target as well (here the same binary). Prerequisite:
// apt-get install pdsh clustershell openssh-server; a missing tool skips its rows with a line
// saying so. Every sample is the wall time of the whole command, process start included, into a
// fresh destination (removed afterwards, not timed); it must exit 0, and once per case and tool
// the files are checked on every node (count and sizes). The repetitions interleave the tools in
// a rotating order, so the shared machine's load falls on all of them alike.
//
//   npm run bench:fanout-files       node dist/bench/fanout-files.js [--quick] [--reps N]
//
// Results go to bench/results/fanout-files.json.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadClusterConfig } from '../src/config/cluster-config.js';
import { CORRAL, runCorral } from '../src/testkit/cli.js';
import { sshdMissing, startSshd, type Sshd } from '../src/testkit/sshd.js';
import { benchArgs, printTable, summarize, timedSpawn, writeResults, type LatencySummary, type Row, type Timed as Run } from './lib.js';

const { quick, opt } = benchArgs();
const REPS = Number(opt('--reps') ?? (quick ? 2 : 5));
const NODES = 8;
const RUN_TIMEOUT_MS = 300_000;
/** corral --ssh scatter is measured only if its unmeasured first run stays under this. */
const SSH_SCATTER_BUDGET_MS = 90_000;
const SETTLE_MS = 300;
const MB = 1_000_000;

type Tool = 'agents' | 'corral-ssh' | 'pdcp';
const TOOLS: Tool[] = ['agents', 'corral-ssh', 'pdcp'];

interface Case {
  name: string;
  /** What is sent: one file, or a directory of files. */
  source: string;
  /** push (every node gets everything) or scatter (each file to one node). */
  kind: 'push' | 'scatter';
  files: number;
  fileSize: number;
  tools: Tool[];
}

interface Timed extends Run {
  /** CPU seconds of everything the tool ran, both ends (see cpuNow). */
  cpu?: number;
}

interface CaseResult {
  name: string;
  kind: Case['kind'];
  files: number;
  bytesPerNode: number;
  samples: Partial<Record<Tool, number[]>>;
  cpuSamples: Partial<Record<Tool, number[]>>;
  ms: Partial<Record<Tool, LatencySummary & { min: number }>>;
  cpu: Partial<Record<Tool, number>>;
  verified: Partial<Record<Tool, string>>;
  notes: string[];
  failures: string[];
}

/** CPU seconds of a process (proc(5) utime+stime), or of its reaped children (cutime+cstime). */
function procCpu(pid: number | 'self', children: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "(comm) " comes field 3 (state): utime, field 14, is at index 11; cutime at 13.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const at = children ? 13 : 11;
    return ((f[at] ?? 0) + (f[at + 1] ?? 0)) / 100;
  } catch {
    return 0;
  }
}

const sh = (cmd: string): boolean => spawnSync('sh', ['-c', cmd], { stdio: 'ignore' }).status === 0;
const loadNow = (): string => os.loadavg().map((l) => l.toFixed(2)).join(', ');


/** Every regular file under `dir` with its size, by path relative to it. */
function listFiles(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (abs: string, rel: string): void => {
    for (const name of readdirSync(abs)) {
      const childAbs = path.join(abs, name);
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const st = statSync(childAbs);
      if (st.isDirectory()) walk(childAbs, childRel);
      else if (st.isFile() && !name.startsWith('.corral-manifest')) out.set(childRel, st.size);
    }
  };
  if (!existsSync(dir)) return out;
  // pdcp, like cp, makes a single file's destination that file when no such directory exists.
  if (statSync(dir).isFile()) out.set(path.basename(dir), statSync(dir).size);
  else walk(dir, '');
  return out;
}

function makeSources(dir: string): Record<string, string> {
  const write = (file: string, size: number): void => {
    // Random bytes, so no layer can compress them away; made from a 1 MB block and a counter.
    const block = randomBytes(Math.min(size, MB));
    const parts: Buffer[] = [];
    for (let n = 0; n < size; n += block.length) {
      const part = Buffer.from(block.subarray(0, Math.min(block.length, size - n)));
      part.writeUInt32BE(n / block.length, 0);
      parts.push(part);
    }
    writeFileSync(file, Buffer.concat(parts));
  };
  const one20 = path.join(dir, 'file-20MB.bin');
  const one200 = path.join(dir, 'file-200MB.bin');
  const many = path.join(dir, 'files-200x1MB');
  const small = path.join(dir, 'files-10000x10kB');
  write(one20, 20 * MB);
  write(one200, 200 * MB);
  mkdirSync(many);
  for (let i = 0; i < 200; i++) write(path.join(many, `part-${String(i).padStart(3, '0')}.bin`), MB);
  mkdirSync(small);
  for (let i = 0; i < 10_000; i++) writeFileSync(path.join(small, `shard_${i + 1}.dat`), randomBytes(10_000));
  return { one20, one200, many, small };
}

const sshdWhy = sshdMissing();
const pdcpMissing = !sh('command -v pdcp');
const ca = process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset';
const loadAtStart = loadNow();
process.stdout.write(`NODE_EXTRA_CA_CERTS is ${ca}; ${REPS} repetitions per tool and case; ${NODES} nodes; load average at start ${loadAtStart}\n`);
process.stdout.write(`uptime: ${spawnSync('uptime', { encoding: 'utf8' }).stdout.trim()}\n`);
if (sshdWhy) process.stdout.write(`SSH rows (pdcp, corral --ssh) skipped: ${sshdWhy}\n`);
if (pdcpMissing) process.stdout.write('pdcp rows skipped: pdcp is missing (apt-get install pdsh clustershell)\n');
process.stdout.write(`corral: ${CORRAL}\n`);

const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-bench-files-'));
const config = path.join(dir, 'corral.yaml');
let up = false;
let sshd: Sshd | undefined;

// Interrupted (Ctrl-C): take the cluster down synchronously and leave (sshd is our child and dies with us).
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    if (up) spawnSync(process.execPath, [CORRAL, 'local', 'down', '--dir', dir], { stdio: 'ignore', timeout: 60_000 });
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  });
}

const results: CaseResult[] = [];
try {
  process.stdout.write('making the sources (20 MB, 200 MB, 200 x 1 MB, 10,000 x 10 kB)...\n');
  mkdirSync(path.join(dir, 'src'));
  const src = makeSources(path.join(dir, 'src'));
  process.stdout.write(`${NODES} nodes: local up...\n`);
  const t = performance.now();
  const r = await runCorral(['local', 'up', '-n', String(NODES), '--dir', dir], { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`local up -n ${NODES} failed (exit ${r.code}): ${r.stderr.trim()}`);
  up = true;
  const cluster = loadClusterConfig(config);
  const addresses = Array.from({ length: NODES }, (_, i) => `127.0.0.${i + 1}`);
  process.stdout.write(`  up in ${(performance.now() - t).toFixed(0)} ms; sshd on ${addresses[0]}..${addresses[NODES - 1]}\n`);
  if (!sshdWhy) sshd = await startSshd({ addresses, homes: true });
  const hosts = sshd?.hostsFile(addresses);
  const sshEnv = sshd ? { PDSH_SSH_ARGS: `-F ${sshd.sshConfig} -o BatchMode=yes -x -a -l%u %h`, ...sshd.env } : {};
  let pdcpWhy = pdcpMissing ? 'pdcp is missing (apt-get install pdsh clustershell)' : sshd ? undefined : 'no sshd';
  if (!pdcpWhy && sshd) {
    // pdcp needs pdcp on every target too: one probe says whether it works here.
    const probe = path.join(dir, 'probe.txt');
    writeFileSync(probe, 'probe\n');
    const p = await timedSpawn('pdcp', ['-R', 'ssh', '-w', addresses.join(','), probe, '.'], sshEnv, RUN_TIMEOUT_MS);
    if (!p.ok) pdcpWhy = `pdcp does not work here (${p.detail}); is pdsh installed on the targets?`;
    for (const a of addresses) rmSync(path.join(sshd.home(a), 'probe.txt'), { force: true });
    if (pdcpWhy) process.stdout.write(`pdcp rows skipped: ${pdcpWhy}\n`);
  }
  const agentPids = cluster.nodes.map((n) => Number(readFileSync(path.join(dir, n.name, 'agent.pid'), 'utf8').trim()));
  /**
   * CPU seconds so far of what `tool` runs: the commands this process started and reaped (the
   * CLI, pdcp and their ssh clients), plus the agents, or plus sshd with its reaped sessions
   * (the remote shells, pdcp -z, sha256sum): on a shared machine, a fairer measure than wall time.
   */
  const cpuNow = (tool: Tool): number =>
    procCpu('self', true) + (tool === 'agents' ? agentPids.reduce((n, pid) => n + procCpu(pid, false), 0) : (sshd?.pids() ?? []).reduce((n, pid) => n + procCpu(pid, true), 0));
  const available = (tool: Tool): boolean => (tool === 'agents' ? true : tool === 'pdcp' ? !pdcpWhy : sshd !== undefined);

  const cases: Case[] = [
    { name: 'push 20 MB (1 file)', source: src.one20 as string, kind: 'push', files: 1, fileSize: 20 * MB, tools: TOOLS },
    { name: 'push 200 MB (1 file)', source: src.one200 as string, kind: 'push', files: 1, fileSize: 200 * MB, tools: TOOLS },
    { name: 'push 200 files x 1 MB', source: src.many as string, kind: 'push', files: 200, fileSize: MB, tools: TOOLS },
    { name: 'scatter 10,000 x 10 kB by hash', source: src.small as string, kind: 'scatter', files: 10_000, fileSize: 10_000, tools: ['agents', 'corral-ssh'] },
  ];

  /** Where `tool` puts destination `dest` on each node. */
  const destDirs = (tool: Tool, dest: string): string[] =>
    tool === 'agents' ? cluster.nodes.map((n) => path.join(n.workDir, dest)) : addresses.map((a) => path.join((sshd as Sshd).home(a), dest));

  const command = (c: Case, tool: Tool, dest: string): (() => Promise<Timed>) => {
    const isDir = c.files > 1;
    if (tool === 'pdcp') {
      return async () => {
        // pdcp -r needs the destination directory to exist (else it says "fatal" and exits 0):
        // made beforehand, untimed, for every pdcp case; corral's time includes creating it.
        for (const d of destDirs('pdcp', dest)) mkdirSync(d, { recursive: true });
        const s = await timedSpawn('pdcp', ['-R', 'ssh', '-f', String(NODES), '-w', addresses.join(','), ...(isDir ? ['-r'] : []), c.source, dest], sshEnv, RUN_TIMEOUT_MS);
        return /fatal|error/i.test(s.detail) ? { ...s, ok: false } : s;
      };
    }
    const via = tool === 'agents' ? ['--config', config] : ['--ssh', '--hosts', hosts as string];
    const env = tool === 'agents' ? {} : sshEnv;
    // Both tools get the same layout: the file, or the directory's contents, inside dest.
    if (c.kind === 'push') return () => timedSpawn(process.execPath, [CORRAL, 'push', ...via, isDir ? `${c.source}/` : c.source, dest], env, RUN_TIMEOUT_MS);
    return () => timedSpawn(process.execPath, [CORRAL, 'scatter', ...via, c.source, dest, '--by', 'hash', '--manifest', path.join(dir, `manifest-${tool}.tsv`)], env, RUN_TIMEOUT_MS);
  };

  /** Checks the files on every node: push, every file on every node; scatter, every file once. */
  const verify = (c: Case, tool: Tool, dest: string): string | undefined => {
    // Counted by size, not name: pdcp and corral may lay a directory out one level apart.
    const flat = destDirs(tool, dest).map(listFiles);
    if (c.kind === 'push') {
      for (const [i, l] of flat.entries()) {
        if (l.size !== c.files || [...l.values()].some((s) => s !== c.fileSize)) return `node ${i + 1}: ${l.size} files, expected ${c.files} of ${c.fileSize} bytes`;
      }
      return undefined;
    }
    const total = flat.reduce((n, l) => n + l.size, 0);
    if (total !== c.files) return `${total} files over the nodes, expected ${c.files}`;
    if (flat.some((l) => [...l.values()].some((s) => s !== c.fileSize))) return 'a file has the wrong size';
    if (flat.some((l) => l.size === 0)) return 'a node got no file';
    return undefined;
  };

  let sample = 0;
  for (const c of cases) {
    const res: CaseResult = { name: c.name, kind: c.kind, files: c.files, bytesPerNode: c.kind === 'push' ? c.files * c.fileSize : (c.files * c.fileSize) / NODES, samples: {}, cpuSamples: {}, ms: {}, cpu: {}, verified: {}, notes: [], failures: [] };
    results.push(res);
    const tools = c.tools.filter(available);
    for (const tool of c.tools.filter((x) => !available(x))) res.notes.push(`${tool}: skipped (${tool === 'pdcp' ? pdcpWhy ?? '' : sshdWhy ?? 'no sshd'})`);
    process.stdout.write(`\n${c.name}: ${tools.join(', ')}\n`);
    const once = async (tool: Tool, check: boolean): Promise<Timed> => {
      const dest = `bench-${sample++}-${tool}`;
      const cpu0 = cpuNow(tool);
      const s = await command(c, tool, dest)();
      // sshd reaps a session's processes just after the client leaves.
      await new Promise((r) => setTimeout(r, 200));
      s.cpu = cpuNow(tool) - cpu0;
      if (s.ok && check) {
        let why: string | undefined;
        try {
          why = verify(c, tool, dest);
        } catch (err) {
          why = `cannot list the destination: ${String(err)}`;
        }
        res.verified[tool] = why ?? 'ok';
        if (why) s.ok = false;
        if (why) s.detail = `files not as sent: ${why}`;
      }
      for (const d of destDirs(tool, dest)) rmSync(d, { recursive: true, force: true });
      return s;
    };
    // One unmeasured round (page cache, compile cache, sshd's first fork), which also checks the files.
    const active: Tool[] = [];
    for (const tool of tools) {
      const w = await once(tool, true);
      if (!w.ok) res.failures.push(`${tool} warm-up: ${w.detail}`);
      else if (tool === 'corral-ssh' && c.kind === 'scatter' && w.ms > SSH_SCATTER_BUDGET_MS) {
        res.notes.push(`corral-ssh: one run took ${(w.ms / 1000).toFixed(0)} s (over ${SSH_SCATTER_BUDGET_MS / 1000} s): not repeated`);
        res.samples[tool] = [w.ms];
      } else active.push(tool);
    }
    for (let rep = 0; rep < REPS; rep++) {
      for (const tool of [...active.slice(rep % active.length), ...active.slice(0, rep % active.length)]) {
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        const s = await once(tool, false);
        if (s.ok) (res.samples[tool] ??= []).push(s.ms);
        if (s.ok && s.cpu !== undefined) (res.cpuSamples[tool] ??= []).push(s.cpu);
        else res.failures.push(`${tool} rep ${rep}, after ${Math.round(s.ms)} ms: ${s.detail}`);
      }
      process.stdout.write(`  rep ${rep + 1}/${REPS}: ${active.map((tool) => `${tool} ${(res.samples[tool]?.at(-1) ?? NaN).toFixed(0)} ms`).join(', ')}  (load ${loadNow()})\n`);
    }
    for (const tool of TOOLS) {
      const xs = res.samples[tool];
      if (xs && xs.length > 0) res.ms[tool] = { ...summarize(xs), min: Math.min(...xs) };
      const cs = res.cpuSamples[tool];
      if (cs && cs.length > 0) res.cpu[tool] = summarize(cs).p50;
    }
  }
} finally {
  await sshd?.stop();
  if (up) {
    const down = await runCorral(['local', 'down', '--dir', dir], { timeoutMs: 90_000 }).catch((err: unknown) => ({ code: -1, stderr: String(err) }));
    if (down.code !== 0) process.stderr.write(`local down --dir ${dir}: exit ${down.code} ${down.stderr}\n`);
  }
  rmSync(dir, { recursive: true, force: true });
}

const rows: Row[] = [];
const ratios: Record<string, number> = {};
const round2 = (x: number): number => Math.round(x * 100) / 100;
for (const r of results) {
  for (const tool of TOOLS) {
    const s = r.ms[tool];
    if (!s) continue;
    const cpu = r.cpu[tool];
    const range = `range ${Math.round(s.min)}-${Math.round(s.max)} ms, n=${s.count}${cpu === undefined ? '' : `; CPU ${cpu.toFixed(1)} s`}`;
    if (r.kind === 'scatter') {
      const rate = r.files / (s.p50 / 1000);
      rows.push({ metric: `${tool} ${r.name}, p50`, value: Math.round(rate), unit: 'files/s', ...(tool === 'agents' ? { target: '≥ 1000', ok: rate >= 1000 } : {}), note: `${Math.round(s.p50)} ms; ${range}` });
      ratios[`${tool}ScatterFilesPerSecond`] = rate;
    } else {
      const mbps = (r.bytesPerNode * 8) / MB / (s.p50 / 1000);
      rows.push({ metric: `${tool} ${r.name}, 8 nodes, p50`, value: Math.round(s.p50), unit: 'ms', note: `${Math.round(mbps)} MB/s delivered; ${range}` });
    }
  }
  const a = r.ms.agents?.p50;
  const p = r.ms.pdcp?.p50;
  const cs = r.ms['corral-ssh']?.p50;
  const key = r.name.replace(/[^A-Za-z0-9]+/g, ' ').trim().split(' ').map((w, i) => (i === 0 ? w.toLowerCase() : w[0]?.toUpperCase() + w.slice(1))).join('');
  if (a && p) {
    ratios[`${key}PdcpOverAgents`] = p / a;
    rows.push({ metric: `pdcp / agents, ${r.name} (p50)`, value: round2(p / a), unit: '×', ...(r.name.startsWith('push 20 MB') ? { target: '> 1', ok: p / a > 1 } : {}) });
    const cpuA = r.cpu.agents;
    const cpuP = r.cpu.pdcp;
    if (cpuA && cpuP) {
      ratios[`${key}PdcpOverAgentsCpu`] = cpuP / cpuA;
      rows.push({ metric: `pdcp / agents, ${r.name} (CPU seconds, p50)`, value: round2(cpuP / cpuA), unit: '×' });
    }
  }
  if (cs && p) {
    ratios[`${key}CorralSshOverPdcp`] = cs / p;
    rows.push({ metric: `corral --ssh / pdcp, ${r.name} (p50)`, value: round2(cs / p), unit: '×' });
  }
  for (const n of r.notes) rows.push({ metric: `note (${r.name})`, value: 0, unit: '', note: n });
  for (const f of r.failures) rows.push({ metric: `failure (${r.name})`, value: 0, unit: '', note: f });
}
const loadAtEnd = loadNow();
printTable(`File transfer to ${NODES} nodes: corral (agents, --ssh) vs pdcp over SSH (loopback targets; NODE_EXTRA_CA_CERTS ${ca}; load ${loadAtStart} at start, ${loadAtEnd} at end)`, rows);
const file = writeResults('fanout-files', {
  reps: REPS,
  nodes: NODES,
  nodeExtraCaCerts: ca,
  loadAtStart,
  loadAtEnd,
  tools: { pdcp: !pdcpMissing, sshd: !sshdWhy },
  cases: results,
  ratios,
});
process.stdout.write(`\nwritten to ${file}\n`);
