// A quick measurement of the supervisor (not a test, not the benchmark against supervisord and
// runit): respawn latency from a process's exit to its successor running, and the cost of
// watching 200 idle processes. Run: npm run build && node dist/src/supervisor/measure.js

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Supervisor } from './supervisor.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-measure-'));

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

function guardPid(): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('supervisor/guard.js')) return Number(entry);
    } catch {
      // gone
    }
  }
  return undefined;
}

async function respawnLatency(entries: number, restarts: number): Promise<{ p50: number; p99: number; max: number; n: number }> {
  const s = new Supervisor({
    config: {
      groups: [
        {
          name: 'lat',
          // No throttle pause here: the point is the restart path itself.
          throttle: { limit: 1_000_000, windowMs: 1000, pauseMs: 0 },
          entries: Array.from({ length: entries }, (_, i) => ({ tag: `r${i}`, levels: '1', mode: 'respawn' as const, command: 'exit 0' })),
        },
      ],
    },
    logDir: path.join(dir, `lat${entries}`),
  }).start();
  const exitedAt = new Map<string, number>();
  const samples: number[] = [];
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  s.subscribe((e) => {
    if (e.kind !== 'process') return;
    if (e.cause === 'EXITED') exitedAt.set(e.tag, e.mono);
    else if (e.cause === 'SPAWNED' && exitedAt.has(e.tag)) {
      samples.push(e.mono - (exitedAt.get(e.tag) as number));
      exitedAt.delete(e.tag);
      if (samples.length >= restarts) done();
    }
  });
  s.tell('lat', '1');
  await finished;
  await s.close();
  samples.sort((a, b) => a - b);
  return { p50: percentile(samples, 50), p99: percentile(samples, 99), max: samples[samples.length - 1] ?? NaN, n: samples.length };
}

async function idleCost(count: number, seconds: number): Promise<void> {
  const s = new Supervisor({
    config: {
      groups: [{ name: 'idle', entries: Array.from({ length: count }, (_, i) => ({ tag: `p${i}`, levels: '1', mode: 'respawn' as const, command: 'exec sleep 3600' })) }],
    },
    logDir: path.join(dir, 'idle'),
  }).start();
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  s.tell('idle', '1');
  while (s.groupStatus('idle')?.state !== 'DONE') await new Promise((resolve) => setTimeout(resolve, 5));
  const started = performance.now() - t0;
  await new Promise((resolve) => setTimeout(resolve, 1000)); // let the spawns settle
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - wall0;
  const running = s.status().groups[0]?.processes.filter((p) => p.pid !== null).length;
  const guard = guardPid();
  console.log(`${count} idle processes (${running} running): started in ${started.toFixed(0)} ms`);
  console.log(`  supervisor CPU while idle: ${(((cpu.user + cpu.system) / 1000 / wall) * 100).toFixed(3)} % of a core over ${seconds} s`);
  console.log(`  supervisor RSS: ${(process.memoryUsage().rss / 1048576).toFixed(1)} MiB (${((process.memoryUsage().rss - rss0) / 1048576).toFixed(1)} MiB more than before the tell)`);
  if (guard) console.log(`  guard RSS: ${(rssKb(guard) / 1024).toFixed(1)} MiB`);
  const h0 = performance.now();
  await s.close();
  console.log(`  halted all ${count} (SIGINT, all exit at once) in ${(performance.now() - h0).toFixed(0)} ms`);
}

try {
  console.log(`node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`);
  // First, in a fresh process, so the memory figures are the supervisor's and not the latency run's.
  await idleCost(200, Number(process.env.IDLE_SECONDS ?? 10));
  for (const [entries, restarts] of [
    [1, 2000],
    [20, 4000],
  ] as const) {
    const r = await respawnLatency(entries, restarts);
    console.log(
      `respawn latency, ${entries} entr${entries === 1 ? 'y' : 'ies'} exiting at once (exit reaped → successor exec'd), ${r.n} restarts: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(2)} ms`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
