// Test fixtures for `corral lock`: a temporary directory with its own runtime directory (so private
// daemons keep their stores there) and its own socket paths, runs of the real CLI, long-running
// holders as child processes, and a teardown that stops every daemon and child by pid. For the
// cluster-wide path on etcd: a local cluster whose store is a real etcd (EtcdLockCluster).

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isProcessAlive } from '../util/process.js';
import { CORRAL, runCorral, type RunResult } from './cli.js';
import { startEtcd, type EtcdCluster } from './etcd.js';
import { LocalClusterFixture, sleep, waitUntil } from './local.js';

/** A journal of `WHAT NANOSECONDS` lines that commands append (`echo first $(date +%s%N) >> LOG`). */
export function timedEvents(file: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').trim().split('\n')) {
    const [what, at] = line.split(' ');
    if (what && at) out.set(what, BigInt(at));
  }
  return out;
}

export interface Holder {
  pid: number;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Exit code (null when killed by a signal) and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export class LockTestDir {
  readonly dir: string;
  /** Holds CORRAL_RUNTIME_DIR (RUNTIME/corral) of every corral process started here. */
  readonly runtime: string;
  private readonly holders = new Set<Holder>();
  private sockets = 0;

  constructor() {
    // Short: socket paths must fit in 107 bytes.
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'cl-'));
    this.runtime = path.join(this.dir, 'run');
    mkdirSync(this.runtime, { mode: 0o700 });
  }

  /** A fresh socket path for one test's private daemon. */
  socket(): string {
    return path.join(this.dir, `d${++this.sockets}.sock`);
  }

  get env(): NodeJS.ProcessEnv {
    return { CORRAL_RUNTIME_DIR: path.join(this.runtime, 'corral'), CORRAL_CONFIG: '' };
  }

  /** `corral ARGS...` with this directory's environment, bounded in time. */
  corral(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
    return runCorral(args, { timeoutMs: options.timeoutMs ?? 30_000, env: { ...this.env, ...options.env }, ...(options.cwd ? { cwd: options.cwd } : {}) });
  }

  /** `corral ARGS...` as a child of the test, for holders that the test signals or kills. */
  start(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Holder {
    const child = spawn(process.execPath, [CORRAL, ...args], {
      env: { ...process.env, NO_COLOR: '1', ...this.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.cwd ? { cwd: options.cwd } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    // 'exit', then the rest of its output; not 'close' alone: a command that outlives its corral
    // lock (killed) keeps the inherited pipes open.
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => void Promise.race([closed, sleep(200)]).then(() => resolve({ code, signal }))),
    );
    const holder: Holder = { pid: child.pid as number, child, stdout: () => stdout, stderr: () => stderr, exited };
    this.holders.add(holder);
    void exited.then(() => this.holders.delete(holder));
    return holder;
  }

  /** Pids of the private daemons serving sockets of this directory. */
  daemonPids(socket?: string): number[] {
    const pids: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        const at = argv.indexOf('--socket');
        const s = argv[at + 1];
        if (argv.includes('--private') && s !== undefined && (socket === undefined ? s.startsWith(`${this.dir}/`) : s === socket) && isProcessAlive(Number(entry))) {
          pids.push(Number(entry));
        }
      } catch {
        // gone meanwhile
      }
    }
    return pids;
  }

  /** Waits until exactly one daemon serves `socket` and returns its pid. */
  async daemonPid(socket: string, timeoutMs = 10_000): Promise<number> {
    const { value } = await waitUntil(`a daemon on ${socket}`, () => {
      const pids = this.daemonPids(socket);
      return Promise.resolve(pids.length === 1 ? pids[0] : undefined);
    }, timeoutMs);
    return value;
  }

  /** Waits for a process to be gone. */
  async waitForExit(pid: number, timeoutMs = 10_000): Promise<void> {
    await waitUntil(`pid ${pid} to exit`, () => Promise.resolve(isProcessAlive(pid) ? undefined : true), timeoutMs, 10);
  }

  /** Stops every daemon and holder of this directory (and the commands they run), and removes it. */
  async destroy(): Promise<void> {
    const doomed = [...this.holders].flatMap((h) => [h.pid, ...descendants(h.pid)]);
    for (const pid of doomed) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const pid of this.daemonPids()) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    const deadline = performance.now() + 5000;
    while (this.daemonPids().length > 0 && performance.now() < deadline) await sleep(20);
    for (const pid of this.daemonPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    // Commands whose corral lock was killed live on under their gates, out of the holders' trees:
    // every process whose command line names this directory goes, with its process group.
    const ownGroup = groupOf(process.pid);
    for (const pid of processesMentioning(this.dir)) {
      const group = groupOf(pid);
      try {
        if (group !== undefined && group !== ownGroup && group > 1) process.kill(-group, 'SIGKILL');
        else process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function groupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

/** Live processes (not this one) whose command line contains `text`. */
function processesMentioning(text: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text) && isProcessAlive(Number(entry))) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Every live descendant of `pid` (children first seen in /proc). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/**
 * `corral local up -n SIZE --store etcd://...` on a fresh single-member etcd: where `corral lock
 * --config` and `corral locks --config` run cluster-wide on etcd. start() in before(), stop() in
 * after(): ends the agents and etcd by pid and removes their directories.
 */
export class EtcdLockCluster {
  readonly local: LocalClusterFixture;
  private etcdCluster: EtcdCluster | undefined;

  constructor(readonly size = 1) {
    this.local = new LocalClusterFixture(size);
  }

  /** The cluster configuration file (for --config). */
  get config(): string {
    return this.local.config;
  }

  get etcd(): EtcdCluster {
    if (!this.etcdCluster) throw new Error('EtcdLockCluster.start() has not run');
    return this.etcdCluster;
  }

  async start(): Promise<void> {
    this.etcdCluster = await startEtcd({ members: 1 });
    const r = await this.local.corral(['local', 'up', '-n', String(this.size), '--dir', this.local.dir, '--store', `etcd://${this.etcdCluster.endpoints.join(',')}`], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, `local up on etcd failed: ${r.stderr}${r.stdout}`);
  }

  async stop(): Promise<void> {
    try {
      await this.local.destroy();
    } finally {
      await this.etcdCluster?.stop();
    }
  }
}
