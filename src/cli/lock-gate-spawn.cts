// Starting CMD's gate (lock-gate.cts) for `corral lock`. The gate's node start-up is on the path of
// every `corral lock -- CMD` (CMD starts only once the gate is up and the lock granted), so
// bin/corral calls prestartGate() first thing, before it loads the rest of the CLI (an ES module
// graph): the gate then boots while corral lock loads, reads its options and asks for the lock.
// verbs/lock.ts takes that gate (takeGate), or starts one itself when there is none of the kind it
// needs (--foreground runs it in corral lock's session).
//
// CommonJS and import-light (child_process, fs, path), since it runs before anything else.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';

export interface GateProcess {
  child: ChildProcess;
  /** undefined when the spawn failed (spawnError says why). */
  pid: number | undefined;
  /** The secret in the gate's environment (CORRAL_LOCK_GATE) that proves its group was started for this request. */
  secret: string;
  /** In a session and process group of its own (the gate leads CMD's group), or in corral lock's. */
  detached: boolean;
  /** fd 3 of the gate: NDJSON both ways (lock-gate.cts). */
  channel: Socket;
  /** Settles when the spawn fails (never otherwise). */
  spawnError: Promise<Error>;
  /** Resolves when the gate process exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when its channel has closed. */
  channelClosed: Promise<void>;
}

let prestarted: GateProcess | undefined;

/** A fresh random secret (hex), read from /dev/urandom: node:crypto costs more to load than the rest of this file. */
export function randomHex(bytes: number): string {
  const buffer = Buffer.alloc(bytes);
  const fd = openSync('/dev/urandom', 'r');
  try {
    let got = 0;
    while (got < bytes) got += readSync(fd, buffer, got, bytes - got, null);
  } finally {
    closeSync(fd);
  }
  return buffer.toString('hex');
}

/** Starts a gate: in a session of its own (detached: CMD's process group), or in corral lock's. */
export function spawnGate(detached: boolean): GateProcess {
  const secret = randomHex(16);
  // Its own environment is the secret alone (no NODE_OPTIONS, no CA bundle to load): CMD's comes with "run".
  const child = spawn(process.execPath, [join(__dirname, 'lock-gate.cjs')], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    detached,
    env: { CORRAL_LOCK_GATE: secret },
  });
  const channel = child.stdio[3] as Socket;
  // Listened to from the start: a gate may fail or die before corral lock looks at it.
  channel.on('error', () => undefined);
  return {
    child,
    pid: child.pid,
    secret,
    detached,
    channel,
    spawnError: new Promise((resolve) => child.once('error', resolve)),
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
    channelClosed: new Promise((resolve) => channel.once('close', () => resolve())),
  };
}

/**
 * bin/corral, for `corral lock ARGS`: when ARGS hold a command after `--`, starts the gate it will
 * most likely need now (in its own session, or not with --foreground; takeGate() lets a wrong guess
 * go). Until verbs/lock.ts takes it, it keeps nothing alive: if corral lock exits without taking
 * it (a bad option, --help, -x), the gate sees its channel close and exits without running anything.
 */
export function prestartGate(args: readonly string[]): void {
  const dashes = args.indexOf('--');
  if (prestarted !== undefined || dashes < 0 || dashes === args.length - 1) return;
  const gate = spawnGate(!args.slice(0, dashes).includes('--foreground'));
  gate.child.unref();
  gate.channel.unref();
  prestarted = gate;
}

/** The gate started early, if it is of the kind wanted; one of the other kind is let go (it exits). */
export function takeGate(detached: boolean): GateProcess | undefined {
  const gate = prestarted;
  prestarted = undefined;
  if (gate === undefined) return undefined;
  if (gate.detached !== detached || gate.pid === undefined) {
    gate.channel.destroy();
    return undefined;
  }
  gate.child.ref();
  gate.channel.ref();
  return gate;
}
