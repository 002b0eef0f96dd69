// The gate: `corral lock` runs CMD through this small process, started (node, no imports but
// child_process and net) before the lock is even asked for, by bin/corral itself when it can
// (lock-gate-spawn.cts). It is CMD's parent and the leader of CMD's process group, and it holds
// CMD back until it is told to run it:
//
//   corral lock ──spawn (own session; env: CORRAL_LOCK_GATE=<secret> only)──► gate   (pgid = its pid)
//   corral lock ──acquire {attach: {pgid, secret}, guard}──► agent: checks the secret in the gate's
//               environment, records the group with the lock, and grants
//   corral lock ──fd 3: {"run": {argv, env, ifParentDies, stopWithinMs}}──► gate ──spawn──► CMD
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
// - keep: nothing; the agent keeps the lock while the group runs (attached);
// - stop-group: SIGTERM to the group now, SIGKILL after half of stopWithinMs (the lock is not
//   attached: a remote agent, or another user's daemon; it outlives the client by stopWithinMs);
// - stop-command: the same to CMD alone (--foreground: CMD shares corral lock's group).
//
// The gate ignores the signals corral lock forwards to the group (they are for CMD), reports CMD's
// status, and exits with it (128+N when signal N killed CMD).

import { spawn, type ChildProcess } from 'node:child_process';
import { Socket } from 'node:net';

interface RunMessage {
  argv: string[];
  env: Record<string, string>;
  ifParentDies: 'keep' | 'stop-group' | 'stop-command';
  stopWithinMs: number;
}

const IGNORED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
for (const sig of IGNORED) process.on(sig, () => undefined);

const channel = new Socket({ fd: 3, readable: true, writable: true });
channel.setEncoding('utf8');
let buffer = '';
let command: ChildProcess | undefined;
let run: RunMessage | undefined;
let parentGone = false;

function send(message: unknown): void {
  if (parentGone || channel.destroyed) return;
  channel.write(`${JSON.stringify(message)}\n`);
}

channel.on('data', (chunk: string) => {
  buffer += chunk;
  for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
    const line = buffer.slice(0, nl);
    buffer = buffer.slice(nl + 1);
    let message: { run?: RunMessage };
    try {
      message = JSON.parse(line) as { run?: RunMessage };
    } catch {
      continue;
    }
    if (message.run !== undefined && run === undefined) start(message.run);
  }
});
channel.on('error', () => onParentGone());
channel.on('close', () => onParentGone());
channel.on('end', () => onParentGone());

function start(message: RunMessage): void {
  run = message;
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

function finish(code: number): void {
  process.exitCode = code;
  if (parentGone && run?.ifParentDies === 'stop-group') {
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
  if (run.ifParentDies === 'keep') return;
  stop('SIGTERM');
  const timer = setTimeout(() => stop('SIGKILL'), Math.max(0, Math.floor(run.stopWithinMs / 2)));
  timer.unref();
}
