// A process's identity on Linux: its pid plus its start time (field 22 of /proc/PID/stat, clock
// ticks since boot). A pid can be reused; the pair cannot, so a check of both tells whether a pid
// still names the process that was started.

import { readFileSync } from 'node:fs';

export interface ProcStat {
  /** R, S, D, Z, ... (Z and X: dead, not yet or being reaped). */
  state: string;
  startTime: string;
}

export function readProcStat(pid: number): ProcStat | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? 'X', startTime: fields[19] ?? '' };
  } catch {
    return undefined;
  }
}

export function processStartTime(pid: number): string | undefined {
  return readProcStat(pid)?.startTime;
}
