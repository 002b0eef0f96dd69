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

/** The real uid of `pid` (/proc/PID/status), or undefined. */
function realUid(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
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

// --- attaching a group to a lock: who may -------------------------------------------------------
//
// Node has no SO_PEERCRED, so the lock service cannot ask the kernel who is at the other end of its
// UNIX socket; and a pgid in a request is only a claim. What it checks instead is that the group
// was started *for this request*: `corral lock` starts CMD's group leader (its gate) with a fresh
// random secret in its environment and sends the same secret with the request. A process's initial
// environment (/proc/PID/environ) is readable only by its own user (and root), and only if the
// process is dumpable: nobody can plant a secret in another user's process, nor read one out of it.
// So a group whose leader's environment carries the request's secret was started by whoever sent
// the request (or by a program it ran), and may be kept and signalled on its behalf. Besides:
// - the pgid must name a live process that leads its group (pid = pgid);
// - a daemon that does not run as root keeps and signals only its own user's groups (it could not
//   signal another user's, nor read their environment): another user's group is never attached
//   (on a socket shared by several users, -s, such a client gets the guard instead: see
//   lock-service.ts); root may attach any user's group that carries the secret.

/** The environment variable that carries a request's secret into its group leader. */
export const GATE_SECRET_ENV = 'CORRAL_LOCK_GATE';
const SECRET = /^[0-9a-f]{32,128}$/;

export type AttachCheck =
  | { ok: true; identity: ProcessGroupIdentity }
  /** `otherUser`: the group cannot be verified because it is not the daemon's user's. */
  | { ok: false; reason: string; otherUser: boolean };

/** The owner rule alone: may a daemon running as `daemonUid` keep and signal a group of `ownerUid`? */
export function ownerMayAttach(daemonUid: number, ownerUid: number): boolean {
  return daemonUid === 0 || daemonUid === ownerUid;
}

/** Whether process group `pgid` may be attached to the request that sent `secret` (see above). */
export function checkAttach(pgid: number, secret: string, daemonUid: number = process.getuid?.() ?? 0): AttachCheck {
  const refuse = (reason: string, otherUser = false): AttachCheck => ({ ok: false, reason, otherUser });
  if (!Number.isSafeInteger(pgid) || pgid < 2) return refuse(`${String(pgid)} is not a process group id`);
  if (!SECRET.test(secret)) return refuse('the gate secret must be 32 to 128 lowercase hexadecimal digits');
  const stat = procStat(pgid);
  if (stat === undefined || stat.state === 'Z' || stat.state === 'X') return refuse(`process group ${pgid} does not exist (no live process ${pgid})`);
  if (stat.pgrp !== pgid) return refuse(`process ${pgid} does not lead a process group (it is in group ${stat.pgrp}): attach a group leader, whose pid is the group id`);
  const owner = realUid(pgid);
  if (owner === undefined) return refuse(`process group ${pgid} does not exist (no live process ${pgid})`);
  if (!ownerMayAttach(daemonUid, owner)) {
    return refuse(`process group ${pgid} belongs to uid ${owner}, and this lock daemon runs as uid ${daemonUid}: it keeps and signals only its own user's commands`, true);
  }
  let environ: string;
  try {
    environ = readFileSync(`/proc/${pgid}/environ`, 'latin1');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return refuse(`process group ${pgid} does not exist (no live process ${pgid})`);
    return refuse(`the environment of process ${pgid} cannot be read (${code ?? 'error'}: a set-uid or non-dumpable program), so its group cannot be verified`, true);
  }
  if (!environ.split('\0').includes(`${GATE_SECRET_ENV}=${secret}`)) {
    return refuse(`process group ${pgid} was not started for this request: its leader's environment does not carry the request's ${GATE_SECRET_ENV} secret`);
  }
  // Read again: the leader must still be the process whose environment was read.
  const again = procStat(pgid);
  if (again === undefined || again.start !== stat.start || again.pgrp !== pgid) return refuse(`process group ${pgid} does not exist any more`);
  return { ok: true, identity: { pgid, start: stat.start, boot: bootId() } };
}
