// A quick benchmark of the embedded store on this machine: put latency (one caller), throughput
// with 64 concurrent callers, and how many fsyncs group commit needed. Prints a table.
//
//   node dist/src/store/embedded/store-bench.js [puts]

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEmbeddedStore, type EmbeddedStore } from './embedded-store.js';

const PUTS = Number(process.argv[2] ?? 20_000);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

async function serial(store: EmbeddedStore, n: number, op: (i: number) => Promise<unknown>): Promise<number[]> {
  const latencies: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await op(i);
    latencies.push(performance.now() - t);
  }
  return latencies.sort((a, b) => a - b);
}

async function concurrent(store: EmbeddedStore, callers: number, n: number): Promise<{ perSecond: number; fsyncs: number; p50: number; p99: number }> {
  const before = store.stats().fsyncs;
  const latencies: number[] = [];
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (next < n) {
        const i = next++;
        const t = performance.now();
        await store.put(`conc/${i % 5_000}`, `value ${i}`);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return { perSecond: n / seconds, fsyncs: store.stats().fsyncs - before, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}

const dataDir = await mkdtemp(join(tmpdir(), 'corral-store-bench-'));
const store = await openEmbeddedStore({ dataDir });
try {
  const rows: Record<string, string>[] = [];
  const show = (name: string, l: number[]): void => {
    rows.push({ measure: name, p50: percentile(l, 0.5).toFixed(3), p90: percentile(l, 0.9).toFixed(3), p99: percentile(l, 0.99).toFixed(3), unit: 'ms' });
  };
  const before = store.stats().fsyncs;
  show('put, 1 caller', await serial(store, 5_000, (i) => store.put(`serial/${i % 1_000}`, `value ${i}`)));
  const serialFsyncs = store.stats().fsyncs - before;
  show('get, 1 caller', await serial(store, 5_000, (i) => store.get(`serial/${i % 1_000}`)));
  show('txn (CAS), 1 caller', await serial(store, 2_000, (i) =>
    store.txn({ compare: [{ key: `cas/${i % 100}`, target: 'version', op: '>', value: -1n }], success: [{ type: 'put', key: `cas/${i % 100}`, value: 'x' }] }),
  ));
  console.table(rows);
  const conc = await concurrent(store, 64, PUTS);
  console.table([
    { measure: '64 concurrent callers', 'puts/s': Math.round(conc.perSecond), puts: PUTS, fsyncs: conc.fsyncs, 'puts per fsync': (PUTS / conc.fsyncs).toFixed(1), 'p50 ms': conc.p50.toFixed(3), 'p99 ms': conc.p99.toFixed(3) },
    { measure: '1 caller (above)', 'puts/s': '', puts: 5_000, fsyncs: serialFsyncs, 'puts per fsync': (5_000 / serialFsyncs).toFixed(1), 'p50 ms': '', 'p99 ms': '' },
  ]);
  console.log('stats', store.stats());
} finally {
  await store.close();
  await rm(dataDir, { recursive: true, force: true });
}
