// The supervisor's end of the guard (guard.ts): starts it, tells it every process group started
// and every leader reaped, and starts it again (with the full list) if it dies. Writes go to a
// pipe, which the kernel holds even if this process is SIGKILLed right after.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { ProcessRegistry } from './proc.js';
import type { StopLadder } from './types.js';

const GUARD_SCRIPT = fileURLToPath(new URL('./guard.js', import.meta.url));
const RESTART_DELAY_MS = 1_000;
const CLOSE_WAIT_MS = 2_000;

export class GuardLink implements ProcessRegistry {
  private child: ChildProcess | undefined;
  private readonly listed = new Map<number, string>();
  private restartTimer: Timer | undefined;
  private closing = false;

  constructor(
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.closing) return;
    const child = spawn(process.execPath, [GUARD_SCRIPT], {
      detached: true, // its own session: a signal to the supervisor's process group does not reach it
      stdio: ['pipe', 'ignore', 'inherit'],
    });
    this.child = child;
    child.stdin?.on('error', () => undefined); // EPIPE when it died: handled by 'exit'
    child.once('error', (err) => this.logger.warn({ err: err.message }, 'cannot start the supervisor guard'));
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (this.closing) return;
      this.logger.warn({ code, signal }, 'the supervisor guard ended; starting it again');
      this.restartTimer = this.clock.setTimer(RESTART_DELAY_MS, () => this.start());
    });
    // The guard must not keep a host (tests, the agent) alive by itself.
    child.unref();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    for (const line of this.listed.values()) this.write(line);
  }

  adopt(pid: number, startTime: string, ladder: StopLadder): void {
    const line = `+ ${pid} ${startTime} ${ladder.termAfterMs} ${ladder.killAfterMs}\n`;
    this.listed.set(pid, line);
    this.write(line);
  }

  release(pid: number): void {
    if (this.listed.delete(pid)) this.write(`- ${pid}\n`);
  }

  /**
   * Ends the pipe. With nothing listed the guard exits at once, and this waits for it; with groups
   * still listed (a stop that outlived the supervisor's own deadline) it is left to finish them.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.restartTimer?.cancel();
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.stdin?.end();
    if (this.listed.size > 0) return;
    const timer = this.clock.setTimer(CLOSE_WAIT_MS, () => child.kill('SIGKILL'));
    await exited;
    timer.cancel();
  }

  private write(line: string): void {
    const stdin = this.child?.stdin;
    if (stdin && !stdin.destroyed) stdin.write(line);
  }
}
