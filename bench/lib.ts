// Shared benchmark helpers: percentiles, a printed table, and a JSON record of every run with the
// machine facts next to the numbers (the machines are shared and noisy: compare ratios in a run).

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(samples: number[]): LatencySummary {
  const s = [...samples].sort((a, b) => a - b);
  const sum = s.reduce((a, b) => a + b, 0);
  return { count: s.length, p50: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99), max: s[s.length - 1] ?? NaN, mean: sum / s.length };
}

export interface Row {
  metric: string;
  value: number;
  unit: string;
  target?: string;
  ok?: boolean;
  note?: string;
}

export function printTable(title: string, rows: Row[]): void {
  const fmt = (v: number): string => (Number.isInteger(v) ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3));
  const cells = rows.map((r) => [r.metric, `${fmt(r.value)} ${r.unit}`, r.target ?? '', r.ok === undefined ? '' : r.ok ? 'yes' : 'NO', r.note ?? '']);
  const headers = ['metric', 'value', 'target', 'met', 'note'];
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: string[]): string => c.map((x, i) => x.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  process.stdout.write(`\n${title}\n${line(headers)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${cells.map(line).join('\n')}\n`);
}

export function machine(): Record<string, unknown> {
  return {
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavg: os.loadavg(),
    nodeExtraCaCerts: process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset',
    date: new Date().toISOString(),
  };
}

export function writeResults(name: string, data: Record<string, unknown>): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}.json`);
  writeFileSync(file, JSON.stringify({ benchmark: name, machine: machine(), ...data }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
  return file;
}

/** A benchmark's command line: `--quick`, and `opt('--name')` for the value after an option. */
export function benchArgs(argv: readonly string[] = process.argv.slice(2)): { quick: boolean; opt: (name: string) => string | undefined } {
  return {
    quick: argv.includes('--quick'),
    opt: (name) => {
      const i = argv.indexOf(name);
      return i === -1 ? undefined : argv[i + 1];
    },
  };
}

/** How a timed command went: wall time, exit 0 or not, and the tail of its output (for failures). */
export interface Timed {
  ms: number;
  ok: boolean;
  detail: string;
}

/** Runs a peer tool or the CLI once, timed; killed after `timeoutMs`. Never rejects. */
export function timedSpawn(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Timed> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - t0, ok: false, detail: String(err) });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - t0, ok: code === 0, detail: `exit ${code}: ${out.trim().slice(-300)}` });
    });
  });
}
