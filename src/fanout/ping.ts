// `corral ping` as a library: each node checked end to end through the same Fleet as `corral run`
// (connect, authenticate, run `true`), reported ON with its latency or OFF with a short reason.

import { setMaxListeners } from 'node:events';
import type { TargetSpec } from '../api/fanout-wire.js';
import { CorralError } from '../api/errors.js';
import type { Fleet } from './fleet.js';

export type PingReason = 'unreachable' | 'auth refused' | 'timed out' | 'cancelled' | `no-op failed with code ${number}` | `no-op killed by ${string}`;

export interface PingNode {
  node: string;
  state: 'ON' | 'OFF';
  /** Milliseconds from the request to this node's answer (or failure). */
  ms: number;
  /** OFF only: one short phrase. */
  reason: PingReason | null;
  /** OFF only: what the transport or ssh said, in full. */
  error: string | null;
}

export interface PingOptions {
  targets: TargetSpec;
  /** Per node: connecting, authenticating and running the no-op must finish within this. */
  timeoutMs: number;
  fanout?: number;
  /** Ctrl-C. */
  signal: AbortSignal;
}

export interface PingResult {
  nodes: PingNode[];
  interrupted: boolean;
}

/** n2 < n10; then plain text order. */
export function compareNodeNames(a: string, b: string): number {
  const split = (s: string): string[] => s.match(/\d+|\D+/g) ?? [];
  const pa = split(a);
  const pb = split(b);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i] as string;
    const y = pb[i] as string;
    if (x === y) continue;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
      return x.length - y.length; // 01 after 1
    }
    return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}

/** The short phrase for a failure to reach a node: what kind of failure, not its details. */
export function offReason(code: string, error: string): PingReason {
  if (code === 'TIMEOUT' || /timed out|within \d+ (ms|s)\b/i.test(error)) return 'timed out';
  if (code === 'TLS' || code === 'FORBIDDEN' || /permission denied|authenticat|host key verification failed|host identification has changed|certificate/i.test(error)) return 'auth refused';
  return 'unreachable';
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** Runs `true` on every target; one result per node, sorted by name (n2 before n10). */
export async function pingNodes(fleet: Fleet, opts: PingOptions): Promise<PingResult> {
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const onInterrupt = (): void => stop.abort(new Error('interrupted'));
  opts.signal.addEventListener('abort', onInterrupt, { once: true });
  // The nodes enforce the timeout (connect, then the command); this deadline only covers a relay
  // or an ssh that does not report in time.
  let deadlinePassed = false;
  const deadline = setTimeout(() => {
    deadlinePassed = true;
    stop.abort(new Error('deadline'));
  }, opts.timeoutMs + 1500);
  const results = new Map<string, PingNode>();
  let planned: string[] = [];
  const t0 = performance.now();
  const off = (node: string, reason: PingReason, error: string): void => {
    if (!results.has(node)) results.set(node, { node, state: 'OFF', ms: round(performance.now() - t0), reason, error });
  };
  try {
    const events = fleet.exec(
      {
        targets: opts.targets,
        exec: { argv: ['true'], timeoutMs: opts.timeoutMs, killGraceMs: 0 },
        connectTimeoutMs: opts.timeoutMs,
        ...(opts.fanout !== undefined ? { fanout: opts.fanout } : {}),
      },
      undefined,
      stop.signal,
    );
    for await (const ev of events) {
      if (ev.t === 'plan') {
        planned = ev.nodes;
        continue;
      }
      const ms = round(performance.now() - t0);
      switch (ev.t) {
        case 'exit':
          if (ev.timedOut) off(ev.node, 'timed out', `true did not finish within ${opts.timeoutMs} ms`);
          else if (ev.code === 0) results.set(ev.node, { node: ev.node, state: 'ON', ms, reason: null, error: null });
          else if (ev.code !== null) off(ev.node, `no-op failed with code ${ev.code}`, `true exited with status ${ev.code}`);
          else off(ev.node, `no-op killed by ${ev.signal ?? 'a signal'}`, `true was killed by ${ev.signal ?? 'a signal'}`);
          break;
        case 'unreachable':
          off(ev.node, offReason(ev.code, ev.error), ev.error);
          break;
        case 'cancelled':
          off(ev.node, deadlinePassed ? 'timed out' : 'cancelled', deadlinePassed ? `no answer within ${opts.timeoutMs} ms` : 'interrupted');
          break;
        case 'start':
        case 'out':
        case 'err':
          break;
      }
    }
  } catch (err) {
    // A usage error (unknown node) or a lost relay is the verb's failure; our own abort is not.
    if (!stop.signal.aborted) throw err;
    if (planned.length === 0 && !opts.signal.aborted) throw new CorralError('UNAVAILABLE', `no answer from ${fleet.via} within ${opts.timeoutMs} ms: is its agent running and not stopped?`);
  } finally {
    clearTimeout(deadline);
    opts.signal.removeEventListener('abort', onInterrupt);
  }
  for (const node of planned) {
    if (opts.signal.aborted) off(node, 'cancelled', 'interrupted before it answered');
    else off(node, 'timed out', `no answer within ${opts.timeoutMs} ms`);
  }
  return { nodes: [...results.values()].sort((a, b) => compareNodeNames(a.node, b.node)), interrupted: opts.signal.aborted };
}

/** 0 every node ON, 4 some node OFF (whatever the reason: it cannot be used), 130 interrupted. */
export function pingExit(result: PingResult): number {
  if (result.interrupted) return 130;
  return result.nodes.some((n) => n.state === 'OFF') ? 4 : 0;
}
