// The locks benchmark (issue 4): acquire + release cycles per second and latency, for 1 and 64
// concurrent clients (each on its own resource, its own session or connection), of
//
//   - the lock recipe in this process on the embedded store, and on a single-member etcd;
//   - the library API through an agent (a private daemon process, over its UNIX socket), and
//     through an agent of a one-node cluster on etcd (`corral local up --store etcd://...`);
//   - etcd's own lock service (v3lock Lock/Unlock through a raw grpc-js client);
//   - Redis `SET key val NX PX ttl` with a checked release (compare-and-delete in Lua), through a
//     minimal RESP client;
//
// and the CLI's fixed cost: `corral lock -- true` against `node -e ''` (medians of N alternating runs), with
// NODE_EXTRA_CA_CERTS as the environment has it and without it; corral lock takes its fast path
// there (cli/lock-fast.cts), and the full path (CORRAL_LOCK_FAST=0) is measured alongside. Prints a table and writes
// bench/results/locks.json. etcd and redis-server are started here on loopback (random ports).
//
//   node dist/bench/locks.js [--quick] [--seconds N] [--only TEXT]... [--no-cli]
//
// --only runs the contenders whose name contains TEXT (repeatable; etcd's lock always runs, for
// the ratios); --no-cli skips the CLI's fixed cost. A partial run prints but writes no results.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, credentials, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { MethodDefinition } from '@grpc/proto-loader';
import { acquireLock } from '../src/client/locks.js';
import { Session } from '../src/coord/session.js';
import { acquire } from '../src/coord/lock/index.js';
import { openEmbeddedStore } from '../src/store/embedded/index.js';
import { openEtcdStore } from '../src/store/etcd/index.js';
import { RawEtcdClient } from '../src/store/etcd/raw-bench-client.js';
import type { Store } from '../src/store/store.js';
import { startEtcd } from '../src/testkit/etcd.js';
import { RpcClient } from '../src/transport/client.js';
import { printTable, summarize, writeResults, type LatencySummary, type Row } from './lib.js';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const only = argv.flatMap((a, i) => (a === '--only' && argv[i + 1] !== undefined ? [argv[i + 1] as string] : []));
const secondsArg = argv.indexOf('--seconds');
const SECONDS = secondsArg >= 0 ? Number(argv[secondsArg + 1]) : quick ? 1 : 3;
const CLI_RUNS = quick ? 10 : 30;
const withCli = !argv.includes('--no-cli');
const partial = only.length > 0 || !withCli || secondsArg >= 0;
const wanted = (name: string): boolean => only.length === 0 || only.some((o) => name.includes(o));
const CORRAL = fileURLToPath(new URL('../../bin/corral', import.meta.url));
const PROTO_DIR = fileURLToPath(new URL('../../bench/proto/', import.meta.url));

interface LockClient {
  cycle(): Promise<void>;
  close(): Promise<void>;
}

interface Measured {
  cyclesPerSecond: number;
  latencyMs: LatencySummary;
}

/** `clients` loops of acquire + release for SECONDS, after a short warm-up. */
async function measure(clients: number, make: (i: number) => Promise<LockClient>): Promise<Measured> {
  const all = await Promise.all(Array.from({ length: clients }, (_, i) => make(i)));
  try {
    const warmUntil = performance.now() + 300;
    await Promise.all(all.map(async (c) => {
      while (performance.now() < warmUntil) await c.cycle();
    }));
    const samples: number[] = [];
    const t0 = performance.now();
    const end = t0 + SECONDS * 1000;
    await Promise.all(all.map(async (c) => {
      while (performance.now() < end) {
        const t = performance.now();
        await c.cycle();
        samples.push(performance.now() - t);
      }
    }));
    return { cyclesPerSecond: samples.length / ((performance.now() - t0) / 1000), latencyMs: summarize(samples) };
  } finally {
    await Promise.all(all.map((c) => c.close()));
  }
}

// --- the contenders ---------------------------------------------------------------------------

function recipeClient(store: Store, tag: string): (i: number) => Promise<LockClient> {
  return async (i) => {
    const session = await Session.open(store, { ttlSeconds: 10, keepaliveIntervalMs: 2000 });
    const resource = `${tag}${i}`;
    return {
      cycle: async () => {
        const lock = await acquire(store, session, { resource });
        await lock.release();
      },
      close: () => session.close(),
    };
  };
}

function agentClient(socket: string, tag: string): (i: number) => Promise<LockClient> {
  return (i) => {
    const rpc = new RpcClient({ kind: 'unix', path: socket });
    const resource = `${tag}${i}`;
    return Promise.resolve({
      cycle: async () => {
        const lock = await acquireLock(rpc, { resource });
        await lock.release();
      },
      close: () => rpc.close(),
    });
  };
}

interface LockPb {
  lock: MethodDefinition<{ name: Buffer; lease: string }, { key: Buffer }>;
  unlock: MethodDefinition<{ key: Buffer }, object>;
}

function v3lockRpcs(): LockPb {
  const pkg = loadSync('v3lock.proto', { includeDirs: [PROTO_DIR], keepCase: true, longs: String, defaults: true });
  const service = pkg['v3lockpb.Lock'] as Record<string, MethodDefinition<object, object>> | undefined;
  if (!service?.Lock || !service.Unlock) throw new Error('bench/proto/v3lock.proto lacks v3lockpb.Lock');
  return { lock: service.Lock, unlock: service.Unlock } as unknown as LockPb;
}

function unary<Req, Res>(client: Client, m: MethodDefinition<Req, Res>, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, req, { deadline: Date.now() + 10_000 }, (err: ServiceError | null, res?: Res) => {
      if (err || res === undefined) reject(err ?? new Error(`${m.path}: no answer`));
      else resolve(res);
    });
  });
}

function etcdLockClient(endpoint: string, pb: LockPb): (i: number) => Promise<LockClient> {
  return async (i) => {
    const raw = new RawEtcdClient(endpoint);
    const lease = (await raw.grant(60)).ID;
    const client = new Client(endpoint, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    const name = Buffer.from(`/bench/etcdlock${i}`);
    return {
      cycle: async () => {
        const { key } = await unary(client, pb.lock, { name, lease });
        await unary(client, pb.unlock, { key });
      },
      close: () => {
        client.close();
        raw.close();
        return Promise.resolve();
      },
    };
  };
}

/** A minimal RESP2 client: one connection, requests answered in order. */
class Resp {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly waiters: { resolve(v: unknown): void; reject(e: Error): void }[] = [];

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => {
      for (const w of this.waiters.splice(0)) w.reject(err);
    });
  }

  static connect(port: number): Promise<Resp> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ host: '127.0.0.1', port, noDelay: true }, () => resolve(new Resp(socket)));
      socket.once('error', reject);
    });
  }

  command(...args: string[]): Promise<unknown> {
    let out = `*${args.length}\r\n`;
    for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.socket.write(out);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const parsed = parseReply(this.buffer, 0);
      if (parsed === undefined) return;
      this.buffer = this.buffer.subarray(parsed.next);
      const w = this.waiters.shift();
      if (parsed.value instanceof Error) w?.reject(parsed.value);
      else w?.resolve(parsed.value);
    }
  }
}

function parseReply(buf: Buffer, at: number): { value: unknown; next: number } | undefined {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[at] as number);
  const line = buf.toString('utf8', at + 1, eol);
  switch (type) {
    case '+':
      return { value: line, next: eol + 2 };
    case '-':
      return { value: new Error(line), next: eol + 2 };
    case ':':
      return { value: Number(line), next: eol + 2 };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, next: eol + 2 };
      if (buf.length < eol + 2 + n + 2) return undefined;
      return { value: buf.toString('utf8', eol + 2, eol + 2 + n), next: eol + 2 + n + 2 };
    }
    case '*': {
      const n = Number(line);
      const items: unknown[] = [];
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        const item = parseReply(buf, next);
        if (item === undefined) return undefined;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      return { value: new Error(`unexpected RESP type ${type}`), next: eol + 2 };
  }
}

// A release that deletes the key only if it still holds our token (the lock was not lost to expiry).
const CHECKED_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

function redisClient(port: number): (i: number) => Promise<LockClient> {
  return async (i) => {
    const r = await Resp.connect(port);
    const key = `lock:${i}`;
    const sha = (await r.command('SCRIPT', 'LOAD', CHECKED_RELEASE)) as string;
    let n = 0;
    return {
      cycle: async () => {
        const token = `${i}:${++n}`;
        if ((await r.command('SET', key, token, 'NX', 'PX', '10000')) !== 'OK') throw new Error(`${key} busy`);
        if ((await r.command('EVALSHA', sha, '1', key, token)) !== 1) throw new Error(`${key} was not ours at release`);
      },
      close: () => {
        r.close();
        return Promise.resolve();
      },
    };
  };
}

// --- processes --------------------------------------------------------------------------------

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function until(what: string, probe: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not come up within ${ms} ms`);
}

async function startRedis(dir: string): Promise<{ port: number; stop(): Promise<void> }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  await until('redis-server', async () => {
    const r = await Resp.connect(port);
    try {
      return (await r.command('PING')) === 'PONG';
    } finally {
      r.close();
    }
  });
  return { port, stop: () => stopChild(child) };
}

async function startPrivateAgent(dir: string): Promise<{ socket: string; stop(): Promise<void> }> {
  const socket = path.join(dir, 'bench.sock');
  const child = spawn(process.execPath, [CORRAL, 'agent', '--private', '--socket', socket, '--data-dir', path.join(dir, 'agent'), '--lifespan', '-1'], { stdio: 'ignore' });
  await until('the private agent', async () => {
    const rpc = new RpcClient({ kind: 'unix', path: socket }, { connectTimeoutMs: 500 });
    try {
      await rpc.call('GET', '/v1/ping');
      return true;
    } finally {
      await rpc.close();
    }
  });
  return { socket, stop: () => stopChild(child) };
}

/** A one-node corral cluster whose store is etcd at `endpoint`; its agent's UNIX socket. */
function startEtcdCluster(dir: string, endpoint: string): { socket: string; stop(): Promise<void> } {
  const clusterDir = path.join(dir, 'etcd-cluster');
  const up = spawnSync(process.execPath, [CORRAL, 'local', 'up', '-n', '1', '--dir', clusterDir, '--store', `etcd://${endpoint.replace(/^https?:\/\//, '')}`], { encoding: 'utf8' });
  if (up.status !== 0) throw new Error(`corral local up on etcd failed (${up.status}): ${up.stderr}`);
  return {
    socket: path.join(clusterDir, 'n1', 'agent.sock'),
    stop: () => {
      spawnSync(process.execPath, [CORRAL, 'local', 'down', '--dir', clusterDir], { stdio: 'ignore' });
      return Promise.resolve();
    },
  };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Wall time of one run of a command, which must exit 0. */
function timeRun(command: string, args: string[], env: NodeJS.ProcessEnv): number {
  const t = performance.now();
  const r = spawnSync(command, args, { env, stdio: 'ignore' });
  const ms = performance.now() - t;
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} exited ${r.status}`);
  return ms;
}

/**
 * Median wall times of `runs` runs of two commands, alternating (one warm-up run of each first),
 * so that a machine whose load changes during the measure weighs on both alike.
 */
function alternatingMediansMs(commands: [string, string[], NodeJS.ProcessEnv][], runs: number): number[] {
  for (const c of commands) timeRun(...c);
  const times: number[][] = commands.map(() => []);
  for (let i = 0; i < runs; i++) commands.forEach((c, k) => times[k]?.push(timeRun(...c)));
  const median = (t: number[]): number => [...t].sort((x, y) => x - y)[Math.floor(t.length / 2)] as number;
  return times.map(median);
}

// --- the run ----------------------------------------------------------------------------------

const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-lockbench-'));
/** The machine's load average (1, 5, 15 min) as the run starts, before the CLI's cost and at the end. */
const load: Record<string, number[]> = { atStart: os.loadavg() };
const results: Record<string, Measured> = {};
const rows: Row[] = [];
const cleanups: (() => Promise<void>)[] = [];
try {
  const embedded = await openEmbeddedStore({ dataDir: path.join(dir, 'embedded') });
  cleanups.push(() => embedded.close());
  const etcd = await startEtcd({ members: 1 });
  cleanups.push(() => etcd.stop());
  const endpoint = etcd.endpoints[0] as string;
  const etcdStore = await openEtcdStore({ endpoints: [endpoint] });
  cleanups.push(() => etcdStore.close());
  const redis = await startRedis(dir);
  cleanups.push(() => redis.stop());
  const agent = await startPrivateAgent(dir);
  cleanups.push(() => agent.stop());
  const etcdAgent = startEtcdCluster(dir, endpoint);
  cleanups.push(() => etcdAgent.stop());
  const pb = v3lockRpcs();

  const etcdLock = "etcd's own lock (v3lock Lock/Unlock, raw grpc-js)";
  const viaAgent = 'library API through an agent (private daemon, embedded store, UNIX socket)';
  const viaEtcdAgent = 'library API through an agent on etcd (one-node cluster, UNIX socket)';
  const contenders: [string, (i: number) => Promise<LockClient>][] = (
    [
      ['recipe, embedded store (in process)', recipeClient(embedded, 'emb')],
      ['recipe, etcd (in process)', recipeClient(etcdStore, 'etcd')],
      [viaAgent, agentClient(agent.socket, 'agent')],
      [viaEtcdAgent, agentClient(etcdAgent.socket, 'etcdagent')],
      [etcdLock, etcdLockClient(endpoint, pb)],
      ['Redis SET NX PX + checked release (Lua)', redisClient(redis.port)],
    ] as [string, (i: number) => Promise<LockClient>][]
  ).filter(([name]) => name === etcdLock || wanted(name));
  for (const [name, make] of contenders) {
    for (const clients of [1, 64]) {
      const m = await measure(clients, make);
      results[`${name}, ${clients}`] = m;
      process.stdout.write(`${name}, ${clients} client(s): ${Math.round(m.cyclesPerSecond)} cycles/s, p50 ${m.latencyMs.p50.toFixed(2)} ms, p99 ${m.latencyMs.p99.toFixed(2)} ms\n`);
    }
  }
  const cps = (name: string, clients: number): number => results[`${name}, ${clients}`]?.cyclesPerSecond ?? NaN;
  for (const [name] of contenders) {
    for (const clients of [1, 64]) {
      const m = results[`${name}, ${clients}`] as Measured;
      const row: Row = { metric: `${name}, ${clients} client${clients === 1 ? '' : 's'}`, value: Math.round(m.cyclesPerSecond), unit: 'cycles/s', note: `p50 ${m.latencyMs.p50.toFixed(2)} ms, p99 ${m.latencyMs.p99.toFixed(2)} ms` };
      if (name.startsWith('recipe, embedded') || name === viaAgent) {
        const target = clients === 1 ? 1000 : 10_000;
        row.target = `≥ ${target}`;
        row.ok = m.cyclesPerSecond >= target;
      }
      if (name !== etcdLock) row.note += `; ×${(m.cyclesPerSecond / cps(etcdLock, clients)).toFixed(2)} etcd's lock`;
      rows.push(row);
    }
  }
  for (const clients of [1, 64]) {
    for (const [name] of contenders.filter(([n]) => n === viaAgent || n === viaEtcdAgent || n.startsWith('recipe, embedded'))) {
      const ratio = cps(name, clients) / cps(etcdLock, clients);
      const row: Row = { metric: `${name.split(' (')[0]} vs etcd's lock, ${clients} client${clients === 1 ? '' : 's'}`, value: ratio, unit: '×' };
      if (name !== viaEtcdAgent) {
        row.target = '≥ 2';
        row.ok = ratio >= 2;
      }
      rows.push(row);
    }
  }

  // The CLI's fixed cost, against the private agent above (already running).
  load.beforeCli = os.loadavg();
  const withCa = { ...process.env, CORRAL_RUNTIME_DIR: dir };
  const noCa: NodeJS.ProcessEnv = { ...withCa };
  delete noCa.NODE_EXTRA_CA_CERTS;
  const cli: Record<string, { nodeMs: number; lockMs: number; ratio: number; fullPathMs: number; fullPathRatio: number }> = {};
  const cliRuns = withCli
    ? ([
        [process.env.NODE_EXTRA_CA_CERTS ? 'NODE_EXTRA_CA_CERTS set (this machine)' : 'NODE_EXTRA_CA_CERTS unset (this machine)', withCa],
        ['NODE_EXTRA_CA_CERTS unset', noCa],
      ] as const)
    : [];
  for (const [label, env] of cliRuns) {
    if (label in cli) continue;
    // corral lock takes the fast path here (cli/lock-fast.cts); CORRAL_LOCK_FAST=0 forces the full path, for comparison.
    const lockArgs = [CORRAL, 'lock', '-s', agent.socket, '--', 'true'];
    const [nodeMs, lockMs, fullPathMs] = alternatingMediansMs(
      [
        [process.execPath, ['-e', ''], env],
        [process.execPath, lockArgs, env],
        [process.execPath, lockArgs, { ...env, CORRAL_LOCK_FAST: '0' }],
      ],
      CLI_RUNS,
    ) as [number, number, number];
    cli[label] = { nodeMs, lockMs, ratio: lockMs / nodeMs, fullPathMs, fullPathRatio: fullPathMs / nodeMs };
    rows.push({ metric: `corral lock -- true, ${label}`, value: lockMs, unit: 'ms', note: `node -e '' ${nodeMs.toFixed(1)} ms (medians of ${CLI_RUNS} alternating runs)` });
    rows.push({ metric: `corral lock -- true / node -e '', ${label}`, value: lockMs / nodeMs, unit: '×', target: '≤ 2', ok: lockMs / nodeMs <= 2 });
    rows.push({ metric: `  the full path (CORRAL_LOCK_FAST=0) / node -e '', ${label}`, value: fullPathMs / nodeMs, unit: '×', note: `${fullPathMs.toFixed(1)} ms` });
  }
  load.atEnd = os.loadavg();
  printTable(`locks: acquire + release cycles (${SECONDS} s per run; each client on its own resource)`, rows);
  process.stdout.write(`load average (1, 5, 15 min): ${Object.entries(load).map(([k, v]) => `${k} ${v.map((x) => x.toFixed(2)).join(' ')}`).join('; ')}\n`);
  if (partial) {
    process.stdout.write('\na partial run (--only, --seconds or --no-cli): no results written\n');
  } else {
    const file = writeResults('locks', {
      secondsPerRun: SECONDS,
      notes: [
        'each client locks its own resource: the numbers measure the lock path, not contention',
        'corral and etcd fsync every write (group commit); Redis runs in memory without persistence (--save "" --appendonly no)',
        'etcd: a single member on this machine, started by the benchmark; its v3lock creates a key on the lease and waits for its predecessors (etcd clientv3 concurrency)',
        'through an agent: each client has its own connection to the agent (a raw lock channel on its UNIX socket); the agent on etcd is a one-node corral cluster whose store is that same etcd',
        `NODE_EXTRA_CA_CERTS ${process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset'} in this run's environment`,
      ],
      loadAverage: load,
      cycles: results,
      cli,
      rows,
    });
    process.stdout.write(`\nwritten to ${file}\n`);
  }
} finally {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}
