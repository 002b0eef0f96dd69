// A Fleet is how the fan-out verbs reach nodes: through agents (AgentFleet: one request to the
// local agent, which relays over its mutual-TLS connections) or over plain SSH (SshFleet). The
// verbs (src/fanout/run.ts, transfer.ts) are written once against this interface.

import type {
  FanoutCallEvent,
  FanoutEvent,
  FanoutExecArgs,
  FanoutPutEvent,
  FanoutTargetsResult,
  NodeCheckArgs,
  NodeListArgs,
  NodeMkdirArgs,
  NodePutArgs,
  TargetSpec,
} from '../api/fanout-wire.js';

export type NodeCall =
  | { path: '/v1/node/mkdir'; body: NodeMkdirArgs }
  | { path: '/v1/node/check'; body: NodeCheckArgs }
  | { path: '/v1/node/list'; body: NodeListArgs };

export interface Fleet {
  /** What the transport is, for messages: "agent n1 (unix:...)" or "ssh". */
  readonly via: string;
  /** Resolves -w/-x/-a; an unknown node is a USAGE error naming it. */
  targets(spec: TargetSpec): Promise<FanoutTargetsResult>;
  /** Runs a command on the targets; the stream starts with the plan and ends after one final event per node. */
  exec(args: FanoutExecArgs, stdin: Buffer | undefined, signal: AbortSignal): AsyncIterable<FanoutEvent>;
  /** The same small request on each listed node. */
  call(nodes: string[], call: NodeCall, opts: { fanout?: number; signal: AbortSignal }): AsyncIterable<FanoutCallEvent>;
  /** One file to each listed node; `source` is read once per call. */
  put(nodes: string[], put: NodePutArgs, source: () => AsyncIterable<Buffer>, signal: AbortSignal): Promise<FanoutPutEvent[]>;
  /** The bytes of a file on one node. */
  read(node: string, path: string, signal: AbortSignal): Promise<AsyncIterable<Buffer>>;
  close(): Promise<void>;
}
