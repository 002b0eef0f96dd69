// The gate: `corral lock` runs CMD through this small process, started (node, no imports but
// child_process and net) before the lock is even asked for, by bin/corral itself when it can
// (lock-gate-spawn.cts). It is CMD's parent and the leader of CMD's process group, and it holds
// CMD back until it is told to run it:
//
//   corral lock ──spawn (own session; env: CORRAL_LOCK_GATE=<secret> only)──► gate   (pgid = its pid)
//   corral lock ──acquire {attach: {pgid, secret}, guard}──► agent: checks the secret in the gate's
//               environment, records the group with the lock, and grants
//   corral lock ──fd 3: {"run": {argv, env, ifParentDies, stopWithinMs, watch?}}──► gate ──spawn──► CMD
//   corral lock ──fd 3: {"valid": ms} (watch: at each confirmation of the lock)──► gate
//   gate ──fd 3: {"spawned": pid} | {"error": {code, message}}, then {"exit": code, "signal": sig}
//
// So CMD does no work before the lock is granted *and* its group attached: whenever `corral lock`
// dies, either CMD never started (the gate sees its channel close without "run", and exits), or the
// agent already keeps the lock for the group. Node has no exec(), hence a parent rather than a
// wrapper that becomes CMD; it costs a node start-up, which overlaps the lock request. It is
// CommonJS (.cts) because a CommonJS entry starts about 6 ms sooner than an ES module (no ESM
// loader), and its start is on the path of every `corral lock`.
//
// If `corral lock` dies while CMD runs, `ifParentDies` says what the gate does:
// - keep: the agent keeps the lock while the group runs (attached). With `watch` (the lock's lease
//   lives on a store that counts on while the agent is down: etcd, a coordinator elsewhere), the
//   gate then does what corral lock did: it asks the agent on its socket every confirmEveryMs how
//   long its group's lock is certainly held (confirm-group, proved by the gate's secret), and when
//   less than stopWithinMs of the last confirmed validity is left, or the agent says it keeps no
//   lock for the group, it says so on stderr and stops the group: SIGTERM, then SIGKILL to the whole
//   group, the gate included, once CMD has exited or just before the validity ends (its status,
//   98 if it could tell, has no reader: corral lock is gone). An agent that crashed and restarted
//   in time took the lock back and confirms it: nothing happens.
// - stop-group: SIGTERM to the group now, SIGKILL after half of stopWithinMs (the lock is not
//   attached: a remote agent, or another user's daemon; it outlives the client by stopWithinMs);
// - stop-command: the same to CMD alone (--foreground: CMD shares corral lock's group).
//
// The gate ignores the signals corral lock forwards to the group (they are for CMD), reports CMD's
// status, and exits with it (128+N when signal N killed CMD).

import { spawn, type ChildProcess } from 'node:child_process';
import { Socket } from 'node:net';

interface Watch {
  /** The agent's UNIX socket. */
  socket: string;
  /** The lock's validity, from when corral lock sent "run". */
  validForMs: number;
  confirmEveryMs: number;
  stopWithinMs: number;
}

interface RunMessage {
  argv: string[];
  env: Record<string, string>;
  ifParentDies: 'keep' | 'stop-group' | 'stop-command';
  stopWithinMs: number;
  watch?: Watch;
}

/** Taken off every validity the gate is told or confirmed: the pipe, timers firing late. */
const SLACK_MS = 50;
/** Between attempts to reach the agent again. */
const RECONNECT_MS = 100;

const IGNORED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
for (const sig of IGNORED) process.on(sig, () => undefined);

const channel = new Socket({ fd: 3, readable: true, writable: true });
channel.setEncoding('utf8');
let buffer = '';
let command: ChildProcess | undefined;
let run: RunMessage | undefined;
let parentGone = false;
/** performance.now() until which the lock is certainly held (watch). */
let validUntil = 0;
/** The watch found the lock unconfirmed: CMD's group is being stopped. */
let lost = false;

function send(message: unknown): void {
  if (parentGone || channel.destroyed) return;
  channel.write(`${JSON.stringify(message)}\n`);
}

channel.on('data', (chunk: string) => {
  buffer += chunk;
  for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
    const line = buffer.slice(0, nl);
    buffer = buffer.slice(nl + 1);
    let message: { run?: RunMessage; valid?: number };
    try {
      message = JSON.parse(line) as { run?: RunMessage; valid?: number };
    } catch {
      continue;
    }
    if (message.run !== undefined && run === undefined) start(message.run);
    else if (typeof message.valid === 'number') extend(performance.now() + message.valid);
  }
});
channel.on('error', () => onParentGone());
channel.on('close', () => onParentGone());
channel.on('end', () => onParentGone());

function start(message: RunMessage): void {
  run = message;
  if (message.watch !== undefined) extend(performance.now() + message.watch.validForMs);
  const [file, ...args] = message.argv;
  if (file === undefined) {
    send({ error: { code: 'ENOENT', message: 'no command' } });
    finish(97);
    return;
  }
  let child: ChildProcess;
  try {
    child = spawn(file, args, { stdio: 'inherit', env: message.env });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    send({ error: { code: e.code ?? 'ERROR', message: e.message } });
    finish(97);
    return;
  }
  command = child;
  child.once('error', (err: NodeJS.ErrnoException) => {
    send({ error: { code: err.code ?? 'ERROR', message: err.message } });
    finish(97);
  });
  child.once('spawn', () => send({ spawned: child.pid }));
  child.once('exit', (code, signal) => {
    send({ exit: code, signal });
    finish(code ?? 128 + (signal ? signalNumber(signal) : 0));
  });
  if (parentGone) stopOnParentGone();
}

function signalNumber(signal: NodeJS.Signals): number {
  return (
    {
      SIGHUP: 1,
      SIGINT: 2,
      SIGQUIT: 3,
      SIGILL: 4,
      SIGTRAP: 5,
      SIGABRT: 6,
      SIGBUS: 7,
      SIGFPE: 8,
      SIGKILL: 9,
      SIGUSR1: 10,
      SIGSEGV: 11,
      SIGUSR2: 12,
      SIGPIPE: 13,
      SIGALRM: 14,
      SIGTERM: 15,
    } as Partial<Record<NodeJS.Signals, number>>
  )[signal] ?? 0;
}

function finish(status: number): void {
  const code = lost ? 98 : status;
  process.exitCode = code;
  if (parentGone && (run?.ifParentDies === 'stop-group' || lost)) {
    // Stopping because corral lock is gone: whatever CMD left in its group goes too (the gate with it).
    try {
      process.kill(-process.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  if (parentGone || channel.destroyed) process.exit(code);
  channel.end(() => process.exit(code));
}

function onParentGone(): void {
  if (parentGone) return;
  parentGone = true;
  // Never told to run CMD: nothing ran under the lock; the agent drops it.
  if (run === undefined) process.exit(0);
  stopOnParentGone();
}

function stopOnParentGone(): void {
  if (run === undefined || command === undefined || command.exitCode !== null || command.signalCode !== null) return;
  const stop = (sig: NodeJS.Signals): void => {
    try {
      if (run?.ifParentDies === 'stop-group') process.kill(-process.pid, sig);
      else command?.kill(sig);
    } catch {
      // gone
    }
  };
  if (run.ifParentDies === 'keep') {
    if (run.watch !== undefined) watchAgent(run.watch);
    return;
  }
  stop('SIGTERM');
  const timer = setTimeout(() => stop('SIGKILL'), Math.max(0, Math.floor(run.stopWithinMs / 2)));
  timer.unref();
}

// --- the watch: corral lock is gone, CMD's group runs attached ---------------------------------

function extend(until: number): void {
  validUntil = Math.max(validUntil, until - SLACK_MS);
}

function watchAgent(w: Watch): void {
  const secret = process.env.CORRAL_LOCK_GATE ?? '';
  let conn: Socket | undefined;
  let ready = false;
  let seq = 0;
  /** When each unanswered confirm-group was sent: the validity answered counts from then. */
  const sent = new Map<number, number>();
  const ask = (): void => {
    if (lost || !ready || conn === undefined) return;
    sent.set(++seq, performance.now());
    conn.write(`${JSON.stringify({ op: 'confirm-group', ref: 0, seq, pgid: process.pid, secret })}\n`);
  };
  const connect = (): void => {
    if (lost) return;
    const c = new Socket();
    conn = c;
    ready = false;
    sent.clear();
    let pending = '';
    c.setEncoding('utf8');
    c.on('data', (chunk: string) => {
      pending += chunk;
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (!ready) {
          ready = line === 'CORRAL-CHANNEL/1 OK';
          ask();
          continue;
        }
        let m: { event?: string; seq?: number; validForMs?: number; error?: { code?: string; message?: string } };
        try {
          m = JSON.parse(line) as typeof m;
        } catch {
          continue;
        }
        const at = typeof m.seq === 'number' ? sent.get(m.seq) : undefined;
        if (m.seq !== undefined) sent.delete(m.seq);
        if (m.event === 'confirmed' && at !== undefined && typeof m.validForMs === 'number') extend(at + m.validForMs);
        // The agent keeps no lock for the group (lost, or not taken back after a restart): stop now.
        else if (m.event === 'failed' && m.error?.code === 'NOT_FOUND') lose(`the lock agent says: ${m.error.message ?? 'no lock is kept for it'}`);
        // Anything else (not known yet, an error): unanswered; the watchdog decides.
      }
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      if (conn !== c) return;
      conn = undefined;
      ready = false;
      if (!lost) setTimeout(connect, RECONNECT_MS).unref();
    });
    c.connect(w.socket, () => c.write('CORRAL-CHANNEL/1 /v1/locks/channel\n'));
  };
  let first = true;
  const watchdog = (): void => {
    if (lost) return;
    const due = validUntil - w.stopWithinMs;
    const now = performance.now();
    const atStart = first;
    first = false;
    if (now < due) {
      setTimeout(watchdog, due - now).unref();
      return;
    }
    if (atStart && now >= validUntil) {
      // What corral lock last forwarded has run out already (it was stopped or starved before it
      // died): stopping now could not beat the lease either; ask the agent first, for up to 1 s.
      setTimeout(watchdog, 1000).unref();
      return;
    }
    lose(`the lock agent on ${w.socket} has not confirmed it in time`);
  };
  const lose = (why: string): void => {
    if (lost) return;
    lost = true;
    conn?.destroy();
    const killIn = Math.max(0, Math.floor(validUntil - performance.now()));
    process.stderr.write(`corral lock: lost the lock of CMD (pid ${command?.pid ?? '?'}), whose corral lock is gone: ${why}; stopping its process group: SIGTERM now, SIGKILL in ${killIn} ms [LOCK_LOST]\n`);
    try {
      process.kill(-process.pid, 'SIGTERM');
    } catch {
      // gone
    }
    // The gate goes with the group: nothing of it may outlive the lock.
    setTimeout(() => process.kill(-process.pid, 'SIGKILL'), killIn);
  };
  connect();
  setInterval(ask, w.confirmEveryMs).unref();
  watchdog();
}
