// Human output: aligned tables, durations, and colour only on a terminal without NO_COLOR.

import type { CliIO } from './verb.js';

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** 0s, 42s, 3m07s, 5h02m, 3d04h */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor((s % 86_400) / 3600)).padStart(2, '0')}h`;
}

export type Tone = 'good' | 'bad' | 'warn' | 'dim';

const CODES: Record<Tone, number> = { good: 32, bad: 31, warn: 33, dim: 90 };

export function paint(io: CliIO, tone: Tone, text: string): string {
  return io.color ? `\x1b[${CODES[tone]}m${text}\x1b[0m` : text;
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}
