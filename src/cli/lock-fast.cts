// corral lock's fast path: the common case, `corral lock [-r NAME] [-l MODE] [-o MS] ... -- CMD`
// on the user's private daemon, done before any ES module loads. bin/corral calls fastLock() first
// thing; it takes the request only when everything about it is ordinary, and otherwise (or when
// anything unexpected happens before CMD runs) hands it to the full path (verbs/lock.ts), which
// does the same with every option, starts the daemon when none answers, and says what is wrong.
//
// Why: the full path costs an ES module graph and a second node process (the gate, lock-gate.cts),
// which together keep `corral lock -- true` near 2.8x `node -e ''`. Here CMD's group leader is
// /bin/sh running a fixed script that waits for the fencing token on fd 3 and then execs CMD:
//
//   corral lock ──spawn (own session; env + CORRAL_LOCK_GATE=<secret>)──► sh -c TRAMPOLINE -- CMD...
//   corral lock ──acquire {attach: {pgid: sh's pid, secret}, guard}──► daemon (raw lock channel)
//   daemon ──granted {attached}──► corral lock ──fd 3: "<token>\n"──► sh: exec CMD (same pid, group)
//
// So, as with the node gate, CMD runs only once the lock is granted with its group attached: if
// corral lock dies before, sh reads end-of-file and exits 97 without running anything; if it dies
// after, the daemon keeps the lock while the group runs. The fast path takes the lock only where
// that holds: a grant without the group attached, or on a lease that outlives the daemon (a gate
// would have to watch it), or with a value to pass (set, sequence, timestamp resources, which the
// fast path does not take anyway) is cancelled and handed to the full path.
//
// What it does not take (the full path does): any option but -r -l -o -i -d -s --on-lost; resource
// names other than simple, numeric name[N] and hierarchical /a/b; a cluster ($CORRAL_CONFIG without
// -s); a CMD that is not an executable file found as execvp(3) would find it (the full path says
// why); no daemon answering (the full path starts one); the daemon failing the request as
// unavailable. CORRAL_LOCK_FAST=0 turns it off.

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, openSync, readSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { constants } from 'node:os';
import path from 'node:path';
import { LockValidity } from '../client/lock-validity.cjs';
import { defaultLockSocket } from '../client/private-socket.cjs';
import { exitCodeOf, FORWARDED, KILL_MARGIN_MS, timedOutMessage } from './lock-common.cjs';
import { randomHex } from './lock-gate-spawn.cjs';

/**
 * CMD's group leader until the lock is granted: reads the fencing token from fd 3 (end-of-file:
 * corral lock is gone, nothing runs), closes it, drops the secret and execs CMD in its place.
 */
const TRAMPOLINE = 'IFS= read -r f <&3 || exit 97; exec 3<&-; unset CORRAL_LOCK_GATE CORRAL_LOCK_VALUE; CORRAL_FENCE=$f; export CORRAL_FENCE; exec "$@"';

const OPTIONS: Record<string, string> = {
  '-r': 'resource-name',
  '--resource-name': 'resource-name',
  '-l': 'lock-mode',
  '--lock-mode': 'lock-mode',
  '-o': 'resource-timeout',
  '--resource-timeout': 'resource-timeout',
  '-i': 'resource-idle-lifespan',
  '--resource-idle-lifespan': 'resource-idle-lifespan',
  '-d': 'daemon-lifespan',
  '--daemon-lifespan': 'daemon-lifespan',
  '-s': 'socket-name',
  '--socket-name': 'socket-name',
  '--on-lost': 'on-lost',
};

/** Resource names whose grant carries no value: simple, numeric name[N] (N >= 1), hierarchical. */
const PLAIN_RESOURCE = /^(?:[A-Za-z][A-Za-z0-9]{0,127}(?:\[[1-9][0-9]{0,8}\])?|(?:\/[A-Za-z0-9_-]{1,64}){1,16})$/;
const MODES = new Set(['NL', 'CR', 'CW', 'PR', 'PW', 'EX']);
/** The agent answers a timed-out request itself; this much later the client gives up on its own. */
const TIMEOUT_SLACK_MS = 250;
/** How long a release may take (the full path's private client's request timeout). */
const REQUEST_TIMEOUT_MS = 10_000;
/** A daemon that has not taken the channel within this is left to the full path (which says why). */
const READY_WITHIN_MS = 2000;
/** After a grant the fast path cannot use, how long its release may take before it hands over anyway. */
const GIVE_BACK_MS = 2000;
/** The longest timer Node keeps (longer ones fire at once). */
const MAX_TIMER_MS = 2_147_483_647;

export interface FastRequest {
  resource: string;
  mode: string | undefined;
  timeoutMs: number;
  idleLifespanMs: number | undefined;
  socket: string;
  onLost: 'kill' | 'warn';
  command: string[];
}

/** The request, when the fast path can take it; undefined hands it to the full path. */
export function fastRequest(args: readonly string[], env: NodeJS.ProcessEnv): FastRequest | undefined {
  if (process.platform !== 'linux' || env.CORRAL_LOCK_FAST === '0' || env.CORRAL_LOCK_TEST_STOP_AT !== undefined) return undefined;
  const values = new Map<string, string>();
  let i = 0;
  for (; i < args.length && args[i] !== '--'; i++) {
    const arg = args[i] as string;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = OPTIONS[eq > 0 ? arg.slice(0, eq) : arg];
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
    if (name === undefined || value === undefined || values.has(name)) return undefined;
    values.set(name, value);
  }
  const command = args.slice(i + 1);
  const file = command[0];
  if (file === undefined || file === '' || file.startsWith('-')) return undefined;

  const resource = values.get('resource-name') ?? '_RESOURCE';
  if (values.has('resource-name') && (!PLAIN_RESOURCE.test(resource) || resource === '_RESOURCE')) return undefined;
  const mode = values.get('lock-mode');
  if (mode !== undefined && !MODES.has(mode)) return undefined;
  const timeout = integer(values.get('resource-timeout') ?? '-1');
  if (timeout === undefined || timeout < -1) return undefined;
  const idle = values.get('resource-idle-lifespan');
  const idleLifespanMs = idle === undefined ? undefined : integer(idle);
  if (idle !== undefined && (idleLifespanMs === undefined || idleLifespanMs < 0)) return undefined;
  const lifespan = values.get('daemon-lifespan');
  if (lifespan !== undefined && integer(lifespan) === undefined) return undefined;
  const onLost = values.get('on-lost') ?? 'kill';
  if (onLost !== 'kill' && onLost !== 'warn') return undefined;
  const socketName = values.get('socket-name');
  if (socketName === '') return undefined;
  // $CORRAL_CONFIG makes the lock cluster-wide, unless -s names a private daemon.
  if (socketName === undefined && env.CORRAL_CONFIG !== undefined && env.CORRAL_CONFIG !== '') return undefined;
  if (!executable(file, env)) return undefined;
  const socket = socketName !== undefined ? path.resolve(socketName) : defaultLockSocket(env);
  // Another user's daemon (a shared -s socket) cannot attach CMD's group: the full path's gate guards it.
  if (!ownSocket(socket)) return undefined;
  return { resource, mode, timeoutMs: timeout, idleLifespanMs, socket, onLost, command };
}

/** Whether `socket` is there and is this user's or root's (the daemon that made it runs as that user). */
function ownSocket(socket: string): boolean {
  try {
    const owner = statSync(socket).uid;
    return owner === process.getuid?.() || owner === 0;
  } catch {
    return false; // not there: the full path starts a daemon, or says why it cannot
  }
}

function integer(text: string): number | undefined {
  return /^-?[0-9]{1,12}$/.test(text) ? Number(text) : undefined;
}

/**
 * Whether execvp(3) would find `file` an executable regular file (in $PATH when it has no slash)
 * that it can run: a script's `#!` interpreter must be an executable file too.
 */
function executable(file: string, env: NodeJS.ProcessEnv): boolean {
  if (!file.includes('/') && env.PATH === undefined) return false;
  const candidates = file.includes('/') ? [file] : (env.PATH as string).split(':').map((dir) => path.join(dir === '' ? '.' : dir, file));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (!statSync(candidate).isFile()) continue;
      const interpreter = interpreterOf(candidate);
      return interpreter === undefined || (interpreter.startsWith('/') && executable(interpreter, {}));
    } catch {
      // not there, or not executable: the next one
    }
  }
  return false;
}

/** The interpreter a `#!` line names (undefined: not a script). */
function interpreterOf(file: string): string | undefined {
  const head = Buffer.alloc(256);
  const fd = openSync(file, 'r');
  let n: number;
  try {
    n = readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  if (n < 2 || head[0] !== 0x23 || head[1] !== 0x21) return undefined;
  const line = head.toString('latin1', 2, n).split('\n')[0] ?? '';
  return line.trim().split(/[ \t]/)[0] ?? '';
}

/**
 * bin/corral, for `corral lock ARGS`: takes the request (true) and exits with CMD's status when
 * done, or returns false at once; `fallback` runs the full path later if the request turns out
 * not to be the fast path's after all (before CMD ran, with nothing left behind).
 */
export function fastLock(args: readonly string[], fallback: () => void): boolean {
  const request = fastRequest(args, process.env);
  if (request === undefined) return false;
  new FastLock(request, fallback).start();
  return true;
}

type Event = {
  ref?: number;
  event?: string;
  seq?: number;
  fencingToken?: string;
  validForMs?: number;
  confirmEveryMs?: number;
  stopWithinMs?: number;
  attached?: boolean;
  leaseOutlivesAgent?: boolean;
  value?: string | null;
  reason?: string;
  op?: string;
  error?: { code?: string; message?: string };
};

interface Pending {
  resolve(event: Event): void;
  reject(err: Error & { code?: string }): void;
  timer: NodeJS.Timeout;
}

const REF = 1;

class FastLock {
  private readonly where: string;
  private socket: Socket | undefined;
  private gate: ChildProcess | undefined;
  private secret = '';
  /** The channel answered its first line. */
  private ready = false;
  private sentAt = 0;
  private granted = false;
  /** CMD was told to run (fd 3 written): no fallback any more. */
  private running = false;
  /** Handed to the full path (or exiting): nothing more happens here. */
  private over = false;
  private releasing = false;
  private lostMessage: string | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private readyTimer: NodeJS.Timeout | undefined;
  private validity: LockValidity | undefined;
  private buffer = '';
  private nextSeq = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<NodeJS.Signals, () => void>();

  constructor(
    private readonly r: FastRequest,
    private readonly fallback: () => void,
  ) {
    this.where = `unix:${r.socket}`;
  }

  start(): void {
    const socket = connect(this.r.socket);
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.receive(chunk));
    socket.on('error', () => this.channelEnded(`lost the connection to ${this.where} on channel /v1/locks/channel; retry`));
    socket.on('close', () => this.channelEnded(`${this.where} closed the lock stream`));
    try {
      this.secret = randomHex(16);
      const gate = spawn('/bin/sh', ['-c', TRAMPOLINE, 'corral-lock', ...this.r.command], {
        stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
        detached: true,
        env: { ...process.env, CORRAL_LOCK_GATE: this.secret },
      });
      this.gate = gate;
      gate.once('error', () => this.handOver());
      gate.once('exit', (code, signal) => this.gateExited(code, signal));
      (gate.stdio[3] as Socket | null)?.on('error', () => undefined);
    } catch {
      return this.handOver();
    }
    if (this.gate.pid === undefined || this.gate.stdio[3] === null) return; // its 'error' hands over
    this.hookSignals();
    const body: Record<string, unknown> = {
      op: 'acquire',
      ref: REF,
      resource: this.r.resource,
      timeoutMs: this.r.timeoutMs,
      attach: { pgid: this.gate.pid, secret: this.secret },
      guard: true,
      pid: process.pid,
      command: this.r.command.join(' ').slice(0, 1024),
    };
    if (this.r.mode !== undefined) body.mode = this.r.mode;
    if (this.r.idleLifespanMs !== undefined) body.idleLifespanMs = this.r.idleLifespanMs;
    this.sentAt = performance.now();
    socket.write(`CORRAL-CHANNEL/1 /v1/locks/channel\n${JSON.stringify(body)}\n`);
    this.readyTimer = setTimeout(() => this.handOver(), READY_WITHIN_MS);
    if (this.r.timeoutMs > 0 && this.r.timeoutMs + TIMEOUT_SLACK_MS <= MAX_TIMER_MS) {
      this.timeoutTimer = setTimeout(() => this.fail('LOCK_TIMEOUT', ''), this.r.timeoutMs + TIMEOUT_SLACK_MS);
    }
  }

  // --- the channel --------------------------------------------------------------------------

  private receive(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0 && !this.over; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      if (!this.ready) {
        this.ready = line === 'CORRAL-CHANNEL/1 OK';
        clearTimeout(this.readyTimer);
        if (!this.ready) this.handOver(); // not a corral agent, or too old: the full path says so
        continue;
      }
      let event: Event;
      try {
        event = JSON.parse(line) as Event;
      } catch {
        continue;
      }
      this.hear(event);
    }
  }

  private hear(e: Event): void {
    if (e.seq !== undefined && (e.event === 'confirmed' || e.event === 'released' || (e.event === 'failed' && e.op !== 'acquire'))) {
      const pending = this.pending.get(e.seq);
      if (pending === undefined) return;
      this.pending.delete(e.seq);
      clearTimeout(pending.timer);
      if (e.event === 'failed') pending.reject(Object.assign(new Error(e.error?.message ?? 'failed'), { code: e.error?.code }));
      else pending.resolve(e);
      return;
    }
    if (e.event === 'granted') {
      if (!this.granted) this.onGranted(e);
    } else if (e.event === 'failed') {
      if (!this.granted) return this.onRefused(e.error?.code ?? 'INTERNAL', e.error?.message ?? 'the lock request failed');
      if (!this.releasing) this.lose(`lost the lock on ${this.r.resource}: ${e.error?.message ?? 'the request failed'}`);
    } else if (e.event === 'lost') {
      // Even while releasing: the full path's HeldLock reports it then too (exit 98).
      if (this.granted) this.lose(`lost the lock on ${this.r.resource}: ${e.reason ?? 'lost'}`, true);
      else this.handOver();
    }
    // queued: nothing to do
  }

  private send(message: Record<string, unknown>): void {
    if (this.socket !== undefined && !this.socket.destroyed) this.socket.write(`${JSON.stringify(message)}\n`);
  }

  private command(message: Record<string, unknown>, timeoutMs: number): Promise<Event> {
    const seq = this.nextSeq++;
    return new Promise((resolve, reject) => {
      if (this.socket === undefined || this.socket.destroyed) return reject(new Error(`the channel to ${this.where} is closed`));
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(Object.assign(new Error(`${this.where} did not answer ${String(message.op)} for the lock on ${this.r.resource} within ${timeoutMs} ms`), { code: 'TIMEOUT' }));
      }, timeoutMs);
      this.pending.set(seq, { resolve, reject, timer });
      this.send({ ...message, ref: REF, seq });
    });
  }

  private channelEnded(why: string): void {
    if (this.over) return;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(why));
    }
    this.pending.clear();
    // Before CMD runs, whatever broke (no daemon: ENOENT, ECONNREFUSED) is the full path's to handle.
    if (!this.running) return this.handOver();
    this.lose(`lost the lock on ${this.r.resource}: ${why}`);
  }

  // --- before CMD runs ----------------------------------------------------------------------

  private onGranted(e: Event): void {
    this.granted = true;
    clearTimeout(this.timeoutTimer);
    // Only where the daemon keeps the lock for CMD's group and nothing must watch it, and no value.
    if (e.attached !== true || e.leaseOutlivesAgent === true || (e.value !== undefined && e.value !== null) || typeof e.fencingToken !== 'string') {
      // Released, not cancelled: a cancelled guarded or attached lock stays held a while, and the
      // full path's request would wait behind it. Handed over once released (or after GIVE_BACK_MS).
      const handOver = (): void => this.handOver();
      this.command({ op: 'release', rollback: true }, GIVE_BACK_MS).then(handOver, handOver);
      return;
    }
    const fence = e.fencingToken;
    this.validity = new LockValidity(this.sentAt + (e.validForMs ?? 0), e.confirmEveryMs ?? 1000, e.stopWithinMs ?? 0, {
      clock: { now: () => performance.now(), setTimer: (ms, fn) => timer(ms, fn) },
      confirm: async (timeoutMs) => (await this.command({ op: 'confirm' }, timeoutMs)).validForMs ?? 0,
      gone: (err) => ['SESSION_LOST', 'NOT_FOUND'].includes((err as { code?: string }).code ?? ''),
      lost: (err) => this.lose(`lost the lock on ${this.r.resource}: ${err === undefined ? this.validity?.unconfirmedMessage(this.where) : (err as Error).message}`),
    });
    this.validity.settle().then(
      () => {
        if (this.over) return;
        if (this.lostMessage !== undefined) return this.exitLost();
        this.run(fence);
      },
      () => undefined,
    );
  }

  private run(fence: string): void {
    const gate = this.gate as ChildProcess;
    const fd3 = gate.stdio[3] as Socket;
    this.running = true;
    fd3.end(`${fence}\n`);
  }

  /** The daemon refused the request: say why as the full path would, with flom's exit codes. */
  private onRefused(code: string, message: string): void {
    if (code === 'UNAVAILABLE' || code === 'SHUTTING_DOWN') return this.handOver(); // the full path retries or starts a daemon
    this.fail(code, message);
  }

  private fail(code: string, message: string): void {
    if (this.over) return;
    const text = code === 'LOCK_TIMEOUT' ? timedOutMessage(this.r.resource, this.r.timeoutMs) : message;
    process.stderr.write(`corral lock: ${text} [${code}]\n`);
    this.abandon();
    process.exit(exitCodeOf({ code }));
  }

  /** CMD never runs: the trampoline goes, and the request with the connection. */
  private abandon(): void {
    this.over = true;
    clearTimeout(this.timeoutTimer);
    clearTimeout(this.readyTimer);
    this.unhookSignals();
    if (this.gate?.pid !== undefined && !this.running) {
      try {
        process.kill(this.gate.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    this.gate?.removeAllListeners('exit');
    this.socket?.destroy();
  }

  /** Not the fast path's after all (and CMD never ran): the full path takes over from scratch. */
  private handOver(): void {
    if (this.over || this.running) return;
    this.abandon();
    this.fallback();
  }

  // --- signals ------------------------------------------------------------------------------

  private hookSignals(): void {
    for (const sig of FORWARDED) {
      // Before CMD runs a signal abandons the request (and corral lock exits as if killed); after,
      // it goes to CMD's group, which keeps the lock until it exits.
      const handler = (): void => {
        if (!this.running) {
          this.abandon();
          process.exit(128 + (constants.signals[sig] ?? 0));
        }
        this.signalGroup(sig);
      };
      this.handlers.set(sig, handler);
      process.on(sig, handler);
    }
    // Ctrl-Z: CMD's session never sees the terminal's stop signals; stop it, then corral lock.
    const onStop = (): void => {
      if (this.running) this.signalGroup('SIGSTOP');
      process.kill(process.pid, 'SIGSTOP');
    };
    const onContinue = (): void => {
      if (this.running) this.signalGroup('SIGCONT');
    };
    this.handlers.set('SIGTSTP', onStop);
    process.on('SIGTSTP', onStop);
    this.handlers.set('SIGCONT', onContinue);
    process.on('SIGCONT', onContinue);
  }

  private unhookSignals(): void {
    for (const [sig, handler] of this.handlers) process.off(sig, handler);
    this.handlers.clear();
  }

  private signalGroup(sig: NodeJS.Signals): void {
    const pgid = this.gate?.pid;
    if (pgid === undefined) return;
    try {
      process.kill(-pgid, sig);
    } catch {
      // gone
    }
  }

  // --- while CMD runs -----------------------------------------------------------------------

  private lose(message: string, evenWhileReleasing = false): void {
    if (this.lostMessage !== undefined || this.over || (this.releasing && !evenWhileReleasing)) return;
    this.lostMessage = message;
    this.validity?.stop();
    if (!this.running) return; // settle() is still confirming: it exits 98 once it returns
    if (this.r.onLost === 'warn') {
      process.stderr.write(`corral lock: ${message}; CMD keeps running unprotected (--on-lost warn) [LOCK_LOST]\n`);
      return;
    }
    const killIn = Math.max(0, (this.validity?.validUntil ?? 0) - performance.now() - KILL_MARGIN_MS);
    process.stderr.write(`corral lock: ${message}; stopping CMD: SIGTERM now, SIGKILL in ${Math.round(killIn)} ms [LOCK_LOST]\n`);
    this.signalGroup('SIGTERM');
    this.killTimer = setTimeout(() => this.signalGroup('SIGKILL'), killIn);
  }

  /** Lost before CMD ran (settle found too little validity left): nothing ran; exit 98. */
  private exitLost(): void {
    process.stderr.write(`corral lock: ${this.lostMessage ?? 'lost the lock'} [LOCK_LOST]\n`);
    this.abandon();
    process.exit(98);
  }

  private gateExited(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.over) return;
    // Gone before it was told to run CMD (killed): nothing ran; the full path starts afresh.
    if (!this.running) return this.handOver();
    void this.finish(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0));
  }

  private async finish(status: number): Promise<void> {
    const pgid = (this.gate as ChildProcess).pid as number;
    if (this.lostMessage !== undefined && this.r.onLost === 'kill') {
      // CMD has exited; what else runs in its group must be gone too before the lock can expire.
      const { processGroupAlive } = await import('../util/process-group.js');
      const until = this.validity?.validUntil ?? 0;
      while (processGroupAlive(pgid) && performance.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
      this.signalGroup('SIGKILL');
    }
    clearTimeout(this.killTimer);
    this.releasing = true;
    this.validity?.stop();
    if (this.lostMessage !== undefined) {
      // Lost: only tell the daemon to drop the request.
      this.send({ op: 'cancel', ref: REF });
    } else {
      try {
        await this.command({ op: 'release', rollback: status !== 0 }, REQUEST_TIMEOUT_MS);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== 'NOT_FOUND' && code !== 'SESSION_LOST') {
          process.stderr.write(
            `corral lock: warning: the lock on ${this.r.resource} could not be released cleanly (${(err as Error).message}); it is released when the agent notices this client is gone\n`,
          );
        }
      }
    }
    this.over = true;
    this.unhookSignals();
    this.socket?.destroy();
    process.exit(this.lostMessage !== undefined ? 98 : status);
  }
}

function timer(ms: number, fn: () => void): { cancel(): void } {
  const t = setTimeout(fn, Math.max(0, ms));
  return { cancel: () => clearTimeout(t) };
}
