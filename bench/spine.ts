// The spine's benchmark (issue 2): store put/get latency and throughput over the real transport
// (HTTP/2 + mutual TLS from this process to the coordinator agent, a separate process), formation
// time of 3, 8 and 32 local agents, and an idle agent's memory and CPU.
//
//   npm run bench            (all benchmarks)     node dist/bench/spine.js [--quick]

import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RemoteStore } from '../src/client/remote-store.js';
import { loadClusterConfig } from '../src/config/cluster-config.js';
import { loadAdminCredentials } from '../src/config/pki-files.js';
import { runCorral } from '../src/testkit/cli.js';
import { RpcClient } from '../src/transport/client.js';
import { printTable, summarize, writeResults, type Row } from './lib.js';

const quick = process.argv.includes('--quick');

async function localUp(n: number): Promise<{ dir: string; formationMs: number; pids: number[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-bench-'));
  const r = await runCorral(['local', 'up', '-n', String(n), '--dir', dir, '--json'], { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`local up -n ${n} failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { formationMs: number; started: { pid: number }[] };
  return { dir, formationMs: out.formationMs, pids: out.started.map((s) => s.pid) };
}

async function localDown(dir: string): Promise<void> {
  await runCorral(['local', 'down', '--dir', dir], { timeoutMs: 120_000 });
  rmSync(dir, { recursive: true, force: true });
}

function adminStore(dir: string): RemoteStore {
  const config = loadClusterConfig(path.join(dir, 'corral.yaml'));
  const n1 = config.nodes[0];
  if (!n1) throw new Error('no node');
  const rpc = new RpcClient(
    { kind: 'tls', host: n1.address.host, port: n1.address.port, credentials: loadAdminCredentials(config.pkiDir), serverName: n1.name },
    { requestTimeoutMs: 10_000 },
  );
  return new RemoteStore(rpc, 'coordinator n1', { ownsClient: true });
}

async function serialLatency(count: number, op: (i: number) => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await op(i);
    samples.push(performance.now() - t);
  }
  return samples;
}

/** `clients` concurrent loops for `ms` milliseconds (bounded also by `maxOps`). */
async function throughput(clients: number, ms: number, maxOps: number, op: (i: number) => Promise<unknown>): Promise<{ opsPerSecond: number; samples: number[] }> {
  const samples: number[] = [];
  let next = 0;
  const t0 = performance.now();
  const deadline = t0 + ms;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline && next < maxOps) {
        const i = next++;
        const t = performance.now();
        await op(i);
        samples.push(performance.now() - t);
      }
    }),
  );
  return { opsPerSecond: samples.length / ((performance.now() - t0) / 1000), samples };
}

function procStat(pid: number): { cpuTicks: number; rssMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuTicks = Number(fields[11]) + Number(fields[12]); // utime + stime
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return { cpuTicks, rssMiB: rssKiB / 1024 };
}

async function storeBench(rows: Row[], results: Record<string, unknown>): Promise<void> {
  const { dir } = await localUp(1);
  const store = adminStore(dir);
  try {
    const n = quick ? 1000 : 5000;
    await serialLatency(500, (i) => store.put(`/bench/warm/${i}`, 'x')); // connection, JIT
    const put1 = summarize(await serialLatency(n, (i) => store.put(`/bench/s/${i % 1000}`, `value-${i}`)));
    const get1 = summarize(await serialLatency(n, (i) => store.get(`/bench/s/${i % 1000}`)));
    const ms = quick ? 1500 : 4000;
    const serialPut = await throughput(1, ms, 1e6, (i) => store.put(`/bench/t1/${i % 1000}`, 'v'));
    const put64 = await throughput(64, ms, 1e6, (i) => store.put(`/bench/t64/${i % 5000}`, 'v'));
    const get64 = await throughput(64, ms, 1e6, (i) => store.get(`/bench/t64/${i % 5000}`));
    const p64 = summarize(put64.samples);
    rows.push(
      { metric: 'put latency p50, 1 client', value: put1.p50, unit: 'ms', target: '<= 1 ms', ok: put1.p50 <= 1 },
      { metric: 'put latency p99, 1 client', value: put1.p99, unit: 'ms' },
      { metric: 'get latency p50, 1 client', value: get1.p50, unit: 'ms' },
      { metric: 'get latency p99, 1 client', value: get1.p99, unit: 'ms' },
      { metric: 'puts/s, 1 client', value: Math.round(serialPut.opsPerSecond), unit: '/s' },
      { metric: 'puts/s, 64 clients', value: Math.round(put64.opsPerSecond), unit: '/s', target: '>= 5000/s', ok: put64.opsPerSecond >= 5000 },
      { metric: 'put latency p50 / p99, 64 clients', value: p64.p50, unit: `ms / ${p64.p99.toFixed(2)} ms` },
      { metric: 'gets/s, 64 clients', value: Math.round(get64.opsPerSecond), unit: '/s' },
    );
    results.store = { transport: 'HTTP/2 + mutual TLS 1.3, loopback, separate processes', put1, get1, putsPerSecond1: serialPut.opsPerSecond, putsPerSecond64: put64.opsPerSecond, put64: p64, getsPerSecond64: get64.opsPerSecond };
  } finally {
    await store.close();
    await localDown(dir);
  }
}

async function formationBench(rows: Row[], results: Record<string, unknown>): Promise<void> {
  const sizes = quick ? [3, 8] : [3, 8, 32];
  const formation: Record<string, number> = {};
  for (const n of sizes) {
    const { dir, formationMs } = await localUp(n);
    formation[n] = formationMs;
    await localDown(dir);
    const target = n === 8 ? '<= 2000 ms' : undefined;
    rows.push({ metric: `formation, ${n} agents`, value: formationMs, unit: 'ms', ...(target ? { target, ok: formationMs <= 2000 } : {}), ...(n === 8 ? { note: 'TrueCL: 8 nodes in < 10 s' } : n === 3 ? { note: 'TrueCL: 4 nodes in 5 s' } : {}) });
  }
  results.formationMs = formation;
}

async function idleBench(rows: Row[], results: Record<string, unknown>): Promise<void> {
  const { dir, pids } = await localUp(3);
  try {
    await new Promise((r) => setTimeout(r, quick ? 2000 : 5000)); // settle
    const windowMs = quick ? 5000 : 10_000;
    const before = pids.map(procStat);
    await new Promise((r) => setTimeout(r, windowMs));
    const after = pids.map(procStat);
    const ticksPerSecond = 100; // CLK_TCK on Linux
    const cpu = after.map((a, i) => ((a.cpuTicks - (before[i]?.cpuTicks ?? 0)) / ticksPerSecond / (windowMs / 1000)) * 100);
    const rss = after.map((a) => a.rssMiB);
    const maxCpu = Math.max(...cpu);
    const maxRss = Math.max(...rss);
    rows.push(
      { metric: 'idle agent RSS (max of 3)', value: maxRss, unit: 'MiB', target: '< 80 MiB', ok: maxRss < 80, note: 'n1 hosts the store' },
      { metric: 'idle agent CPU (max of 3)', value: maxCpu, unit: '% of a core', target: '< 1%', ok: maxCpu < 1 },
    );
    results.idle = { windowMs, rssMiB: rss, cpuPercent: cpu };
  } finally {
    await localDown(dir);
  }
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const results: Record<string, unknown> = { quick };
  await storeBench(rows, results);
  await formationBench(rows, results);
  await idleBench(rows, results);
  printTable(`corral spine benchmark (${os.cpus().length} cores, NODE_EXTRA_CA_CERTS ${process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset'})`, rows);
  const file = writeResults('spine', { rows, ...results });
  process.stdout.write(`\nwrote ${file}\n`);
}

await main();
