// Process liveness that does not mistake a zombie for a live process: a killed process whose
// parent has not reaped it yet (common when PID 1 is not an init that reaps) still answers
// kill(pid, 0), but it holds no locks, sockets or files any more.

import { readFileSync } from 'node:fs';

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state !== 'Z' && state !== 'X';
  } catch {
    // No /proc (or it vanished meanwhile): trust kill(0) unless the entry is gone.
    return process.platform !== 'linux';
  }
}
