// The spine's benchmark (issues 2 and 3): store put/get/keepalive latency and throughput on both
// backends in one run — the embedded store over the real transport (HTTP/2 + mutual TLS from this
// process to the coordinator agent, a separate process), corral's etcd store, and raw grpc-js calls
// to the same etcd, with ratios — then formation time of 3, 8 and 32 local agents, and an idle
// agent's memory and CPU.
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
import { openEtcdStore } from '../src/store/etcd/index.js';
import { RawEtcdClient } from '../src/store/etcd/raw-bench-client.js';
import type { Store } from '../src/store/store.js';
import { startEtcd } from '../src/testkit/etcd.js';
import { printTable, summarize, writeResults, type LatencySummary, type Row } from './lib.js';

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

function adminStore(dir: string): Store {
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

/** One way of reaching a store: the operations the benchmark times. */
interface StoreTarget {
  name: string;
  put(key: string, value: string): Promise<unknown>;
  get(key: string): Promise<unknown>;
  keepAlive(): Promise<unknown>;
  close(): Promise<void>;
}

async function storeTarget(name: string, store: Store, cleanup: () => Promise<void>): Promise<StoreTarget> {
  const lease = await store.grantLease(60);
  return {
    name,
    put: (k, v) => store.put(k, v),
    get: (k) => store.get(k),
    keepAlive: () => store.keepAlive(lease.id),
    close: async () => {
      await store.revokeLease(lease.id).catch(() => undefined);
      await store.close();
      await cleanup();
    },
  };
}

async function rawEtcdTarget(endpoint: string): Promise<StoreTarget> {
  const raw = new RawEtcdClient(endpoint);
  const lease = await raw.grant(60);
  return {
    name: 'raw etcd (plain grpc-js)',
    put: (k, v) => raw.put(k, v),
    get: (k) => raw.get(k),
    keepAlive: () => raw.keepAliveOnce(String(lease.ID)),
    close: () => Promise.resolve(raw.close()),
  };
}

interface TargetResult {
  put: LatencySummary;
  get: LatencySummary;
  keepAlive: LatencySummary;
  putsPerSecond1: number;
  putsPerSecond64: number;
  put64: LatencySummary;
  getsPerSecond64: number;
}

/** Latencies in interleaved rounds, so that drift in the machine's speed hits every target alike. */
async function latencies(targets: StoreTarget[], rounds: number, perRound: number): Promise<Map<string, { put: number[]; get: number[]; keepAlive: number[] }>> {
  const out = new Map(targets.map((t) => [t.name, { put: [] as number[], get: [] as number[], keepAlive: [] as number[] }]));
  for (const t of targets) await serialLatency(200, (i) => t.put(`/bench/warm/${i}`, 'x')); // connections, JIT
  for (let r = 0; r < rounds; r++) {
    for (const t of targets) {
      const o = out.get(t.name) as { put: number[]; get: number[]; keepAlive: number[] };
      o.put.push(...(await serialLatency(perRound, (i) => t.put(`/bench/s/${i % 1000}`, `value-${i}`))));
      o.get.push(...(await serialLatency(perRound, (i) => t.get(`/bench/s/${i % 1000}`))));
      o.keepAlive.push(...(await serialLatency(perRound / 2, () => t.keepAlive())));
    }
  }
  return out;
}

async function storeBench(rows: Row[], results: Record<string, unknown>): Promise<void> {
  const { dir } = await localUp(1);
  const etcd = await startEtcd({ members: 1 });
  const targets: StoreTarget[] = [];
  try {
    targets.push(await storeTarget('corral, embedded store over HTTP/2 + mTLS', adminStore(dir), () => localDown(dir)));
    targets.push(await storeTarget('corral, etcd store (EtcdStore)', await openEtcdStore({ endpoints: etcd.endpoints }), () => Promise.resolve()));
    targets.push(await rawEtcdTarget(etcd.endpoints[0] as string));
    const lat = await latencies(targets, quick ? 2 : 5, quick ? 200 : 500);
    const ms = quick ? 1500 : 3000;
    const byName: Record<string, TargetResult> = {};
    for (const t of targets) {
      const l = lat.get(t.name) as { put: number[]; get: number[]; keepAlive: number[] };
      const serial = await throughput(1, ms, 1e6, (i) => t.put(`/bench/t1/${i % 1000}`, 'v'));
      const put64 = await throughput(64, ms, 1e6, (i) => t.put(`/bench/t64/${i % 5000}`, 'v'));
      const get64 = await throughput(64, ms, 1e6, (i) => t.get(`/bench/t64/${i % 5000}`));
      byName[t.name] = {
        put: summarize(l.put),
        get: summarize(l.get),
        keepAlive: summarize(l.keepAlive),
        putsPerSecond1: serial.opsPerSecond,
        putsPerSecond64: put64.opsPerSecond,
        put64: summarize(put64.samples),
        getsPerSecond64: get64.opsPerSecond,
      };
    }
    const [emb, cetcd, raw] = targets.map((t) => byName[t.name] as TargetResult) as [TargetResult, TargetResult, TargetResult];
    for (const t of targets) {
      const r = byName[t.name] as TargetResult;
      rows.push(
        { metric: `${t.name}: put p50 / p99`, value: r.put.p50, unit: `ms / ${r.put.p99.toFixed(2)} ms` },
        { metric: `${t.name}: get p50 / p99`, value: r.get.p50, unit: `ms / ${r.get.p99.toFixed(2)} ms` },
        { metric: `${t.name}: session keepalive p50`, value: r.keepAlive.p50, unit: 'ms' },
        { metric: `${t.name}: puts/s, 1 client`, value: Math.round(r.putsPerSecond1), unit: '/s' },
        { metric: `${t.name}: puts/s, 64 clients`, value: Math.round(r.putsPerSecond64), unit: '/s' },
        { metric: `${t.name}: gets/s, 64 clients`, value: Math.round(r.getsPerSecond64), unit: '/s' },
      );
    }
    rows.push(
      { metric: 'embedded: put p50, 1 client', value: emb.put.p50, unit: 'ms', target: '<= 1 ms', ok: emb.put.p50 <= 1 },
      { metric: 'embedded: puts/s, 64 clients', value: Math.round(emb.putsPerSecond64), unit: '/s', target: '>= 5000/s', ok: emb.putsPerSecond64 >= 5000 },
      { metric: 'etcd: corral / raw, put p50', value: cetcd.put.p50 / raw.put.p50, unit: 'x', target: '<= 1.5x', ok: cetcd.put.p50 / raw.put.p50 <= 1.5 },
      { metric: 'etcd: corral / raw, get p50', value: cetcd.get.p50 / raw.get.p50, unit: 'x' },
      { metric: 'etcd: corral / raw, keepalive p50', value: cetcd.keepAlive.p50 / raw.keepAlive.p50, unit: 'x' },
      { metric: 'etcd: corral / raw, puts/s at 64 clients', value: cetcd.putsPerSecond64 / raw.putsPerSecond64, unit: 'x' },
      { metric: 'embedded / etcd (corral), put p50', value: emb.put.p50 / cetcd.put.p50, unit: 'x' },
      { metric: 'embedded / etcd (corral), puts/s at 64 clients', value: emb.putsPerSecond64 / cetcd.putsPerSecond64, unit: 'x' },
    );
    results.store = { note: 'single-member etcd on loopback with a temporary data dir; embedded store on a 1-node local cluster', targets: byName };
  } finally {
    for (const t of targets) await t.close();
    await etcd.stop();
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
