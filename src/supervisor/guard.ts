// The guard: a small process every supervisor starts beside itself, in its own session, reading a
// pipe from the supervisor. The supervisor writes `+ PID START TERM_MS KILL_MS` when it starts a
// process group and `- PID` when it reaps its leader. When the pipe reaches EOF, the supervisor
// is gone: after a clean close nothing is listed and the guard just exits; after a crash (even
// SIGKILL) it stops every listed group with the same SIGINT → SIGTERM → SIGKILL ladder, so no
// supervised process outlives its supervisor. A group is signalled only while its leader still
// has the recorded start time: a leader that exited (and was reaped by init) is never confused
// with whatever process reuses its pid.

import { createInterface } from 'node:readline';
import { readProcStat } from './procfs.js';

interface Listed {
  start: string;
  termAfterMs: number;
  killAfterMs: number;
  /** Rungs sent: 1 SIGINT, 2 SIGTERM, 3 SIGKILL. */
  sent: number;
}

const POLL_MS = 100;
/** After the SIGKILL, how long to wait for the leaders to go before giving up. */
const GIVE_UP_AFTER_KILL_MS = 5_000;

const listed = new Map<number, Listed>();

function parse(line: string): void {
  const [op, pidText, start, term, kill] = line.trim().split(' ');
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  if (op === '-') listed.delete(pid);
  else if (op === '+' && start) listed.set(pid, { start, termAfterMs: Number(term) || 0, killAfterMs: Number(kill) || 0, sent: 0 });
}

/** The leader still runs and is the process that was listed (a zombie holds nothing: gone). */
function running(pid: number, entry: Listed): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.startTime === entry.start && stat.state !== 'Z' && stat.state !== 'X';
}

function signal(pid: number, entry: Listed, sig: NodeJS.Signals, rung: number): void {
  entry.sent = rung;
  try {
    process.kill(-pid, sig);
  } catch {
    // the group is gone
  }
}

async function stopAll(): Promise<void> {
  process.stderr.write(`corral supervisor guard: the supervisor ended without stopping ${listed.size} process group(s); stopping them\n`);
  const t0 = performance.now();
  const deadline = Math.max(0, ...[...listed.values()].map((e) => e.killAfterMs)) + GIVE_UP_AFTER_KILL_MS;
  while (listed.size > 0) {
    const elapsed = performance.now() - t0;
    for (const [pid, entry] of listed) {
      if (!running(pid, entry)) listed.delete(pid);
      else if (entry.sent < 1) signal(pid, entry, 'SIGINT', 1);
      else if (entry.sent < 3 && elapsed >= entry.killAfterMs) signal(pid, entry, 'SIGKILL', 3);
      else if (entry.sent < 2 && elapsed >= entry.termAfterMs) signal(pid, entry, 'SIGTERM', 2);
    }
    if (listed.size === 0 || elapsed > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  process.exit(listed.size === 0 ? 0 : 1);
}

const lines = createInterface({ input: process.stdin });
lines.on('line', parse);
lines.on('close', () => {
  if (listed.size === 0) process.exit(0);
  void stopAll();
});
