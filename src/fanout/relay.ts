// The relay, inside the agent the CLI talks to: resolves the node set, then calls /v1/node/* on
// every target (itself in process, the others over the agent's persistent mutual-TLS connections)
// with a sliding window of `fanout` nodes, and merges the answers into one node-tagged stream.

import { setMaxListeners } from 'node:events';
import { CorralError } from '../api/errors.js';
import {
  FANOUT_PATHS,
  type ExecEvent,
  type FanoutCallArgs,
  type FanoutCallEvent,
  type FanoutEvent,
  type FanoutExecArgs,
  type FanoutPutArgs,
  type FanoutPutEvent,
  type FanoutTargetsResult,
  type NodePutResult,
  type TargetSpec,
} from '../api/fanout-wire.js';
import { expandNodeSet } from '../config/nodeset.js';
import type { RpcClient } from '../transport/client.js';
import { AsyncQueue, chunksOf } from './async-queue.js';
import type { NodeOps } from './node-ops.js';

export interface RelayHost {
  self: string;
  ops: NodeOps;
  /** Every node the cluster knows (configuration and membership), and which are down now. */
  nodes(): Promise<{ all: string[]; down: Set<string> }>;
  /** Named node groups (`@name`). */
  groups: Readonly<Record<string, readonly string[]>>;
  /** A client for another node's agent; undefined when its address is unknown. */
  peer(name: string): RpcClient | undefined;
  connectTimeoutMs: number;
}

const DEFAULT_FANOUT = 64;
const STDIN_LIMIT = 64 * 1024 * 1024;

/** -w / -x / -a against the known nodes; an unknown name is an error naming it. */
export function resolveTargets(spec: TargetSpec, all: readonly string[], groups: Readonly<Record<string, readonly string[]>>): string[] {
  const ctx = { all, groups };
  const known = new Set(all);
  const check = (names: string[], flag: string): string[] => {
    const unknown = names.filter((n) => !known.has(n));
    if (unknown.length > 0) {
      throw new CorralError('USAGE', `${flag}: unknown node${unknown.length > 1 ? 's' : ''} ${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ', …' : ''} (the cluster has ${all.length > 12 ? `${all.slice(0, 12).join(', ')}, …` : all.join(', ')})`);
    }
    return names;
  };
  let nodes = spec.nodes !== undefined && spec.nodes.trim() !== '' && !spec.all ? check(expandNodeSet(spec.nodes, ctx), '-w') : [...all];
  if (spec.exclude !== undefined && spec.exclude.trim() !== '') {
    const out = new Set(check(expandNodeSet(spec.exclude, ctx), '-x'));
    nodes = nodes.filter((n) => !out.has(n));
  }
  if (nodes.length === 0) throw new CorralError('USAGE', 'the node set is empty: check -w and -x');
  return nodes;
}

function checkFanout(n: unknown): number {
  if (n === undefined) return DEFAULT_FANOUT;
  if (!Number.isSafeInteger(n) || (n as number) < 1 || (n as number) > 10_000) throw new CorralError('BAD_REQUEST', 'fanout must be between 1 and 10000');
  return n as number;
}

function targetSpec(t: unknown): TargetSpec {
  if (t === undefined) return {};
  if (typeof t !== 'object' || t === null) throw new CorralError('BAD_REQUEST', 'targets must be {nodes, exclude, all}');
  const { nodes, exclude, all } = t as Record<string, unknown>;
  for (const [k, v] of [['nodes', nodes], ['exclude', exclude]] as const) {
    if (v !== undefined && typeof v !== 'string') throw new CorralError('BAD_REQUEST', `targets.${k} must be a node set string`);
  }
  return { ...(typeof nodes === 'string' ? { nodes } : {}), ...(typeof exclude === 'string' ? { exclude } : {}), all: all === true };
}

/** Runs `work` for each item with at most `limit` at once (a sliding window); stops starting new ones once `signal` aborts and returns the indexes it skipped. */
export async function window<T>(items: readonly T[], limit: number, signal: AbortSignal, work: (item: T, index: number) => Promise<void>): Promise<number[]> {
  const skipped: number[] = [];
  let next = 0;
  const runner = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      if (signal.aborted) {
        skipped.push(i);
        continue;
      }
      await work(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, runner));
  return skipped;
}


async function readAllInput(input: AsyncIterable<Buffer> | undefined): Promise<Buffer | undefined> {
  if (!input) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of input) {
    size += chunk.length;
    if (size > STDIN_LIMIT) throw new CorralError('TOO_LARGE', `standard input over ${STDIN_LIMIT} bytes cannot be sent to every node; put it in a file and push it`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function unreachable(err: unknown, node: string): { error: string; code: string } {
  const e = CorralError.from(err);
  return { error: e.message || `${node} did not answer`, code: e.code };
}

export class Relay {
  constructor(private readonly host: RelayHost) {}

  async targets(spec: unknown): Promise<FanoutTargetsResult> {
    const { all, down } = await this.host.nodes();
    const nodes = resolveTargets(targetSpec(spec), all, this.host.groups);
    return { nodes, down: nodes.filter((n) => down.has(n)) };
  }

  /** The command on every target; stdin (the input) is read whole, then given to each node. */
  exec(args: Partial<FanoutExecArgs>, input: AsyncIterable<Buffer> | undefined, signal: AbortSignal): AsyncIterable<FanoutEvent> {
    const queue = new AsyncQueue<FanoutEvent>(512);
    void this.runExec(args, input, signal, queue).then(
      () => queue.end(),
      (err: unknown) => queue.fail(err),
    );
    return queue;
  }

  private async runExec(args: Partial<FanoutExecArgs>, input: AsyncIterable<Buffer> | undefined, signal: AbortSignal, queue: AsyncQueue<FanoutEvent>): Promise<void> {
    if (!args.exec || typeof args.exec !== 'object') throw new CorralError('BAD_REQUEST', 'exec needs {exec: {argv, ...}}');
    const fanout = checkFanout(args.fanout);
    const { nodes } = await this.targets(args.targets);
    const stdin = await readAllInput(input);
    queue.push({ t: 'plan', nodes });
    const stop = new AbortController();
    setMaxListeners(0, stop.signal, signal);
    const onAbort = (): void => stop.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const finished = new Set<string>();
    const fail = (): void => {
      if (args.failFast) stop.abort();
    };
    try {
      const skipped = await window(nodes, fanout, stop.signal, async (node, rank) => {
        const nodeArgs = { ...args.exec, rank, size: nodes.length };
        let started = false;
        try {
          const events = await this.openExec(node, nodeArgs, stdin, stop.signal, args.connectTimeoutMs);
          for await (const ev of events) {
            if (ev.t === 'start') started = true;
            if (!queue.push({ node, ...ev })) await queue.drained();
            if (ev.t === 'exit') {
              finished.add(node);
              if (ev.code !== 0 || ev.timedOut) fail();
            }
          }
          if (!finished.has(node)) throw new CorralError('UNAVAILABLE', `${node} ended the stream without an exit status`);
        } catch (err) {
          if (finished.has(node)) return;
          finished.add(node);
          if (stop.signal.aborted && started) {
            queue.push({ node, t: 'cancelled' });
            return;
          }
          queue.push({ node, t: 'unreachable', ...unreachable(err, node) });
          fail();
        }
      });
      for (const i of skipped) queue.push({ node: nodes[i] as string, t: 'cancelled' });
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  private async openExec(node: string, args: unknown, stdin: Buffer | undefined, signal: AbortSignal, connectTimeoutMs: number | undefined): Promise<AsyncIterable<ExecEvent>> {
    const input = stdin ? chunksOf(stdin) : undefined;
    if (node === this.host.self) return this.host.ops.exec(args as never, input, signal);
    const peer = this.peerOf(node);
    const res = await peer.open(FANOUT_PATHS.nodeExec, args, { ...(input ? { input } : {}), signal, timeoutMs: connectTimeoutMs ?? this.host.connectTimeoutMs });
    return res.lines<ExecEvent>();
  }

  private peerOf(node: string): RpcClient {
    const peer = this.host.peer(node);
    if (!peer) throw new CorralError('UNAVAILABLE', `no address is known for ${node}`);
    return peer;
  }

  /** The same JSON request (mkdir, check, list) to every target. */
  call(args: Partial<FanoutCallArgs>, signal: AbortSignal): AsyncIterable<FanoutCallEvent> {
    const queue = new AsyncQueue<FanoutCallEvent>(512);
    void this.runCall(args, signal, queue).then(
      () => queue.end(),
      (err: unknown) => queue.fail(err),
    );
    return queue;
  }

  private async runCall(args: Partial<FanoutCallArgs>, signal: AbortSignal, queue: AsyncQueue<FanoutCallEvent>): Promise<void> {
    const allowed: string[] = [FANOUT_PATHS.nodeMkdir, FANOUT_PATHS.nodeCheck, FANOUT_PATHS.nodeList];
    if (typeof args.path !== 'string' || !allowed.includes(args.path)) throw new CorralError('BAD_REQUEST', `call may relay only ${allowed.join(', ')}`);
    const path = args.path;
    const fanout = checkFanout(args.fanout);
    let nodes: string[];
    const t = args.targets as { list?: unknown } | undefined;
    if (t && Array.isArray(t.list)) {
      const { all } = await this.host.nodes();
      nodes = resolveTargets({ nodes: t.list.map(String).join(',') }, all, this.host.groups);
    } else nodes = (await this.targets(args.targets)).nodes;
    queue.push({ t: 'plan', nodes });
    const timeoutMs = args.timeoutMs ?? 600_000;
    setMaxListeners(0, signal);
    await window(nodes, fanout, signal, async (node) => {
      const started = performance.now();
      const ms = (): number => Math.round((performance.now() - started) * 1000) / 1000;
      try {
        const result = await this.callNode(node, path, args.body, timeoutMs, signal);
        queue.push({ node, t: 'ok', result, ms: ms() });
      } catch (err) {
        const e = CorralError.from(err);
        queue.push({ node, t: 'error', error: e.message, code: e.code, ms: ms() });
      }
      await queue.drained();
    });
  }

  private async callNode(node: string, path: string, body: unknown, timeoutMs: number, signal: AbortSignal): Promise<unknown> {
    if (node === this.host.self) {
      const ops = this.host.ops;
      const b = (body ?? {}) as never;
      if (path === FANOUT_PATHS.nodeMkdir) return ops.mkdir(b);
      if (path === FANOUT_PATHS.nodeCheck) return ops.check(b);
      return ops.list(b);
    }
    return this.peerOf(node).call('POST', path, body, { timeoutMs, signal });
  }

  /** One file's bytes, teed to every listed node as they arrive; one result per node. */
  async put(args: Partial<FanoutPutArgs>, input: AsyncIterable<Buffer> | undefined, signal: AbortSignal): Promise<{ results: FanoutPutEvent[] }> {
    if (!Array.isArray(args.nodes) || args.nodes.length === 0 || !args.put) throw new CorralError('BAD_REQUEST', 'put needs nodes and put: {dest, file}');
    const { all } = await this.host.nodes();
    const nodes = resolveTargets({ nodes: args.nodes.map(String).join(',') }, all, this.host.groups);
    setMaxListeners(0, signal);
    const sinks = nodes.map(() => new AsyncQueue<Buffer>(16));
    const results = nodes.map((node, i) => this.putNode(node, args, sinks[i] as AsyncQueue<Buffer>, signal));
    // Feed every sink; a node that failed stops reading and is left out of the waiting.
    try {
      for await (const chunk of input ?? []) {
        if (signal.aborted) break;
        const slow: Promise<void>[] = [];
        for (const sink of sinks) if (!sink.abandoned && !sink.push(chunk)) slow.push(sink.drained());
        if (slow.length > 0) await Promise.all(slow);
      }
    } finally {
      for (const sink of sinks) sink.end();
    }
    return { results: await Promise.all(results) };
  }

  private async putNode(node: string, args: Partial<FanoutPutArgs>, sink: AsyncQueue<Buffer>, signal: AbortSignal): Promise<FanoutPutEvent> {
    try {
      let result: NodePutResult;
      if (node === this.host.self) result = await this.host.ops.put(args.put ?? {}, sink);
      else {
        const res = await this.peerOf(node).open(FANOUT_PATHS.nodePut, args.put, { input: sink, signal, timeoutMs: 600_000 });
        result = await res.json<NodePutResult>();
      }
      return { node, t: 'ok', result };
    } catch (err) {
      const e = CorralError.from(err);
      return { node, t: 'error', error: e.message, code: e.code };
    } finally {
      // Unblock the feeder if this node stopped reading early.
      void sink[Symbol.asyncIterator]().return?.();
    }
  }

  /** One node's file, as bytes. */
  async read(args: { node?: unknown; path?: unknown }, signal: AbortSignal): Promise<AsyncIterable<Buffer>> {
    if (typeof args.node !== 'string') throw new CorralError('BAD_REQUEST', 'read needs node and path');
    const { all } = await this.host.nodes();
    const [node] = resolveTargets({ nodes: args.node }, all, this.host.groups);
    if (node === this.host.self) return this.host.ops.read(args);
    const res = await this.peerOf(node as string).open(FANOUT_PATHS.nodeRead, { path: args.path }, { signal, timeoutMs: 600_000 });
    return res.bytes();
  }
}
