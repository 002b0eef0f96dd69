// The Fleet over corral agents: every operation is one request to the agent this client reaches
// (its UNIX socket on a node, else mutual TLS with the admin certificate), which relays it.

import {
  FANOUT_PATHS,
  type FanoutCallArgs,
  type FanoutCallEvent,
  type FanoutEvent,
  type FanoutExecArgs,
  type FanoutPutEvent,
  type FanoutTargetsResult,
  type NodePutArgs,
  type TargetSpec,
} from '../api/fanout-wire.js';
import type { CorralClient } from '../client/client.js';
import type { Fleet, NodeCall } from './fleet.js';
import { chunksOf } from './async-queue.js';

const LONG = 24 * 3600 * 1000;


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

  async read(node: string, path: string, signal: AbortSignal): Promise<AsyncIterable<Buffer>> {
    const rpc = await this.client.rpc();
    const res = await rpc.open(FANOUT_PATHS.read, { node, path }, { signal, timeoutMs: LONG });
    return res.bytes();
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
