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

// --- which group it is ----------------------------------------------------------------------------
//
// A lock kept for a process group outlives the client that asked, and may outlive the agent
// process too (the group is recorded with the lock in the store). A pgid alone could name another
// group later (pids are reused), so a group is known by its leader's pid, the leader's start time
// (clock ticks since boot, /proc/PID/stat field 22) and the boot it started in.

/** A process group as recorded with a lock: its leader when it was attached. */
export interface ProcessGroupIdentity {
  pgid: number;
  /** The leader's start time, in clock ticks since boot. */
  start: number;
  /** /proc/sys/kernel/random/boot_id when it was attached. */
  boot: string;
}

let bootIdValue: string | undefined;

/** This boot's id ('' where unknown). */
export function bootId(): string {
  if (bootIdValue === undefined) {
    try {
      bootIdValue = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      bootIdValue = '';
    }
  }
  return bootIdValue;
}

interface ProcStat {
  state: string;
  pgrp: number;
  session: number;
  start: number;
}

function procStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // After "pid (comm) ": state ppid pgrp session tty_nr ... starttime (field 22 of the line).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', pgrp: Number(fields[2]), session: Number(fields[3]), start: Number(fields[19]) };
}

/** Whether the group recorded as `id` still has a live member (false once it may be another group). */
export function sameGroupRuns(id: ProcessGroupIdentity): boolean {
  if (id.boot !== bootId()) return false;
  const leader = procStat(id.pgid);
  if (leader !== undefined && leader.state !== 'Z' && leader.state !== 'X' && leader.start !== id.start) {
    // Its pid belongs to another process now: the kernel reuses a pid only once no group bears it.
    return false;
  }
  return processGroupAlive(id.pgid);
}

/** Signals the group recorded as `id` if it is still that group; false otherwise. */
export function signalSameGroup(id: ProcessGroupIdentity, signal: NodeJS.Signals): boolean {
  return sameGroupRuns(id) && signalProcessGroup(id.pgid, signal);
}

// --- attaching a group to a lock -------------------------------------------------------------------

export type AttachCheck = { ok: true; identity: ProcessGroupIdentity } | { ok: false; reason: string };

/** Whether process group `pgid` can be attached to a lock: a live process that leads its group. */
export function checkAttach(pgid: number): AttachCheck {
  const refuse = (reason: string): AttachCheck => ({ ok: false, reason });
  if (!Number.isSafeInteger(pgid) || pgid < 2) return refuse(`${String(pgid)} is not a process group id`);
  const stat = procStat(pgid);
  if (stat === undefined || stat.state === 'Z' || stat.state === 'X') return refuse(`process group ${pgid} does not exist (no live process ${pgid})`);
  if (stat.pgrp !== pgid) return refuse(`process ${pgid} does not lead a process group (it is in group ${stat.pgrp}): attach a group leader, whose pid is the group id`);
  return { ok: true, identity: { pgid, start: stat.start, boot: bootId() } };
}
