// The supervisor's benchmark (issue 5, point 10, the node part), against supervisord and runit in
// the same run, every supervisor started here in a temporary directory:
//
//   - respawn latency, measured from the outside so the three are measured alike: each supervised
//     program is a script that appends `INSTANCE PID $(date +%s%N)` to a file and execs sleep; the
//     benchmark SIGKILLs the pid of a start line, noting the wall clock in ns just before, and the
//     latency is the next start line's time minus the kill's. 20 programs are killed in turn, at
//     most one every 60 ms and only once the previous kill's successor has started (one restart
//     in flight: another exit must not wake a supervisor that waits for a timer, as supervisord
//     does), and each has run more than 1 s when killed (runsv waits 1 s before restarting a
//     service that ran less than 1 s; corral's throttle is raised, not relied on). A supervisor
//     gets 200 kills or 30 s of them, whichever ends first;
//   - the cost of supervising 200 idle processes: CPU (utime + stime from /proc over 10 s, as % of
//     one core) and memory (RSS and PSS) of every process of the supervisor (corral: the
//     `corral clinit -d` daemon and its guard; supervisord; runit: 200 runsv, one per service).
//
// corral runs each command as `/bin/sh -c 'exec PROGRAM'` (Cluster::Init's way), supervisord execs
// PROGRAM, runsv execs ./run (a symlink to PROGRAM); the benchmark starts one runsv per service
// itself (runsvdir's job) so that it reaps them. Needs the Debian packages supervisor and runit.
//
//   npm run bench:supervisor        node dist/bench/supervisor.js [--quick]

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, chmodSync, closeSync, constants, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ClinitFixture, markedProcesses, sleep, waitUntil } from '../src/supervisor/fixtures.js';
import { Supervisor } from '../src/supervisor/supervisor.js';
import { printTable, summarize, writeResults, type LatencySummary, type Row } from './lib.js';

const quick = process.argv.includes('--quick');
const RESTARTS = quick ? 40 : 200;
const INSTANCES = 20;
const KILL_EVERY_MS = 60;
const MIN_UPTIME_NS = 1_100_000_000n;
const IDLE_PROCESSES = 200;
const IDLE_SECONDS = quick ? 3 : 10;
/** The kills of one supervisor end after RESTARTS or this long (200 take 12 s when restarts are quick). */
const KILL_BUDGET_MS = quick ? 10_000 : 30_000;
/** The environment variable `markedProcesses()` (src/supervisor/fixtures.ts) looks for. */
const MARK = 'CORRAL_CLINIT_TEST_MARK';
const NO_THROTTLE = { limit: 1_000_000, windowMs: 1000, pauseMs: 0 };
const QUICK_STOP = { termAfterMs: 1000, killAfterMs: 2000 };

// --- the clock and the start lines ------------------------------------------------------------

/**
 * Wall-clock nanoseconds (what `date +%s%N` prints) at hrtime's resolution: Date.now() steps by
 * 1 ms, so at the instant it steps the two clocks agree; the median of 7 such instants is the offset.
 */
function wallClockNs(): () => bigint {
  const offsets: bigint[] = [];
  for (let k = 0; k < 7; k++) {
    const ms = Date.now();
    for (let spin = 0; spin < 10_000_000; spin++) {
      const hr = process.hrtime.bigint();
      const now = Date.now();
      if (now !== ms) {
        offsets.push(BigInt(now) * 1_000_000n - hr);
        break;
      }
    }
  }
  offsets.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const offset = offsets[Math.floor(offsets.length / 2)];
  if (offset === undefined) throw new Error('Date.now() did not advance');
  return () => process.hrtime.bigint() + offset;
}

interface Start {
  pid: number;
  ns: bigint;
}

/** The start lines the programs append (`INSTANCE PID NS`), read as they grow. */
class StartLog {
  private readonly fd: number;
  private offset = 0;
  private rest = '';
  private readonly starts = new Map<number, Start[]>();

  constructor(readonly file: string) {
    writeFileSync(file, '');
    this.fd = openSync(file, 'r');
  }

  poll(): void {
    const buf = Buffer.alloc(64 * 1024);
    for (let reads = 0; reads < 1000; reads++) {
      const n = readSync(this.fd, buf, 0, buf.length, this.offset);
      if (n === 0) break;
      this.offset += n;
      const lines = (this.rest + buf.toString('latin1', 0, n)).split('\n');
      this.rest = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^(\d+) (\d+) (\d+)$/.exec(line);
        if (!m) continue;
        const instance = Number(m[1]);
        const list = this.starts.get(instance) ?? [];
        list.push({ pid: Number(m[2]), ns: BigInt(m[3] as string) });
        this.starts.set(instance, list);
      }
    }
  }

  latest(instance: number): Start | undefined {
    return this.starts.get(instance)?.at(-1);
  }

  /** The first start of `instance` after wall time `ns`. */
  after(instance: number, ns: bigint): Start | undefined {
    return this.starts.get(instance)?.find((s) => s.ns > ns);
  }

  close(): void {
    closeSync(this.fd);
  }
}

function writeScript(file: string, text: string): string {
  writeFileSync(file, text);
  chmodSync(file, 0o755);
  return file;
}

// --- processes, from /proc --------------------------------------------------------------------

function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return '';
  }
}

function carriesMarker(pid: number, marker: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').includes(`${MARK}=${marker}\0`);
  } catch {
    return false;
  }
}

const isProgram = (pid: number): boolean => cmdline(pid).startsWith('sleep\0');

/** The supervisor's own processes: everything carrying its marker except the programs it runs. */
function supervisorPids(marker: string): number[] {
  return markedProcesses(marker).filter((pid) => !isProgram(pid));
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/**
 * CPU seconds used so far by `pids`: utime + stime from /proc/PID/stat (10 ms ticks), and the
 * scheduler's own count from /proc/PID/schedstat (ns; it shows what the ticks round to zero).
 */
function cpuSeconds(pids: number[]): { ticks: number; sched: number } {
  let ticks = 0;
  let ns = 0;
  for (const pid of pids) {
    const f = statFields(pid);
    if (f) ticks += Number(f[11]) + Number(f[12]);
    try {
      ns += Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // gone, or a kernel without schedstat
    }
  }
  return { ticks: ticks / CLOCK_TICKS, sched: ns / 1e9 };
}

/** RSS and PSS (shared pages divided among their sharers) summed over `pids`, in MiB. */
function memoryMiB(pids: number[]): { rss: number; pss: number } {
  let rss = 0;
  let pss = 0;
  const kb = (text: string, key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  for (const pid of pids) {
    try {
      rss += kb(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS');
      pss += kb(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss');
    } catch {
      // gone
    }
  }
  return { rss: rss / 1024, pss: pss / 1024 };
}

/** SIGKILLs whatever still carries `marker` (a process group when it leads one); returns how many. */
function sweep(marker: string): number {
  const left = markedProcesses(marker);
  for (const pid of left) {
    const pgrp = Number(statFields(pid)?.[2]);
    try {
      process.kill(pgrp === pid ? -pid : pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  return left.length;
}

function onPath(binary: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      accessSync(path.join(dir, binary), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

// --- the supervisors --------------------------------------------------------------------------

interface Program {
  name: string;
  /** An executable file, run with no arguments. */
  path: string;
}

interface Supervised {
  /** Every process of this run carries it in its environment (the supervisor's and the programs). */
  marker: string;
  /** Why the supervisor is gone, if it exited. */
  failure(): string | undefined;
  /** Stops it and everything it runs (bounded). */
  stop(): Promise<void>;
  /** corral in process: exit reaped → successor spawned, from the supervisor's own events (ms). */
  internalMs?: number[];
}

interface Contender {
  name: string;
  /** What a reader of its numbers should know. */
  remark?: string;
  /** Starts supervising `programs`, each a respawning entry, and has them started. */
  start(dir: string, programs: Program[]): Promise<Supervised>;
}

const newMarker = (): string => randomBytes(6).toString('hex');

/** A supervisor daemon as our child, marked, ended by pid (SIGKILL after `graceMs`). */
function startDaemon(command: string, args: string[], marker: string): { failure: () => string | undefined; stop: (signal: NodeJS.Signals, graceMs: number) => Promise<void> } {
  const child = spawn(command, args, { env: { ...process.env, [MARK]: marker }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exit: string | undefined;
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  child.on('error', (err) => (exit = `${command}: ${err.message}`));
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exit ??= `${command} exited (${code ?? signal}): ${stderr.trim()}`;
      resolve();
    }),
  );
  return {
    failure: () => exit,
    stop: async (signal, graceMs) => {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.kill(signal);
      await exited;
      clearTimeout(timer);
    },
  };
}

const corralLibrary: Contender = {
  name: 'corral, Supervisor library (in process)',
  start: (dir, programs) => {
    const marker = newMarker();
    const supervisor = new Supervisor({
      config: {
        groups: [
          {
            name: 'bench',
            throttle: NO_THROTTLE,
            stop: QUICK_STOP,
            env: { [MARK]: marker },
            entries: programs.map((p) => ({ tag: p.name, levels: '1', mode: 'respawn' as const, command: `exec ${p.path}` })),
          },
        ],
      },
      logDir: path.join(dir, 'log'),
    }).start();
    const internalMs: number[] = [];
    const exitedAt = new Map<string, number>();
    supervisor.subscribe((e) => {
      if (e.kind !== 'process') return;
      if (e.cause === 'EXITED') exitedAt.set(e.tag, e.mono);
      const exited = exitedAt.get(e.tag);
      if (e.cause === 'SPAWNED' && exited !== undefined) {
        internalMs.push(e.mono - exited);
        exitedAt.delete(e.tag);
      }
    });
    supervisor.tell('bench', '1');
    return Promise.resolve({ marker, failure: () => undefined, stop: () => supervisor.close({ timeoutMs: 10_000 }), internalMs });
  },
};

const corralDaemon: Contender = {
  name: 'corral clinit -d',
  start: async (_dir, programs) => {
    const body = programs.map((p) => `bench:${p.name}:1:respawn:exec ${p.path}`).join('\n') + '\n';
    const f = new ClinitFixture(body, [':::stop:1,2', `:::throttle:${NO_THROTTLE.limit},1,0`]);
    try {
      await f.start(['--log-level', 'info']); // the fixture asks for debug; the last one wins
      await f.tell('bench', '1');
    } catch (err) {
      await f.close().catch(() => undefined);
      throw err;
    }
    return {
      marker: f.marker,
      failure: () => {
        const d = f.daemon;
        return d && (d.child.exitCode !== null || d.child.signalCode !== null) ? `clinit -d exited: ${d.output().slice(-2000)}` : undefined;
      },
      stop: () => f.close(),
    };
  },
};

const supervisord: Contender = {
  name: 'supervisord',
  remark: 'reaps at a wake-up (a pipe, or its 1 s poll timeout), spawns at the next one',
  start: (dir, programs) => {
    const marker = newMarker();
    const conf = path.join(dir, 'supervisord.conf');
    mkdirSync(path.join(dir, 'logs'));
    const lines = [
      '[supervisord]',
      'nodaemon=true',
      `logfile=${dir}/supervisord.log`,
      `pidfile=${dir}/supervisord.pid`,
      `childlogdir=${dir}/logs`,
      '[unix_http_server]',
      `file=${dir}/supervisor.sock`,
      'chmod=0700',
      '[rpcinterface:supervisor]',
      'supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface',
      ...programs.flatMap((p) => [`[program:${p.name}]`, `command=${p.path}`, 'autorestart=true', 'startsecs=0', 'stopasgroup=true', 'killasgroup=true', 'stopwaitsecs=2']),
    ];
    writeFileSync(conf, lines.join('\n') + '\n');
    const daemon = startDaemon('supervisord', ['-n', '-c', conf], marker);
    return Promise.resolve({ marker, failure: daemon.failure, stop: () => daemon.stop('SIGTERM', 20_000) });
  },
};

const runit: Contender = {
  name: 'runit (runsv)',
  start: (dir, programs) => {
    const marker = newMarker();
    // One runsv per service, as runsvdir would start them, but our children: we reap them.
    const daemons = programs.map((p) => {
      const service = path.join(dir, 'service', p.name);
      mkdirSync(service, { recursive: true });
      symlinkSync(p.path, path.join(service, 'run'));
      return startDaemon('runsv', [service], marker);
    });
    return Promise.resolve({
      marker,
      failure: () => daemons.map((d) => d.failure()).find((why) => why !== undefined),
      // SIGTERM to runsv: take the service down (TERM, CONT), then exit.
      stop: async () => {
        await Promise.all(daemons.map((d) => d.stop('SIGTERM', 5000)));
      },
    });
  },
};

// --- the measurements -------------------------------------------------------------------------

interface LatencyRun {
  kills: number;
  samplesMs: number[];
  latencyMs: LatencySummary;
  internalMs?: LatencySummary;
  seconds: number;
  leftovers: number;
  error?: string;
}

async function respawnLatency(c: Contender, dir: string): Promise<LatencyRun> {
  mkdirSync(dir);
  const t0 = performance.now();
  const wallNs = wallClockNs();
  const log = new StartLog(path.join(dir, 'starts'));
  const programs = Array.from({ length: INSTANCES }, (_, i) => ({
    name: `r${i}`,
    path: writeScript(path.join(dir, `r${i}.sh`), `#!/bin/sh\necho "${i} $$ $(date +%s%N)" >> ${log.file}\nexec sleep 100000\n`),
  }));
  const kills: { instance: number; ns: bigint }[] = [];
  const lastKill = new Map<number, bigint>();
  let error: string | undefined;
  let sup: Supervised | undefined;
  const alive = (): void => {
    const why = sup?.failure();
    if (why) throw new Error(why);
  };
  const ready = (i: number): boolean => {
    alive();
    log.poll();
    const s = log.latest(i);
    const killed = lastKill.get(i);
    return s !== undefined && (killed === undefined || s.ns > killed) && wallNs() - s.ns >= MIN_UPTIME_NS;
  };
  const restarted = (): boolean => {
    log.poll();
    return kills.every((k) => log.after(k.instance, k.ns) !== undefined);
  };
  try {
    sup = await c.start(dir, programs);
    const marker = sup.marker;
    await waitUntil(`${c.name}: every program started and up 1.1 s`, () => programs.every((_, i) => ready(i)), 30_000, 10);
    const paceStart = performance.now();
    for (let k = 0; k < RESTARTS && performance.now() < paceStart + KILL_BUDGET_MS; k++) {
      const i = k % INSTANCES;
      await waitUntil(`${c.name}: the previous restart, and r${i} up 1.1 s`, () => ready(i) && restarted(), 10_000, 2);
      const wait = paceStart + k * KILL_EVERY_MS - performance.now();
      if (wait > 0) await sleep(wait);
      const pid = (log.latest(i) as Start).pid;
      if (!carriesMarker(pid, marker)) throw new Error(`r${i}: pid ${pid} is no longer the supervised program`);
      const ns = wallNs();
      process.kill(pid, 'SIGKILL');
      kills.push({ instance: i, ns });
      lastKill.set(i, ns);
    }
    await waitUntil(`${c.name}: the last restarts`, restarted, 10_000, 5);
  } catch (err) {
    error = (err as Error).message;
  } finally {
    await sup?.stop().catch((err: Error) => (error ??= `stop: ${err.message}`));
    log.poll();
    log.close();
  }
  const samplesMs = kills.flatMap((k) => {
    const s = log.after(k.instance, k.ns);
    return s ? [Number(s.ns - k.ns) / 1e6] : [];
  });
  const leftovers = sup ? sweep(sup.marker) : 0;
  const run: LatencyRun = { kills: kills.length, samplesMs, latencyMs: summarize(samplesMs), seconds: (performance.now() - t0) / 1000, leftovers };
  if (sup?.internalMs) run.internalMs = summarize(sup.internalMs);
  if (error) run.error = error;
  if (samplesMs.length < kills.length) run.error = `${run.error ? `${run.error}; ` : ''}${kills.length - samplesMs.length} kills without a restart`;
  return run;
}

interface IdleRun {
  processes: number;
  /** From the start (and the tell) until every program ran. */
  allRunningMs: number;
  supervisorProcesses: number;
  /** From the scheduler's ns count (schedstat). */
  cpuPercentOfCore: number;
  /** From utime + stime (10 ms ticks). */
  cpuPercentOfCoreFromTicks: number;
  rssMiB: number;
  pssMiB: number;
  stopMs: number;
  leftovers: number;
  error?: string;
}

const countPrograms = (marker: string): number => markedProcesses(marker).filter(isProgram).length;

async function idleCost(c: Contender, dir: string): Promise<IdleRun> {
  mkdirSync(dir);
  const idle = writeScript(path.join(dir, 'idle.sh'), '#!/bin/sh\nexec sleep 100000\n');
  const programs = Array.from({ length: IDLE_PROCESSES }, (_, i) => ({ name: `p${i}`, path: idle }));
  const run: IdleRun = { processes: 0, allRunningMs: NaN, supervisorProcesses: 0, cpuPercentOfCore: NaN, cpuPercentOfCoreFromTicks: NaN, rssMiB: NaN, pssMiB: NaN, stopMs: NaN, leftovers: 0 };
  let sup: Supervised | undefined;
  try {
    const t0 = performance.now();
    sup = await c.start(dir, programs);
    const started = sup;
    await waitUntil(
      `${c.name}: ${IDLE_PROCESSES} programs running`,
      () => {
        const why = started.failure();
        if (why) throw new Error(why);
        return countPrograms(started.marker) >= IDLE_PROCESSES;
      },
      60_000,
      100,
    );
    run.allRunningMs = performance.now() - t0;
    await sleep(2000);
    const pids = supervisorPids(started.marker);
    const cpu0 = cpuSeconds(pids);
    const wall0 = performance.now();
    await sleep(IDLE_SECONDS * 1000);
    const cpu1 = cpuSeconds(pids);
    const seconds = (performance.now() - wall0) / 1000;
    run.cpuPercentOfCore = ((cpu1.sched - cpu0.sched) / seconds) * 100;
    run.cpuPercentOfCoreFromTicks = ((cpu1.ticks - cpu0.ticks) / seconds) * 100;
    const mem = memoryMiB(pids);
    run.rssMiB = mem.rss;
    run.pssMiB = mem.pss;
    run.supervisorProcesses = pids.length;
    run.processes = countPrograms(started.marker);
  } catch (err) {
    run.error = (err as Error).message;
  } finally {
    const s0 = performance.now();
    await sup?.stop().catch((err: Error) => (run.error ??= `stop: ${err.message}`));
    run.stopMs = performance.now() - s0;
    run.leftovers = sup ? sweep(sup.marker) : 0;
  }
  return run;
}

// --- the run ----------------------------------------------------------------------------------

const missing = ['supervisord', 'runsv'].filter((b) => !onPath(b));
if (missing.length > 0) {
  process.stderr.write(`bench/supervisor: ${missing.join(', ')} not found; install the Debian packages: apt-get install -y supervisor runit\n`);
  process.exit(1);
}

const root = mkdtempSync(path.join(os.tmpdir(), 'corral-supbench-'));
const caCerts = process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset';
process.stdout.write(`supervisor benchmark: ${RESTARTS} restarts per supervisor, ${IDLE_PROCESSES} idle processes for ${IDLE_SECONDS} s; NODE_EXTRA_CA_CERTS ${caCerts}\n`);
// Everything below is bounded; this is the backstop should something hang all the same.
const backstop = setTimeout(() => {
  process.stderr.write('bench/supervisor: still running after 5 minutes; giving up\n');
  process.exit(1);
}, 300_000);
backstop.unref();

const latency: Record<string, LatencyRun> = {};
const idle: Record<string, IdleRun> = {};
const contenders = [corralLibrary, corralDaemon, supervisord, runit];
try {
  for (const [n, c] of contenders.entries()) {
    const r = await respawnLatency(c, path.join(root, `latency${n}`));
    latency[c.name] = r;
    const l = r.latencyMs;
    process.stdout.write(`respawn, ${c.name}: ${l.count} restarts, p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms, max ${l.max.toFixed(2)} ms (${r.seconds.toFixed(1)} s)${r.error ? `; ERROR ${r.error}` : ''}\n`);
  }
  for (const [n, c] of [corralDaemon, supervisord, runit].entries()) {
    const r = await idleCost(c, path.join(root, `idle${n}`));
    idle[c.name] = r;
    process.stdout.write(
      `idle, ${c.name}: ${r.processes} programs, ${r.cpuPercentOfCore.toFixed(3)} % of a core, RSS ${r.rssMiB.toFixed(1)} MiB, PSS ${r.pssMiB.toFixed(1)} MiB over ${r.supervisorProcesses} process(es)${r.error ? `; ERROR ${r.error}` : ''}\n`,
    );
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}

const times = (a: number, b: number): string => (b > 0 ? `${a / b >= 0.1 ? (a / b).toFixed(2) : (a / b).toPrecision(2)}×` : 'n/a');
const rows: Row[] = [];
const daemon = latency[corralDaemon.name];
const library = latency[corralLibrary.name];
for (const c of contenders) {
  const r = latency[c.name];
  if (!r) continue;
  const isCorral = c === corralDaemon || c === corralLibrary;
  const internal = r.internalMs ? `; inside: exit reaped → spawned p50 ${r.internalMs.p50.toFixed(2)} ms, p99 ${r.internalMs.p99.toFixed(2)} ms` : '';
  const note = `${r.latencyMs.count} restarts, max ${r.latencyMs.max.toFixed(1)} ms${internal}${c.remark ? `; ${c.remark}` : ''}${r.error ? `; ERROR ${r.error}` : ''}`;
  rows.push({ metric: `respawn p50, ${c.name}`, value: r.latencyMs.p50, unit: 'ms', note });
  rows.push({ metric: `respawn p99, ${c.name}`, value: r.latencyMs.p99, unit: 'ms', ...(isCorral ? { target: '≤ 50', ok: r.latencyMs.p99 <= 50 } : {}) });
}
for (const peer of [supervisord, runit]) {
  const p = latency[peer.name];
  if (!p || !daemon || !library) continue;
  for (const q of ['p50', 'p99'] as const) {
    const lib = times(library.latencyMs[q], p.latencyMs[q]);
    rows.push({ metric: `respawn ${q}, corral clinit -d ÷ ${peer.name}`, value: daemon.latencyMs[q] / p.latencyMs[q], unit: '×', note: `library ÷ ${peer.name}: ${lib}` });
  }
}
const corralIdle = idle[corralDaemon.name];
for (const c of [corralDaemon, supervisord, runit]) {
  const r = idle[c.name];
  if (!r) continue;
  const isCorral = c === corralDaemon;
  const vs = !isCorral && corralIdle ? `; corral ÷ ${c.name}: CPU ${times(corralIdle.cpuPercentOfCore, r.cpuPercentOfCore)}, PSS ${times(corralIdle.pssMiB, r.pssMiB)}` : '';
  rows.push({
    metric: `${IDLE_PROCESSES} idle: CPU, ${c.name}`,
    value: r.cpuPercentOfCore,
    unit: '% of a core',
    ...(isCorral ? { target: '< 2', ok: r.cpuPercentOfCore < 2 } : {}),
    note: `over ${IDLE_SECONDS} s (schedstat; utime + stime: ${r.cpuPercentOfCoreFromTicks.toFixed(2)} %), ${r.supervisorProcesses} process(es)${vs}${r.error ? `; ERROR ${r.error}` : ''}`,
  });
  rows.push({
    metric: `${IDLE_PROCESSES} idle: memory, ${c.name}`,
    value: r.rssMiB,
    unit: 'MiB RSS',
    note: `PSS ${r.pssMiB.toFixed(1)} MiB; all running ${(r.allRunningMs / 1000).toFixed(2)} s after start; stopped in ${(r.stopMs / 1000).toFixed(2)} s`,
  });
}
printTable(`supervisor: respawn latency (SIGKILL → successor's start line) and ${IDLE_PROCESSES} idle processes (${os.cpus().length} cores, NODE_EXTRA_CA_CERTS ${caCerts})`, rows);
const file = writeResults('supervisor', {
  restarts: RESTARTS,
  instances: INSTANCES,
  killEveryMs: KILL_EVERY_MS,
  idleProcesses: IDLE_PROCESSES,
  idleSeconds: IDLE_SECONDS,
  notes: [
    "latency: wall ns before kill(pid, SIGKILL) → the successor's `date +%s%N` in its start line (includes the shell's start and the fork of date, alike for all)",
    `${INSTANCES} programs killed in turn, at most one every ${KILL_EVERY_MS} ms, one restart in flight at a time, each up ≥ 1.1 s when killed (runsv delays the restart of a service that ran < 1 s by 1 s); ${RESTARTS} kills or ${KILL_BUDGET_MS / 1000} s of kills per supervisor`,
    'supervisord reaps an exit when a pipe or its 1 s poll timeout wakes it and spawns the successor at the next wake-up: about 1 s when nothing else happens',
    "corral runs `/bin/sh -c 'exec PROGRAM'` with the respawn throttle raised; supervisord: autorestart=true, startsecs=0; runit: run → PROGRAM",
    'idle: CPU time (schedstat ns, and utime + stime ticks) of every supervisor process (corral: clinit -d and its guard; runit: 200 runsv) over the window; RSS and PSS summed over them',
  ],
  latency: Object.fromEntries(Object.entries(latency).map(([k, v]) => [k, { ...v, samplesMs: undefined }])),
  idle,
  rows,
});
process.stdout.write(`\nwritten to ${file}\n`);
const failed = [...Object.values(latency), ...Object.values(idle)].some((r) => r.error !== undefined || r.leftovers > 0);
if (failed) process.exitCode = 1;
