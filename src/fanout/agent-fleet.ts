// The Fleet over corral agents: every operation is one request to the agent this client reaches
// (its UNIX socket on a node, else mutual TLS with the admin certificate), which relays it.

import {
  FANOUT_PATHS,
  type FanoutCallArgs,
  type FanoutCallEvent,
  type FanoutEvent,
  type FanoutExecArgs,
  type FanoutPutBatchArgs,
  type FanoutPutBatchEvent,
  type FanoutPutEvent,
  type FanoutTargetsResult,
  type NodePutArgs,
  type TargetSpec,
} from '../api/fanout-wire.js';
import { CorralError } from '../api/errors.js';
import type { CorralClient } from '../client/client.js';
import type { Fleet, NodeCall, PutJob, PutManyOptions } from './fleet.js';
import { frameHeader } from './frames.js';
import { chunksOf } from './async-queue.js';

const LONG = 24 * 3600 * 1000;
/** Batch requests at once: enough to keep every node busy while one lane carries a large file. */
const LANES = 4;

/**
 * Exactly `size` bytes of `source`, whatever it yields: a file that grew is cut, one that shrank
 * or failed is padded with zeros (its hash then cannot match, so no node keeps it), so the
 * frames after it stay in step.
 */
async function* exactly(size: number, source: AsyncIterable<Buffer>, onError: (err: unknown) => void): AsyncGenerator<Buffer> {
  let sent = 0;
  try {
    for await (const chunk of source) {
      const part = chunk.length <= size - sent ? chunk : chunk.subarray(0, size - sent);
      if (part.length > 0) yield part;
      sent += part.length;
      if (sent === size) return;
    }
    if (sent < size) onError(new CorralError('FILE_ERROR', `it shrank to ${sent} of ${size} bytes while being sent`));
  } catch (err) {
    onError(err);
  }
  const zeros = Buffer.alloc(Math.min(64 * 1024, size - sent));
  while (sent < size) {
    const part = zeros.subarray(0, Math.min(zeros.length, size - sent));
    yield part;
    sent += part.length;
  }
}


export class AgentFleet implements Fleet {
  constructor(private readonly client: CorralClient) {}

  get via(): string {
    return `agent ${this.client.via ?? '?'}`;
  }

  async targets(spec: TargetSpec): Promise<FanoutTargetsResult> {
    const rpc = await this.client.rpc();
    return rpc.call<FanoutTargetsResult>('POST', FANOUT_PATHS.targets, { targets: spec });
  }

  async *exec(args: FanoutExecArgs, stdin: Buffer | undefined, signal: AbortSignal): AsyncGenerator<FanoutEvent> {
    const rpc = await this.client.rpc();
    const res = await rpc.open(FANOUT_PATHS.exec, args, { ...(stdin ? { input: chunksOf(stdin) } : {}), signal, timeoutMs: LONG });
    yield* res.lines<FanoutEvent>();
  }

  async *call(nodes: string[], call: NodeCall, opts: { fanout?: number; signal: AbortSignal }): AsyncGenerator<FanoutCallEvent> {
    const rpc = await this.client.rpc();
    const body: FanoutCallArgs = { targets: { list: nodes }, path: call.path, body: call.body, ...(opts.fanout ? { fanout: opts.fanout } : {}) };
    yield* rpc.stream<FanoutCallEvent>('POST', FANOUT_PATHS.call, body, { signal: opts.signal });
  }

  async put(nodes: string[], put: NodePutArgs, source: () => AsyncIterable<Buffer>, signal: AbortSignal): Promise<FanoutPutEvent[]> {
    const rpc = await this.client.rpc();
    const res = await rpc.open(FANOUT_PATHS.put, { nodes, put }, { input: source(), signal, timeoutMs: LONG });
    return (await res.json<{ results: FanoutPutEvent[] }>()).results;
  }

  /**
   * Files in batches: up to LANES requests at once, each a stream of frames that takes the next
   * file when it has room, so many small files need no request each and a large one holds up
   * only its own lane. The relay tees each file to its nodes and answers per file and node.
   */
  async putMany(opts: PutManyOptions): Promise<void> {
    const rpc = await this.client.rpc();
    let exhausted = false;
    const take = (): PutJob | undefined => {
      if (exhausted || opts.signal.aborted) return undefined;
      const job = opts.next();
      if (!job) exhausted = true;
      return job;
    };
    const args: FanoutPutBatchArgs = { dest: opts.dest, nodes: opts.nodes, ...(opts.fsync ? { fsync: true } : {}) };
    const lane = async (): Promise<void> => {
      const first = take();
      if (!first) return;
      const pending = new Map<number, { job: PutJob; waiting: Set<string>; localError?: string }>();
      const settle = (i: number, ev: FanoutPutEvent): void => {
        const entry = pending.get(i);
        if (!entry?.waiting.delete(ev.node)) return;
        if (entry.waiting.size === 0) pending.delete(i);
        opts.onResult(entry.job, ev.t === 'error' && entry.localError !== undefined ? { ...ev, error: entry.localError, code: 'FILE_ERROR' } : ev);
      };
      const failPending = (node: string | undefined, error: string, code: string): void => {
        for (const [i, entry] of [...pending]) {
          for (const n of [...entry.waiting]) if (node === undefined || n === node) settle(i, { node: n, t: 'error', error, code });
        }
      };
      let count = 0;
      async function* frames(): AsyncGenerator<Buffer> {
        for (let job = first; job; job = take()) {
          const i = count++;
          const entry: { job: PutJob; waiting: Set<string>; localError?: string } = { job, waiting: new Set(job.nodes) };
          pending.set(i, entry);
          const { path, size, mode, sha256 } = job.file;
          yield frameHeader({ i, path, size, mode, sha256, nodes: job.nodes });
          yield* exactly(size, job.source(), (err) => (entry.localError = `reading ${path} here: ${CorralError.from(err).message}; not sent`));
        }
      }
      try {
        const res = await rpc.open(FANOUT_PATHS.putBatch, args, { input: frames(), signal: opts.signal, timeoutMs: LONG });
        for await (const ev of res.lines<FanoutPutBatchEvent>()) {
          if (ev.t === 'lost') failPending(ev.node, ev.error, ev.code);
          else settle(ev.i, ev.t === 'ok' ? { node: ev.node, t: 'ok', result: ev.result } : { node: ev.node, t: 'error', error: ev.error, code: ev.code });
        }
        failPending(undefined, 'the relay ended the batch without an answer for this file', 'UNAVAILABLE');
      } catch (err) {
        const e = CorralError.from(err);
        failPending(undefined, e.message, e.code);
      }
    };
    await Promise.all(Array.from({ length: LANES }, lane));
  }

  async read(node: string, path: string, signal: AbortSignal): Promise<AsyncIterable<Buffer>> {
    const rpc = await this.client.rpc();
    const res = await rpc.open(FANOUT_PATHS.read, { node, path }, { signal, timeoutMs: LONG });
    return res.bytes();
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
