// The Fleet over plain SSH (`--ssh --hosts FILE`), for machines without a corral agent. It runs
// the system's `ssh` in batch mode, so ~/.ssh/config, ssh-agent and known_hosts work as for any
// ssh command, and host keys are verified (nothing here relaxes StrictHostKeyChecking).
// CORRAL_SSH_CONFIG=FILE passes `-F FILE` (ssh then reads that file instead of ~/.ssh/config).
//
// One connection per host for one corral command: file operations share a ControlMaster that
// lives in a private temporary directory until close(); a command run on a host that has no
// master yet is itself the master of its connection (one handshake, as pdsh). The remote side
// needs only POSIX sh, coreutils, find, xargs and setsid (see ssh-remote.ts).

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { existsSync, mkdtempSync, rmSync, watch, type FSWatcher } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CorralError } from '../api/errors.js';
import type {
  ExecEvent,
  ExecSpec,
  FanoutCallEvent,
  FanoutEvent,
  FanoutExecArgs,
  FanoutPutEvent,
  FanoutTargetsResult,
  FileEntry,
  ListedEntry,
  NodeCheckResult,
  NodeListResult,
  NodeMkdirResult,
  NodePutArgs,
  NodePutResult,
  TargetSpec,
} from '../api/fanout-wire.js';
import { AsyncQueue } from './async-queue.js';
import type { Fleet, NodeCall } from './fleet.js';
import { checkRelative } from './node-ops.js';
import { resolveTargets, window } from './relay.js';
import { readHostsFile, type SshHost } from './ssh-hosts.js';
import { FileServer } from './ssh-file-server.js';
import {
  CHECK_SCRIPT,
  execWrapper,
  killScript,
  lastLine,
  LIST_SCRIPT,
  MarkerScanner,
  MKDIR_SCRIPT,
  FILE_SERVER_SCRIPT,
  putPathLine,
  reasonOf,
  remoteCommand,
  statusOf,
  STEP,
} from './ssh-remote.js';

const posix = path.posix;
const DEFAULT_FANOUT = 64;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/**
 * sshd allows 10 sessions per connection by default (MaxSessions): 5 file servers, 4 other
 * operations and one left for a kill.
 */
const SESSIONS_PER_HOST = 4;
const FILE_SERVERS_PER_HOST = 5;
/** The remote shell takes one argument of at most 128 KiB (Linux MAX_ARG_STRLEN). */
const MAX_COMMAND = 120 * 1024;
const MAX_PATH = 4096;
const MAX_LIST = 1_000_000;
const SCRIPT_LIMIT = 8 * 1024 * 1024;
const SHA256 = /^[0-9a-f]{64}$/;
/** After the command's exit status arrives, output still held open by its children waits this long (as the agents do). */
const LATE_OUTPUT_MS = 2000;

export interface SshFleetOptions {
  /** ssh_config file for `-F` (CORRAL_SSH_CONFIG). */
  configFile?: string;
  /** The ssh executable (CORRAL_SSH, default `ssh` on PATH). */
  ssh?: string;
  /** Shown in messages. */
  hostsFile: string;
  /** Test-only fault injection (CORRAL_FAULT_CORRUPT_PUT): flip the first byte sent of every file whose path contains this. */
  corruptPutsMatching?: string;
}

export async function openSshFleet(hostsFile: string, env: NodeJS.ProcessEnv): Promise<Fleet> {
  const hosts = readHostsFile(hostsFile);
  const configFile = env.CORRAL_SSH_CONFIG;
  if (configFile !== undefined && configFile !== '' && !existsSync(configFile)) {
    throw new CorralError('USAGE', `CORRAL_SSH_CONFIG=${configFile}: no such file (it names the ssh_config file to use instead of ~/.ssh/config)`);
  }
  return Promise.resolve(
    new SshFleet(hosts, {
      hostsFile,
      ...(configFile ? { configFile } : {}),
      ...(env.CORRAL_SSH ? { ssh: env.CORRAL_SSH } : {}),
      ...(env.CORRAL_FAULT_CORRUPT_PUT ? { corruptPutsMatching: env.CORRAL_FAULT_CORRUPT_PUT } : {}),
    }),
  );
}

/** A counting semaphore: at most `limit` holders. */
class Slots {
  private used = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly limit: number) {}

  async take(): Promise<() => void> {
    if (this.used >= this.limit) await new Promise<void>((resolve) => this.waiters.push(resolve));
    else this.used++;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const next = this.waiters.shift();
      if (next) next();
      else this.used--;
    };
  }
}

interface SshResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** One host: its dedicated ControlMaster (started on first use) and a bound on its sessions. */
interface HostLink {
  host: SshHost;
  index: number;
  socket: string;
  master?: ChildProcess;
  ready?: Promise<void>;
  /** The master is up and its socket exists. */
  up: boolean;
  slots: Slots;
  /** File servers (put and read): at most FILE_SERVERS_PER_HOST, the idle ones kept for the next file. */
  serverSlots: Slots;
  idleServers: FileServer[];
}

function splitNul(buf: Buffer): string[] {
  const parts = buf.toString('utf8').split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

function ms(since: number): number {
  return Math.round((performance.now() - since) * 1000) / 1000;
}

function checkPathText(what: string, p: unknown): string {
  if (typeof p !== 'string' || p === '' || p.includes('\0') || Buffer.byteLength(p) > MAX_PATH) {
    throw new CorralError('BAD_REQUEST', `${what}: ${JSON.stringify(p)?.slice(0, 200)} is not a usable path (a non-empty string without NUL bytes, at most ${MAX_PATH} bytes)`);
  }
  return p;
}

/** A path as an argument of a remote tool: never taken for an option. */
function operand(p: string): string {
  return p.startsWith('-') ? `./${p}` : p;
}

function validateExec(spec: ExecSpec): { argv: string[]; env: Record<string, string>; script?: { name: string; data: Buffer } } {
  const { argv } = spec;
  if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string' && !a.includes('\0'))) {
    throw new CorralError('BAD_REQUEST', 'exec needs argv: a list of strings without NUL bytes');
  }
  if (argv.length === 0 && !spec.script) throw new CorralError('BAD_REQUEST', 'exec needs a command');
  if (spec.shell && argv.length !== 1) throw new CorralError('BAD_REQUEST', 'a shell command is one string');
  if (spec.timeoutMs !== undefined && (!Number.isSafeInteger(spec.timeoutMs) || spec.timeoutMs < 1)) throw new CorralError('BAD_REQUEST', 'timeoutMs must be a positive integer');
  if (spec.killGraceMs !== undefined && (!Number.isSafeInteger(spec.killGraceMs) || spec.killGraceMs < 0 || spec.killGraceMs > 600_000)) {
    throw new CorralError('BAD_REQUEST', 'killGraceMs must be between 0 and 600000');
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string' || v.includes('\0')) throw new CorralError('BAD_REQUEST', `bad environment variable ${JSON.stringify(k)}`);
    env[k] = v;
  }
  let script: { name: string; data: Buffer } | undefined;
  if (spec.script) {
    const name = checkRelative('script name', spec.script.name);
    if (name.includes('/')) throw new CorralError('BAD_REQUEST', `script name ${JSON.stringify(name)} must not contain "/"`);
    const data = Buffer.from(spec.script.base64, 'base64');
    if (data.length > SCRIPT_LIMIT) throw new CorralError('TOO_LARGE', `the script is over ${SCRIPT_LIMIT} bytes`);
    script = { name, data };
  }
  return { argv: spec.shell ? ['/bin/sh', '-c', ...argv] : argv, env, ...(script ? { script } : {}) };
}

export class SshFleet implements Fleet {
  private readonly hosts: Map<string, SshHost>;
  private readonly names: string[];
  private readonly links = new Map<string, HostLink>();
  private readonly children = new Set<ChildProcess>();
  private readonly dir: string;
  private readonly socketWaiters = new Map<string, () => void>();
  private watcher: FSWatcher | undefined;
  private closed = false;
  private execSeq = 0;
  private readonly onExit = (): void => {
    for (const child of this.children) child.kill('SIGTERM');
    rmSync(this.dir, { recursive: true, force: true });
  };

  constructor(
    hosts: readonly SshHost[],
    private readonly options: SshFleetOptions,
  ) {
    this.hosts = new Map(hosts.map((h) => [h.name, h]));
    this.names = hosts.map((h) => h.name);
    // Socket paths are short (ssh adds 17 bytes while binding; the limit is 108) and hold no '%'.
    const base = os.tmpdir().length <= 60 && !os.tmpdir().includes('%') ? os.tmpdir() : '/tmp';
    this.dir = mkdtempSync(path.join(base, 'corral-ssh-'));
    process.on('exit', this.onExit);
  }

  get via(): string {
    return `ssh (${this.names.length} host${this.names.length === 1 ? '' : 's'} from ${this.options.hostsFile})`;
  }

  targets(spec: TargetSpec): Promise<FanoutTargetsResult> {
    return Promise.resolve({ nodes: resolveTargets(spec, this.names, {}), down: [] });
  }

  private link(node: string): HostLink {
    let link = this.links.get(node);
    if (!link) {
      const host = this.hosts.get(node);
      if (!host) throw new CorralError('USAGE', `unknown node ${node} (the hosts file lists ${this.names.slice(0, 12).join(', ')}${this.names.length > 12 ? ', …' : ''})`);
      const index = this.links.size;
      link = { host, index, socket: path.join(this.dir, `m${index}`), up: false, slots: new Slots(SESSIONS_PER_HOST), serverSlots: new Slots(FILE_SERVERS_PER_HOST), idleServers: [] };
      this.links.set(node, link);
    }
    return link;
  }

  // ---- ssh processes

  private sshArgs(host: SshHost, connectTimeoutMs: number, control: string[], command?: string): string[] {
    return [
      ...(this.options.configFile ? ['-F', this.options.configFile] : []),
      '-o',
      'BatchMode=yes',
      '-o',
      `ConnectTimeout=${Math.max(1, Math.ceil(connectTimeoutMs / 1000))}`,
      ...control,
      ...(host.port !== undefined ? ['-p', String(host.port)] : []),
      ...(host.user !== undefined ? ['-l', host.user] : []),
      '-T',
      '--',
      host.host,
      ...(command !== undefined ? [command] : []),
    ];
  }

  private spawnSsh(args: string[], stdin: 'pipe' | 'ignore'): ChildProcess {
    if (this.closed) throw new CorralError('INTERNAL', 'the SSH fleet is closed');
    const child = spawn(this.options.ssh ?? 'ssh', args, { stdio: [stdin, 'pipe', 'pipe'] });
    this.children.add(child);
    child.once('close', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    child.stdin?.on('error', () => undefined); // the remote side may stop reading
    return child;
  }

  /** Waits for a child to end; a spawn failure counts as ssh's own failure (255). */
  private static ended(child: ChildProcess): Promise<{ code: number | null; spawnError?: string }> {
    return new Promise((resolve) => {
      child.once('error', (err: NodeJS.ErrnoException) => resolve({ code: 255, spawnError: `cannot run ssh (${err.code ?? err.message}): install the OpenSSH client or set CORRAL_SSH` }));
      child.once('close', (code) => resolve({ code }));
    });
  }

  private watchSockets(): void {
    if (this.watcher) return;
    this.watcher = watch(this.dir, (_event, name) => {
      if (name === null) return;
      const waiter = this.socketWaiters.get(String(name));
      if (waiter && existsSync(path.join(this.dir, String(name)))) waiter();
    });
    this.watcher.on('error', () => undefined);
  }

  /** The host's dedicated ControlMaster, started once; a failure is kept for the whole command. */
  private ensureMaster(link: HostLink, connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS): Promise<void> {
    link.ready ??= this.startMaster(link, connectTimeoutMs);
    return link.ready;
  }

  private startMaster(link: HostLink, connectTimeoutMs: number): Promise<void> {
    const args = this.sshArgs(link.host, connectTimeoutMs, ['-o', 'ControlMaster=yes', '-o', `ControlPath=${link.socket}`, '-o', 'ControlPersist=no', '-N']);
    const child = this.spawnSsh(args, 'ignore');
    link.master = child;
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    this.watchSockets();
    const name = path.basename(link.socket);
    return new Promise<void>((resolve, reject) => {
      const done = (err?: CorralError): void => {
        clearInterval(poll);
        clearTimeout(deadline);
        this.socketWaiters.delete(name);
        if (err) {
          child.kill('SIGTERM');
          reject(err);
        } else {
          link.up = true;
          resolve();
        }
      };
      this.socketWaiters.set(name, () => done());
      // inotify is the fast path; the poll covers file systems without it.
      const poll = setInterval(() => {
        if (existsSync(link.socket)) done();
      }, 250);
      const deadline = setTimeout(() => done(new CorralError('UNAVAILABLE', `${link.host.name}: no SSH connection within ${Math.round((connectTimeoutMs * 3) / 1000)} s`)), connectTimeoutMs * 3);
      void SshFleet.ended(child).then(({ code, spawnError }) => {
        link.up = false;
        done(new CorralError('UNAVAILABLE', spawnError ?? (lastLine(stderr) || `ssh to ${link.host.name} exited with status ${code ?? 'signal'}`)));
      });
    });
  }

  /** One remote script over the host's master: its exit status, stdout and stderr. */
  private async runScript(node: string, script: string, args: string[], input: Buffer | undefined, signal: AbortSignal): Promise<SshResult> {
    const link = this.link(node);
    await this.ensureMaster(link);
    const release = await link.slots.take();
    try {
      const child = this.spawnSsh(this.clientArgs(link, remoteCommand(script, args)), 'pipe');
      const onAbort = (): void => void child.kill('SIGTERM');
      signal.addEventListener('abort', onAbort, { once: true });
      const out: Buffer[] = [];
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => out.push(d));
      child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
      child.stdin?.end(input ?? Buffer.alloc(0));
      const { code, spawnError } = await SshFleet.ended(child);
      signal.removeEventListener('abort', onAbort);
      if (code === 255) throw new CorralError('UNAVAILABLE', spawnError ?? (lastLine(stderr) || `ssh to ${node} failed`));
      return { code, stdout: Buffer.concat(out), stderr };
    } finally {
      release();
    }
  }

  private clientArgs(link: HostLink, command: string, connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS): string[] {
    return this.sshArgs(link.host, connectTimeoutMs, ['-o', 'ControlMaster=no', '-o', `ControlPath=${link.socket}`], command);
  }

  // ---- exec

  exec(args: FanoutExecArgs, stdin: Buffer | undefined, signal: AbortSignal): AsyncIterable<FanoutEvent> {
    const nodes = resolveTargets(args.targets ?? {}, this.names, {});
    const spec = validateExec(args.exec);
    const fanout = args.fanout ?? DEFAULT_FANOUT;
    if (!Number.isSafeInteger(fanout) || fanout < 1 || fanout > 10_000) throw new CorralError('BAD_REQUEST', 'fanout must be between 1 and 10000');
    const queue = new AsyncQueue<FanoutEvent>(512);
    queue.push({ t: 'plan', nodes });
    void this.runExec(nodes, args, spec, stdin, signal, queue).then(
      () => queue.end(),
      (err: unknown) => queue.fail(err),
    );
    return queue;
  }

  private async runExec(
    nodes: string[],
    args: FanoutExecArgs,
    spec: ReturnType<typeof validateExec>,
    stdin: Buffer | undefined,
    signal: AbortSignal,
    queue: AsyncQueue<FanoutEvent>,
  ): Promise<void> {
    const stop = new AbortController();
    // Every node's command listens to both.
    setMaxListeners(0, stop.signal, signal);
    const onAbort = (): void => stop.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) stop.abort();
    const push = async (ev: FanoutEvent): Promise<void> => {
      if (!queue.push(ev)) await queue.drained();
    };
    try {
      const skipped = await window(nodes, args.fanout ?? DEFAULT_FANOUT, stop.signal, async (node, rank) => {
        const failed = await this.execNode(node, { rank, size: nodes.length, exec: args.exec, spec, stdin, connectTimeoutMs: args.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS }, stop.signal, push);
        if (failed && args.failFast) stop.abort();
      });
      for (const i of skipped) await push({ node: nodes[i] as string, t: 'cancelled' });
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Runs the command on one node; pushes its events and one final event; true when it failed. */
  private async execNode(
    node: string,
    o: { rank: number; size: number; exec: ExecSpec; spec: ReturnType<typeof validateExec>; stdin: Buffer | undefined; connectTimeoutMs: number },
    stop: AbortSignal,
    push: (ev: FanoutEvent) => Promise<void>,
  ): Promise<boolean> {
    const started = performance.now();
    const link = this.link(node);
    const nonce = randomBytes(8).toString('hex');
    const graceMs = o.exec.killGraceMs ?? 2000;
    const script = o.spec.script;
    const wrapper = execWrapper({
      nonce,
      argv: o.spec.argv,
      env: { CORRAL_NODE: node, CORRAL_RANK: String(o.rank), CORRAL_SIZE: String(o.size), ...o.spec.env },
      ...(o.exec.cwd !== undefined ? { cwd: checkPathText('cwd', o.exec.cwd) } : {}),
      stdin: o.stdin !== undefined,
      ...(script ? { script: { name: script.name, size: script.data.length, rand: randomBytes(8).toString('hex') } } : {}),
      killGraceMs: graceMs,
    });
    const command = remoteCommand(wrapper, o.spec.argv);
    if (Buffer.byteLength(command) > MAX_COMMAND) {
      await push({ node, t: 'unreachable', error: `the command line is too long for ssh (${Buffer.byteLength(command)} bytes; the remote shell takes ${MAX_COMMAND}): put it in a file and use --script`, code: 'TOO_LARGE' });
      return true;
    }
    // A host without a master yet: this connection is its master, so a run costs one handshake.
    let socket = link.socket;
    let control: string[];
    if (link.up) control = ['-o', 'ControlMaster=no', '-o', `ControlPath=${socket}`];
    else {
      socket = path.join(this.dir, `e${link.index}-${this.execSeq++}`);
      control = ['-o', 'ControlMaster=yes', '-o', `ControlPath=${socket}`, '-o', 'ControlPersist=no'];
    }
    let child: ChildProcess;
    try {
      child = this.spawnSsh(this.sshArgs(link.host, o.connectTimeoutMs, control, command), 'pipe');
    } catch (err) {
      await push({ node, t: 'unreachable', ...CorralError.from(err).toWire(), error: CorralError.from(err).message });
      return true;
    }
    const endedP = SshFleet.ended(child);
    const events = new AsyncQueue<ExecEvent>(64);
    const scanner = new MarkerScanner(nonce);
    let preStart: Buffer[] = [];
    let pgid: number | undefined;
    let rc: number | undefined;
    let timedOut = false;
    let killer: Promise<void> | undefined;
    let timeoutTimer: NodeJS.Timeout | undefined;
    let lateTimer: NodeJS.Timeout | undefined;
    let sshStderr = '';
    const finals: FanoutEvent[] = [];

    const kill = (): void => {
      if (killer) return;
      if (pgid === undefined) {
        // Not started yet: end the local client; the remote watchdog ends anything that began.
        child.kill('SIGTERM');
        killer = Promise.resolve();
        return;
      }
      const k = this.spawnSsh(this.sshArgs(link.host, o.connectTimeoutMs, ['-o', 'ControlMaster=no', '-o', `ControlPath=${socket}`], remoteCommand(killScript(pgid, graceMs))), 'ignore');
      killer = SshFleet.ended(k).then(() => undefined);
    };
    const onStop = (): void => kill();
    stop.addEventListener('abort', onStop, { once: true });
    if (stop.aborted) kill();

    // Until the start marker, stdout waits (so that `start` comes first, as from an agent) and
    // stderr is ssh's own (its error when it fails) or the login's.
    let outBeforeStart: Buffer[] = [];
    const flushPreStart = (): void => {
      const data = Buffer.concat(preStart);
      preStart = [];
      if (data.length > 0) events.push({ t: 'err', b: data.toString('base64') });
    };
    const flushOut = (): void => {
      const data = Buffer.concat(outBeforeStart);
      outBeforeStart = [];
      if (data.length > 0) events.push({ t: 'out', b: data.toString('base64') });
    };
    const pump = (stream: NodeJS.ReadableStream, onData: (d: Buffer) => void): void => {
      stream.on('data', (d: Buffer) => {
        onData(d);
        if (events.length >= 64) {
          stream.pause();
          void events.drained().then(() => stream.resume());
        }
      });
    };
    pump(child.stdout as NodeJS.ReadableStream, (d) => {
      if (pgid === undefined && rc === undefined) outBeforeStart.push(d);
      else events.push({ t: 'out', b: d.toString('base64') });
    });
    pump(child.stderr as NodeJS.ReadableStream, (d) => {
      const { data, markers } = scanner.push(d);
      let rest = data;
      for (const m of markers) {
        if (m.word === 'start' && pgid === undefined) {
          pgid = Number(m.value);
          flushPreStart();
          events.push({ t: 'start', pid: pgid });
          flushOut();
          if (o.exec.timeoutMs !== undefined) {
            timeoutTimer = setTimeout(() => {
              timedOut = true;
              kill();
            }, o.exec.timeoutMs);
          }
          if (stop.aborted) kill();
        } else if (m.word === 'exit') {
          rc = Number(m.value);
          flushPreStart();
          flushOut();
          lateTimer = setTimeout(() => child.kill('SIGTERM'), LATE_OUTPUT_MS);
        }
      }
      if (rest.length === 0) return;
      if (pgid === undefined && rc === undefined) {
        preStart.push(rest);
        sshStderr = (sshStderr + rest.toString()).slice(-4000);
        rest = Buffer.alloc(0);
      } else {
        sshStderr = (sshStderr + rest.toString()).slice(-4000);
        events.push({ t: 'err', b: rest.toString('base64') });
      }
    });
    // Input: the script's bytes, then --stdin's; without --stdin the session's input stays open
    // (the remote watchdog reads it) until ssh ends.
    if (script) child.stdin?.write(script.data);
    if (o.stdin !== undefined) child.stdin?.end(o.stdin);

    void endedP.then(async ({ code, spawnError }) => {
      clearTimeout(timeoutTimer);
      clearTimeout(lateTimer);
      stop.removeEventListener('abort', onStop);
      child.stdin?.destroy();
      const tail = scanner.end();
      if (tail.length > 0 && pgid === undefined && rc === undefined) preStart.push(tail);
      else if (tail.length > 0) events.push({ t: 'err', b: tail.toString('base64') });
      flushOut();
      if (killer) await killer;
      let final: FanoutEvent;
      if (rc !== undefined) {
        final = { node, t: 'exit', ...statusOf(rc), timedOut, ms: ms(started) };
      } else if (timedOut) {
        final = { node, t: 'exit', code: null, signal: 'SIGKILL', timedOut: true, ms: ms(started) };
      } else if (stop.aborted) {
        final = { node, t: 'cancelled' };
      } else {
        const why = spawnError ?? (lastLine(Buffer.concat(preStart).toString() || sshStderr) || `ssh exited with status ${code ?? 'signal'}`);
        final = { node, t: 'unreachable', error: pgid === undefined ? why : `the SSH connection was lost while the command ran (${why})`, code: 'UNAVAILABLE' };
      }
      events.end();
      finals.push(final);
    });
    for await (const ev of events) await push({ node, ...ev });
    const final = finals[0] as FanoutEvent;
    await push(final);
    return final.t === 'unreachable' || (final.t === 'exit' && (final.code !== 0 || final.timedOut));
  }

  // ---- call: mkdir, check, list

  async *call(nodes: string[], call: NodeCall, opts: { fanout?: number; signal: AbortSignal }): AsyncGenerator<FanoutCallEvent> {
    const list = resolveTargets({ nodes: nodes.join(',') }, this.names, {});
    setMaxListeners(0, opts.signal);
    const queue = new AsyncQueue<FanoutCallEvent>(512);
    queue.push({ t: 'plan', nodes: list });
    void window(list, opts.fanout ?? DEFAULT_FANOUT, opts.signal, async (node) => {
      const t0 = performance.now();
      try {
        const result = await this.callNode(node, call, opts.signal);
        queue.push({ node, t: 'ok', result, ms: ms(t0) });
      } catch (err) {
        const e = CorralError.from(err);
        queue.push({ node, t: 'error', error: e.message, code: e.code, ms: ms(t0) });
      }
      await queue.drained();
    }).then(
      () => queue.end(),
      (err: unknown) => queue.fail(err),
    );
    yield* queue;
  }

  private callNode(node: string, call: NodeCall, signal: AbortSignal): Promise<unknown> {
    switch (call.path) {
      case '/v1/node/mkdir':
        return this.mkdir(node, call.body, signal);
      case '/v1/node/check':
        return this.check(node, call.body, signal);
      case '/v1/node/list':
        return this.list(node, call.body, signal);
    }
  }

  private async mkdir(node: string, args: { paths?: unknown }, signal: AbortSignal): Promise<NodeMkdirResult> {
    if (!Array.isArray(args.paths) || args.paths.length === 0 || args.paths.length > 10_000) {
      throw new CorralError('BAD_REQUEST', 'mkdir needs paths: a list of 1 to 10000 directories');
    }
    const paths = args.paths.map((p) => checkPathText('mkdir', p));
    const input = Buffer.from(paths.map((p) => `${p}\0`).join(''));
    const res = await this.runScript(node, MKDIR_SCRIPT, [], input, signal);
    const [home = '/', ...flags] = splitNul(res.stdout);
    if (res.code !== 0 || flags.length !== paths.length) {
      const failed = paths[Math.min(flags.length, paths.length - 1)] as string;
      throw new CorralError('FILE_ERROR', `mkdir ${posix.resolve(home, failed)} on ${node}: ${reasonOf(res.stderr)}`);
    }
    return { dirs: paths.map((p, i) => ({ path: posix.resolve(home, p), created: flags[i] === '1' })) };
  }

  private async check(node: string, args: { dest?: unknown; files?: unknown }, signal: AbortSignal): Promise<NodeCheckResult> {
    if (!Array.isArray(args.files) || args.files.length > 1_000_000) throw new CorralError('BAD_REQUEST', 'check needs files: a list of entries');
    const dest = checkPathText('destination', args.dest);
    const files = args.files as FileEntry[];
    const targets = files.map((f) => operand(posix.join(dest, checkRelative('file', f.path))));
    const res = await this.runScript(node, CHECK_SCRIPT, [], Buffer.from(targets.map((t) => `${t}\0`).join('')), signal);
    const hashes = new Map<string, string>();
    for (const line of splitNul(res.stdout).slice(1)) hashes.set(line.slice(66), line.slice(0, 64));
    return { present: files.map((f, i) => hashes.get(targets[i] as string) === f.sha256) };
  }

  private async list(node: string, args: { path?: unknown }, signal: AbortSignal): Promise<NodeListResult> {
    const given = checkPathText('gather', args.path);
    const arg = operand(posix.normalize(given).replace(/(.)\/+$/, '$1'));
    const res = await this.runScript(node, LIST_SCRIPT, [arg], undefined, signal);
    const records = splitNul(res.stdout);
    const home = records[0] ?? '/';
    const root = posix.resolve(home, given);
    if (res.code !== 0) {
      const why = res.code === STEP.notFound ? 'it does not exist' : reasonOf(res.stderr);
      throw new CorralError('FILE_ERROR', `gather ${root} on ${node}: ${why}`);
    }
    const gap = records.indexOf('', 1);
    const described = records.slice(1, gap === -1 ? records.length : gap);
    if (described.length > MAX_LIST) throw new CorralError('TOO_LARGE', `${root} on ${node} holds over ${MAX_LIST} entries`);
    const hashes = new Map<string, string>();
    for (const line of gap === -1 ? [] : records.slice(gap + 1)) hashes.set(line.slice(66), line.slice(0, 64));
    const base = posix.basename(root) || 'root';
    const relative = (p: string): string => (p === arg ? base : `${base}/${p.slice(arg.endsWith('/') ? arg.length : arg.length + 1)}`);
    const entries: ListedEntry[] = [];
    for (const rec of described) {
      const m = /^([fd]) ([0-7]+) (\d+) ([\s\S]*)$/.exec(rec);
      if (!m) continue;
      const [, type, mode, size, p] = m as unknown as [string, string, string, string, string];
      const rel = relative(p);
      if (type === 'f') {
        const sha256 = hashes.get(p);
        if (sha256 === undefined) throw new CorralError('FILE_ERROR', `gather ${root} on ${node}: ${p} could not be read (${reasonOf(res.stderr)})`);
        entries.push({ path: rel, type: 'file', size: Number(size), mode: parseInt(mode, 8) & 0o777, sha256 });
      } else entries.push({ path: rel, type: 'dir', size: 0, mode: parseInt(mode, 8) & 0o777 });
    }
    // The agents list depth first with each directory's names sorted.
    const key = (e: ListedEntry): string[] => e.path.split('/');
    entries.sort((a, b) => {
      const x = key(a);
      const y = key(b);
      for (let i = 0; i < Math.min(x.length, y.length); i++) {
        if (x[i] !== y[i]) return (x[i] as string) < (y[i] as string) ? -1 : 1;
      }
      return x.length - y.length;
    });
    return { root, entries };
  }

  // ---- put and read

  /** A file server of the host: an idle one, or a new one while the host has fewer than FILE_SERVERS_PER_HOST. */
  private async fileServer(link: HostLink): Promise<{ server: FileServer; release: () => void }> {
    await this.ensureMaster(link);
    const release = await link.serverSlots.take();
    try {
      let server = link.idleServers.pop();
      while (server?.dead) server = link.idleServers.pop();
      if (!server) {
        server = new FileServer(this.spawnSsh(this.clientArgs(link, remoteCommand(FILE_SERVER_SCRIPT)), 'pipe'));
        const started = server;
        await server.home.catch(() => {
          throw new CorralError('UNAVAILABLE', lastLine(started.stderr) || `ssh to ${link.host.name} ended before it was ready`);
        });
      }
      const s = server;
      return {
        server: s,
        release: () => {
          if (!s.dead) link.idleServers.push(s);
          release();
        },
      };
    } catch (err) {
      release();
      throw err;
    }
  }

  async put(nodes: string[], put: NodePutArgs, source: () => AsyncIterable<Buffer>, signal: AbortSignal): Promise<FanoutPutEvent[]> {
    const list = resolveTargets({ nodes: nodes.join(',') }, this.names, {});
    const file = put.file as Partial<FileEntry> | undefined;
    if (!file || typeof file !== 'object') throw new CorralError('BAD_REQUEST', 'put needs file: {path, size, mode, sha256}');
    const rel = checkRelative('file', file.path);
    if (!Number.isSafeInteger(file.size) || (file.size as number) < 0) throw new CorralError('BAD_REQUEST', `put ${rel}: size must be a non-negative integer`);
    if (typeof file.sha256 !== 'string' || !SHA256.test(file.sha256)) throw new CorralError('BAD_REQUEST', `put ${rel}: sha256 must be 64 lower-case hex digits`);
    setMaxListeners(0, signal);
    const size = file.size as number;
    const sha = file.sha256;
    const mode = Number.isInteger(file.mode) ? (file.mode as number) & 0o777 : 0o644;
    const dest = checkPathText('destination', put.dest);
    const target = operand(posix.join(dest, rel));
    const dir = posix.dirname(target);
    const temp = posix.join(dir, `.${posix.basename(target)}.corral-${randomBytes(6).toString('hex')}.part`);
    const header = `P ${size} ${sha} ${mode.toString(8)} ${put.fsync === true ? 1 : 0}\n${putPathLine(dir)}${putPathLine(target)}${putPathLine(temp)}`;

    interface Sink {
      node: string;
      server?: FileServer;
      release?: () => void;
      error?: FanoutPutEvent;
    }
    const sinks: Sink[] = await Promise.all(
      list.map(async (node): Promise<Sink> => {
        try {
          const { server, release } = await this.fileServer(this.link(node));
          await server.write(header);
          return { node, server, release };
        } catch (err) {
          const e = CorralError.from(err);
          return { node, error: { node, t: 'error', error: e.message, code: e.code } };
        }
      }),
    );
    const live = sinks.flatMap((s) => (s.server ? [s.server] : []));
    const stopAll = (): void => {
      for (const server of live) void server.finish();
    };
    signal.addEventListener('abort', stopAll, { once: true });
    let sent = 0;
    let tooMany = false;
    const corrupt = this.options.corruptPutsMatching !== undefined && rel.includes(this.options.corruptPutsMatching);
    try {
      if (live.length > 0 && !signal.aborted) {
        for await (const chunk of source()) {
          if (signal.aborted) break;
          const room = size - sent;
          if (chunk.length > room) tooMany = true;
          let part = chunk.length > room ? chunk.subarray(0, room) : chunk;
          if (corrupt && sent === 0 && part.length > 0) {
            part = Buffer.from(part);
            part[0] = (part[0] as number) ^ 0xff;
          }
          sent += part.length;
          if (part.length > 0) await Promise.all(live.map((server) => server.write(part)));
          if (tooMany) break;
        }
      }
      // A sender that stops short ends the sessions (the framing cannot be resumed): each host
      // reads end-of-file, removes its temporary file and ends, before the answer is given.
      if (sent < size || signal.aborted) await Promise.all(live.map((server) => server.finish()));
      else await Promise.all(live.map((server) => server.write(tooMany ? 'A\n' : 'C\n')));
    } catch (err) {
      stopAll();
      for (const s of sinks) s.release?.();
      throw err;
    } finally {
      signal.removeEventListener('abort', stopAll);
    }
    return Promise.all(
      sinks.map(async (s): Promise<FanoutPutEvent> => {
        if (s.error) return s.error;
        const server = s.server as FileServer;
        try {
          const answer = sent < size || signal.aborted ? undefined : await server.next();
          return this.putOutcome(s.node, answer, server, { size, sent, sha, target, home: await server.home, dir });
        } finally {
          s.release?.();
        }
      }),
    );
  }

  private putOutcome(node: string, answer: string | undefined, server: FileServer, f: { size: number; sent: number; sha: string; target: string; home: string; dir: string }): FanoutPutEvent {
    const abs = posix.resolve(f.home, f.target);
    const fail = (code: 'FILE_ERROR' | 'CHECKSUM_MISMATCH' | 'UNAVAILABLE', error: string): FanoutPutEvent => ({ node, t: 'error', error, code });
    if (f.sent < f.size) return fail('CHECKSUM_MISMATCH', `${abs} on ${node}: ${f.sent} of ${f.size} bytes arrived (the sender stopped); nothing was put in place`);
    const m = answer === undefined ? null : /^R (\d+) (\S+) ?(.*)$/.exec(answer);
    if (!m) return fail('UNAVAILABLE', `the SSH session to ${node} ended during ${abs}${lastLine(server.stderr) ? `: ${lastLine(server.stderr)}` : ''}`);
    const [, step, hash, message] = m as unknown as [string, string, string, string];
    switch (Number(step)) {
      case 0:
        return { node, t: 'ok', result: { path: abs, bytes: f.size, sha256: hash } satisfies NodePutResult };
      case STEP.mkdirParent:
        return fail('FILE_ERROR', `creating ${posix.resolve(f.home, f.dir)} on ${node}: ${reasonOf(message)}`);
      case STEP.tooMany:
        return fail('CHECKSUM_MISMATCH', `${abs} on ${node}: more bytes arrived than the ${f.size} announced`);
      case STEP.shaMismatch:
        return fail('CHECKSUM_MISMATCH', `${abs} on ${node}: SHA-256 ${hash.slice(0, 12)}… does not match the sent ${f.sha.slice(0, 12)}…; nothing was put in place, send it again`);
      case STEP.place:
        return fail('FILE_ERROR', `putting ${abs} in place on ${node}: ${reasonOf(message)}`);
      default:
        return fail('FILE_ERROR', `writing ${abs} on ${node}: ${reasonOf(message)}`);
    }
  }

  async read(node: string, file: string, signal: AbortSignal): Promise<AsyncIterable<Buffer>> {
    const [name] = resolveTargets({ nodes: node }, this.names, {});
    const given = checkPathText('read', file);
    setMaxListeners(0, signal);
    const { server, release } = await this.fileServer(this.link(name as string));
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      release();
    };
    const onAbort = (): void => {
      server.kill();
      finish();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const home = await server.home;
    const abs = posix.resolve(home, given);
    const lost = (): CorralError => new CorralError('UNAVAILABLE', `the SSH session to ${node} ended while reading ${abs}${lastLine(server.stderr) ? `: ${lastLine(server.stderr)}` : ''}`);
    await server.write(`G\n${putPathLine(operand(given))}`);
    const answer = await server.next();
    if (answer !== 'K') {
      finish();
      if (answer === undefined) throw lost();
      const step = Number(answer.split(' ')[1]);
      const why = step === STEP.notFound ? 'it does not exist' : step === STEP.notFile ? 'it is a directory' : step === STEP.notReadable ? 'permission denied' : answer;
      throw new CorralError('FILE_ERROR', `reading ${abs} on ${node}: ${why}`);
    }
    const body = server.body64();
    return (async function* () {
      let complete = false;
      try {
        yield* body;
        const status = await server.next();
        if (status === undefined) throw lost();
        const m = /^S (\d+) ?(.*)$/.exec(status);
        if (!m || m[1] !== '0') throw new CorralError('FILE_ERROR', `reading ${abs} on ${node}: ${reasonOf(m?.[2] ?? status)}`);
        complete = true;
      } catch (err) {
        throw err instanceof CorralError ? err : lost();
      } finally {
        // A body not read to its end leaves the session mid-answer: it cannot serve again.
        if (!complete) server.kill();
        finish();
      }
    })();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    const live = [...this.children];
    for (const child of live) child.kill('SIGTERM');
    await Promise.all(
      live.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
            child.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    );
    rmSync(this.dir, { recursive: true, force: true });
    process.off('exit', this.onExit);
  }
}
