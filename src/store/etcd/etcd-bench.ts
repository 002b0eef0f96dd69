// A quick benchmark of EtcdStore against raw grpc-js calls to the same etcd, in one run: put, get
// and lease keepalive latency with one caller, and put throughput with 64 callers. Starts its own
// single-member etcd on loopback (the test fixture), or uses ETCD_ENDPOINT=host:port.
//
//   node dist/src/store/etcd/etcd-bench.js [rounds]
//
// Rounds alternate between the two clients so that drift in the machine's speed hits both alike.

import { startEtcd, type EtcdCluster } from '../../testkit/etcd.js';
import { openEtcdStore } from './index.js';
import { RawEtcdClient } from './raw-bench-client.js';

const ROUNDS = Number(process.argv[2] ?? 5);
const PER_ROUND = 400;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

async function timeEach(n: number, op: (i: number) => Promise<unknown>, into: number[]): Promise<void> {
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await op(i);
    into.push(performance.now() - t);
  }
}

async function throughput(callers: number, n: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (next < n) await op(next++);
    }),
  );
  return n / ((performance.now() - start) / 1000);
}

const external = process.env.ETCD_ENDPOINT;
let etcd: EtcdCluster | undefined;
const endpoint = external ?? (etcd = await startEtcd()).endpoints[0] ?? '';
const store = await openEtcdStore({ endpoints: [endpoint] });
const raw = new RawEtcdClient(endpoint);
try {
  const lease = await store.grantLease(60);
  const rawLease = (await raw.grant(60)).ID;
  const pair = (): [number[], number[]] => [[], []];
  const samples = { put: pair(), get: pair(), keepalive: pair() };
  const tput: [number[], number[]] = [[], []];
  // Warm both clients up (connections, JIT).
  await timeEach(200, (i) => store.put(`bench/warm/${i}`, 'x'), []);
  await timeEach(200, (i) => raw.put(`bench/warm/${i}`, 'x'), []);
  for (let round = 0; round < ROUNDS; round++) {
    const { put: p, get: g, keepalive: k } = samples;
    await timeEach(PER_ROUND, (i) => store.put(`bench/s/${i % 100}`, `value ${i}`), p[0]);
    await timeEach(PER_ROUND, (i) => raw.put(`bench/r/${i % 100}`, `value ${i}`), p[1]);
    await timeEach(PER_ROUND, (i) => store.get(`bench/s/${i % 100}`), g[0]);
    await timeEach(PER_ROUND, (i) => raw.get(`bench/r/${i % 100}`), g[1]);
    await timeEach(PER_ROUND, () => store.keepAlive(lease.id), k[0]);
    await timeEach(PER_ROUND, () => raw.keepAliveOnce(rawLease), k[1]);
    tput[0].push(await throughput(64, 2_000, (i) => store.put(`bench/c/${i % 1000}`, `v${i}`)));
    tput[1].push(await throughput(64, 2_000, (i) => raw.put(`bench/c/${i % 1000}`, `v${i}`)));
  }
  const rows = Object.entries(samples).flatMap(([name, [corral, plain]]) => {
    corral.sort((a, b) => a - b);
    plain.sort((a, b) => a - b);
    return [
      {
        measure: `${name}, 1 caller (ms)`,
        'EtcdStore p50': percentile(corral, 0.5).toFixed(3),
        'raw p50': percentile(plain, 0.5).toFixed(3),
        'ratio p50': (percentile(corral, 0.5) / percentile(plain, 0.5)).toFixed(2),
        'EtcdStore p99': percentile(corral, 0.99).toFixed(3),
        'raw p99': percentile(plain, 0.99).toFixed(3),
      },
    ];
  });
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  rows.push({
    measure: 'puts/s, 64 callers',
    'EtcdStore p50': median(tput[0]).toFixed(0),
    'raw p50': median(tput[1]).toFixed(0),
    'ratio p50': (median(tput[1]) / median(tput[0])).toFixed(2),
    'EtcdStore p99': '',
    'raw p99': '',
  });
  console.log(`etcd ${external ? `at ${endpoint}` : '(one member, loopback, started by the benchmark)'}; ${ROUNDS} rounds of ${PER_ROUND} calls per measure and client`);
  console.table(rows);
  console.log('ratio: EtcdStore over raw (latency), raw over EtcdStore (throughput); above 1 means corral costs that much more');
} finally {
  raw.close();
  await store.close();
  await etcd?.stop();
}
