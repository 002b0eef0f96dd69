// One execution of an entry's command: `/bin/sh -c COMMAND` (as Cluster::Init's Perl exec did for
// any command with shell syntax) started as the leader of a new session and process group, so a
// stop reaches the shell's children too. Signals go to the whole group, and only while the
// leader is unreaped: once Node has reported its exit, the pid, and with it the group id, may
// belong to an unrelated process.

import { spawn, type ChildProcess } from 'node:child_process';
import type { RotatingLog } from './logfile.js';
import { processStartTime } from './procfs.js';

export interface ChildOptions {
  shell: string;
  command: string;
  env: NodeJS.ProcessEnv;
  cwd?: string;
  log: RotatingLog;
}

export interface ChildCallbacks {
  /** The command is running (exec succeeded). */
  spawned(): void;
  /** The leader exited and has been reaped. Not called when it never started. */
  exited(code: number | null, signal: NodeJS.Signals | null): void;
  /** It could not be started; called once, asynchronously, instead of spawned/exited. */
  failed(err: Error): void;
}

export class ChildRun {
  readonly pid: number | undefined;
  readonly startTime: string | undefined;
  private reaped = false;

  constructor(options: ChildOptions, callbacks: ChildCallbacks) {
    let child: ChildProcess;
    try {
      child = spawn(options.shell, ['-c', options.command], {
        detached: true, // setsid(): a new session and process group led by the shell
        stdio: ['ignore', 'pipe', 'pipe'],
        env: options.env,
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      });
    } catch (err) {
      this.reaped = true;
      queueMicrotask(() => callbacks.failed(err instanceof Error ? err : new Error(String(err))));
      return;
    }
    this.pid = child.pid;
    if (this.pid === undefined) this.reaped = true;
    else this.startTime = processStartTime(this.pid);
    const { log } = options;
    child.stdout?.on('data', (chunk: Buffer) => log.write(chunk));
    child.stderr?.on('data', (chunk: Buffer) => log.write(chunk));
    // A reader error (EIO, a closed pipe) only loses output; it must not throw from an emitter.
    child.stdout?.on('error', () => undefined);
    child.stderr?.on('error', () => undefined);
    child.once('spawn', () => callbacks.spawned());
    child.once('exit', (code, signal) => {
      // Node has reaped it: from here on, neither the pid nor the group id is ours to signal.
      this.reaped = true;
      callbacks.exited(code, signal);
    });
    child.on('error', (err) => {
      // After a successful spawn, 'error' only reports a failed kill or send; we use neither.
      if (this.pid === undefined) callbacks.failed(err);
    });
  }

  /** Whether the leader runs (or is a zombie not yet reaped): only then may its group be signalled. */
  get live(): boolean {
    return !this.reaped && this.pid !== undefined;
  }

  /** Sends `signal` to the whole process group; false (and nothing sent) once the leader is reaped. */
  signalGroup(signal: NodeJS.Signals): boolean {
    if (!this.live) return false;
    try {
      process.kill(-(this.pid as number), signal);
      return true;
    } catch {
      return false;
    }
  }
}
