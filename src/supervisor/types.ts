// The supervisor's vocabulary: what a group of processes is configured as, the states of the group
// and process machines (Cluster::Init's names, so the status file reads the same), and what the
// supervisor reports. No imports with side effects: the agent and the CLI both load this.

import type { LogRotation, RunMode, StopTimes, ThrottleTimes } from '../config/cltab.js';

export type { LogRotation, RunMode } from '../config/cltab.js';
export type StopLadder = StopTimes;
export type RespawnThrottle = ThrottleTimes;

/** SIGINT at once, SIGTERM 5 s later, SIGKILL 15 s after the SIGINT (Cluster::Init's ladder). */
export const DEFAULT_STOP: StopLadder = { termAfterMs: 5_000, killAfterMs: 15_000 };
/** More than 5 respawns each within 1 s of the previous: pause 60 s (Cluster::Init's ckfreq). */
export const DEFAULT_THROTTLE: RespawnThrottle = { limit: 5, windowMs: 1_000, pauseMs: 60_000 };
export const DEFAULT_LOG_ROTATION: LogRotation = { maxBytes: 10 * 1024 * 1024, keep: 5 };

export interface EntrySpec {
  tag: string;
  /** A cltab level field ("1", "12", "long1,long2", "start") or an explicit list of level names. */
  levels: string | readonly string[];
  mode: RunMode;
  /** Run by `/bin/sh -c`. */
  command: string;
  /** Where it was declared, for messages ("/etc/cltab:12"). */
  origin?: string;
}

export interface GroupSpec {
  name: string;
  /** In start order. */
  entries: readonly EntrySpec[];
  stop?: StopLadder;
  throttle?: RespawnThrottle;
  /** Added to the supervisor's environment for this group's processes. */
  env?: Readonly<Record<string, string>>;
  cwd?: string;
}

export interface SupervisorConfig {
  groups: readonly GroupSpec[];
}

export type GroupState = 'CONFIGURED' | 'STARTING' | 'CHECKING' | 'DONE' | 'PASSED' | 'FAILED' | 'STOPPING' | 'DUMPING' | 'HALTING';

export type ProcState =
  | 'CONFIGURED'
  | 'SETUP'
  | 'RUNFG'
  | 'RUNNING'
  | 'RUNBG'
  | 'RUNTEST'
  | 'TESTING'
  | 'PASS'
  | 'FAIL'
  | 'DONE'
  | 'PAUSING'
  | 'STOPPING';

export interface ExitInfo {
  /** Exit status, or null when a signal ended it or it never started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why it could not be started (spawn failed), when that is what happened. */
  error?: string;
  /** Wall-clock milliseconds. */
  at: number;
}

export interface ProcessStatus {
  tag: string;
  mode: RunMode;
  levels: string | readonly string[];
  state: ProcState;
  /** The live process (the leader of its process group), if one runs. */
  pid: number | null;
  /** Executions so far, and how many of them were respawns. */
  runs: number;
  restarts: number;
  lastExit: ExitInfo | null;
  /** Respawning is paused by the throttle. */
  paused: boolean;
  /** Its stdout and stderr go here (rotated as LOG.1, LOG.2, ...). */
  log: string;
}

export interface GroupStatus {
  name: string;
  /** The level last told (null: never told). */
  level: string | null;
  state: GroupState;
  processes: ProcessStatus[];
}

export interface SupervisorStatus {
  groups: GroupStatus[];
  logDir: string;
}

/** One transition or notice; `at` is wall-clock ms (display), `mono` the supervisor clock's ms. */
export type SupervisorEvent =
  | { kind: 'group'; group: string; level: string | null; from: GroupState; to: GroupState; cause: string; at: number; mono: number }
  | {
      kind: 'process';
      group: string;
      tag: string;
      from: ProcState;
      to: ProcState;
      cause: string;
      pid: number | null;
      exit?: ExitInfo;
      at: number;
      mono: number;
    }
  | { kind: 'warning'; group: string; tag?: string; message: string; at: number; mono: number }
  | { kind: 'removed'; group: string; at: number; mono: number };
