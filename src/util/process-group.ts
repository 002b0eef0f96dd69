// Whether a process group still has a live member, and signalling it. The lock service keeps a
// lock whose client died while the command it protects still runs (the client attached the
// command's process group), and ends it when the group is gone.

import { readdirSync, readFileSync } from 'node:fs';
import { isProcessAlive } from './process.js';

/** Whether any process of group `pgid` is alive (zombies do not count). */
export function processGroupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // The group exists; a live leader settles it, else look for any other live member.
  if (isProcessAlive(pgid)) return true;
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return true; // cannot tell: assume it runs (keeping a lock too long is the safe side)
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // After the command name: state, ppid, pgrp.
      if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}

/** Sends `signal` to every process of the group; false when the group is gone. */
export function signalProcessGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}
