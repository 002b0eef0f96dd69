// A quick in-process measurement of the lock recipe on the embedded store: acquire + release
// cycles per second for 1 client and for 64 concurrent clients on distinct resources, each with
// its own session. Not a test; prints a table.
//
//   node dist/src/coord/lock/lock-bench.js [seconds per run]

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEmbeddedStore } from '../../store/embedded/index.js';
import type { Store } from '../../store/store.js';
import { Session } from '../session.js';
import { acquire } from './acquire.js';

const SECONDS = Number(process.argv[2] ?? 3);

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN;
}

async function run(store: Store, clients: number, resourceOf: (client: number) => string): Promise<Record<string, string | number>> {
  const sessions = await Promise.all(Array.from({ length: clients }, () => Session.open(store, { ttlSeconds: 10, keepaliveIntervalMs: 2000 })));
  const latencies: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  const start = performance.now();
  await Promise.all(
    sessions.map(async (session, i) => {
      const resource = resourceOf(i);
      while (performance.now() < end) {
        const t = performance.now();
        const lock = await acquire(store, session, { resource });
        await lock.release();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  await Promise.all(sessions.map((s) => s.close()));
  latencies.sort((a, b) => a - b);
  return {
    clients,
    'cycles/s': Math.round(latencies.length / seconds),
    cycles: latencies.length,
    'p50 ms': percentile(latencies, 0.5).toFixed(3),
    'p99 ms': percentile(latencies, 0.99).toFixed(3),
  };
}

const dataDir = await mkdtemp(join(tmpdir(), 'corral-lock-bench-'));
const store = await openEmbeddedStore({ dataDir });
try {
  await run(store, 1, () => 'warmup'); // JIT and the store's first segment, not measured
  const rows = [
    { what: 'simple, 1 client', ...(await run(store, 1, () => 'bench')) },
    { what: 'simple, 64 clients, distinct resources', ...(await run(store, 64, (i) => `bench${i}`)) },
    { what: 'sequence _s_, 1 client', ...(await run(store, 1, () => '_s_bench[1]')) },
    { what: 'simple, 64 clients, one resource (EX)', ...(await run(store, 64, () => 'contended')) },
  ];
  console.table(rows);
} finally {
  await store.close();
  await rm(dataDir, { recursive: true, force: true });
}
