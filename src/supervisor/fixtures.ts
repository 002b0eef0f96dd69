// Test fixtures for clinit: a temporary directory with a cltab, the real `corral clinit -d`
// started there (ended by pid), the real CLI for commands, and a check that every process the
// daemon started (all of them carry a marker in their environment) is gone at the end.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CORRAL, runCorral, type RunResult } from '../testkit/cli.js';
import { readClstat, type ClstatLine } from './clstat.js';
import { readProcStat } from './procfs.js';

const MARK = 'CORRAL_CLINIT_TEST_MARK';

/** Live (non-zombie) processes whose environment carries `marker`. */
export function markedProcesses(marker: string): number[] {
  const needle = `${MARK}=${marker}\0`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      if (!readFileSync(`/proc/${pid}/environ`, 'latin1').includes(needle)) continue;
    } catch {
      continue;
    }
    const stat = readProcStat(pid);
    if (stat && stat.state !== 'Z' && stat.state !== 'X') pids.push(pid);
  }
  return pids;
}

export function alive(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.state !== 'Z' && stat.state !== 'X';
}

export async function waitUntil(what: string, check: () => boolean, timeoutMs = 5_000, everyMs = 20): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface DaemonProcess {
  pid: number;
  child: ChildProcess;
  /** stderr so far (JSON log lines). */
  output(): string;
  exited: Promise<number | null>;
}

/** Fast stops and throttle for tests, unless a test sets its own. */
const DEFAULT_SETTINGS = [':::stop:0.5,1'];

export class ClinitFixture {
  readonly dir: string;
  readonly marker = randomBytes(6).toString('hex');
  readonly cltab: string;
  readonly socket: string;
  readonly clstat: string;
  readonly logDir: string;
  daemon: DaemonProcess | undefined;

  constructor(body: string, settings: string[] = DEFAULT_SETTINGS) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'corral-clinit-'));
    mkdirSync(path.join(this.dir, 't'));
    this.cltab = path.join(this.dir, 'cltab');
    this.socket = path.join(this.dir, 'clinit.s');
    this.clstat = path.join(this.dir, 'clstat');
    this.logDir = path.join(this.dir, 'log');
    this.settings = settings;
    this.writeCltab(body);
  }

  private settings: string[];

  /** Writes the cltab: the socket, clstat and log settings for this directory, then `body`. */
  writeCltab(body: string, settings = this.settings): void {
    const head = [`:::socket:${this.socket}`, `:::clstat:${this.clstat}`, `:::log:${this.logDir}`, ...settings];
    writeFileSync(this.cltab, `${head.join('\n')}\n${body.replace(/^\n/, '')}`);
  }

  /** Starts `corral clinit -d` in the directory (commands may use t/FILE, as Cluster::Init's tests). */
  async start(extra: string[] = []): Promise<DaemonProcess> {
    const child = spawn(process.execPath, [CORRAL, 'clinit', '-d', '-c', this.cltab, '--log-level', 'debug', ...extra], {
      cwd: this.dir,
      env: { ...process.env, NO_COLOR: '1', [MARK]: this.marker },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const daemon: DaemonProcess = { pid: child.pid as number, child, output: () => stderr, exited };
    this.daemon = daemon;
    let gone = false;
    void exited.then(() => (gone = true));
    await waitUntil('the daemon to listen', () => gone || (existsSync(this.socket) && existsSync(this.clstat)), 10_000);
    if (gone) throw new Error(`clinit -d exited at start:\n${stderr}`);
    return daemon;
  }

  clinit(args: string[], options: { timeoutMs?: number } = {}): Promise<RunResult> {
    return runCorral(['clinit', '-c', this.cltab, ...args], { cwd: this.dir, timeoutMs: options.timeoutMs ?? 20_000 });
  }

  /** `clinit GROUP LEVEL`, asserting Cluster::Init's reply. */
  async tell(group: string, level: string): Promise<void> {
    const r = await this.clinit([group, level]);
    assert.equal(r.stdout, 'level transition started\n', `clinit ${group} ${level}: ${r.stdout}${r.stderr}`);
    assert.equal(r.code, 0);
  }

  lines(): ClstatLine[] {
    return readClstat(this.clstat);
  }

  line(group: string): string | undefined {
    const l = this.lines().find((x) => x.group === group);
    return l ? `${l.group} ${l.level} ${l.state}` : undefined;
  }

  /** Waits for the clstat line `GROUP LEVEL STATE` (the regex Cluster::Init's tests poll for). */
  async waitFor(expected: string, timeoutMs = 5_000): Promise<number> {
    const t0 = performance.now();
    const group = expected.split(' ')[0] as string;
    await waitUntil(`clstat line '${expected}' (now: ${String(this.line(group))})`, () => this.line(group) === expected, timeoutMs);
    return performance.now() - t0;
  }

  path(name: string): string {
    return path.join(this.dir, name);
  }

  read(name: string): string {
    try {
      return readFileSync(this.path(name), 'utf8');
    } catch {
      return '';
    }
  }

  /** The pid a command wrote to t/NAME (waiting for it). */
  async pidFrom(name: string, timeoutMs = 5_000): Promise<number> {
    await waitUntil(`${name} to hold a pid`, () => /^\d+\s*$/.test(this.read(name)), timeoutMs);
    return Number(this.read(name).trim());
  }

  processes(): number[] {
    return markedProcesses(this.marker);
  }

  /** CPU seconds the daemon has used so far. */
  daemonCpuSeconds(): number {
    const stat = readFileSync(`/proc/${this.daemon?.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  }

  /**
   * Ends the daemon (SIGTERM: a graceful halt), then checks that no process it started is left
   * (killing and failing on any), and removes the directory.
   */
  async close(): Promise<void> {
    try {
      const d = this.daemon;
      if (d && d.child.exitCode === null && d.child.signalCode === null) {
        d.child.kill('SIGTERM');
        const timer = setTimeout(() => d.child.kill('SIGKILL'), 15_000);
        await d.exited;
        clearTimeout(timer);
      }
      let left: number[] = [];
      try {
        await waitUntil('every supervised process to end', () => (left = this.processes()).length === 0, 8_000, 50);
      } catch {
        const describe = (pid: number): string => {
          try {
            return `${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')}`;
          } catch {
            return String(pid);
          }
        };
        const named = left.map(describe);
        for (const pid of left) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        assert.fail(`processes left running: ${named.join('; ')}`);
      }
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/** Runs `body` with a fixture and always closes it. */
export async function withClinit(body: string, run: (f: ClinitFixture) => Promise<void>, settings?: string[]): Promise<void> {
  const f = new ClinitFixture(body, settings);
  try {
    await run(f);
  } finally {
    await f.close();
  }
}
