// The fan-out API. Two levels: /v1/node/* runs on the agent that receives it (its own processes
// and files), and /v1/fanout/* is the relay: the agent the CLI talks to resolves the node set and
// calls /v1/node/* on every target over its persistent mutual-TLS connections, multiplexing the
// answers into one NDJSON stream tagged with node names.

export const FANOUT_PATHS = {
  nodeExec: '/v1/node/exec',
  nodeMkdir: '/v1/node/mkdir',
  nodeCheck: '/v1/node/check',
  nodePut: '/v1/node/put',
  nodeList: '/v1/node/list',
  nodeRead: '/v1/node/read',
  targets: '/v1/fanout/targets',
  exec: '/v1/fanout/exec',
  call: '/v1/fanout/call',
  put: '/v1/fanout/put',
  read: '/v1/fanout/read',
} as const;

/** Which nodes: the clush/pdsh selectors. */
export interface TargetSpec {
  /** -w: a node set (n[1-4],web1,@group); unset with `all` false means every node. */
  nodes?: string;
  /** -x: nodes to leave out (exclusion wins). */
  exclude?: string;
  all?: boolean;
}

export interface ExecSpec {
  /** The command as an argument vector, run without a shell unless `shell`. */
  argv: string[];
  /** Run argv[0] as a shell command line (`/bin/sh -c`); the user asked for a shell. */
  shell?: boolean;
  /** Kill the command's whole process group after this (SIGTERM, then SIGKILL after killGraceMs). */
  timeoutMs?: number;
  killGraceMs?: number;
  /** A script to write on the node and run (argv are its arguments). */
  script?: { name: string; base64: string };
  env?: Record<string, string>;
  /** Relative to the agent's work directory unless absolute. */
  cwd?: string;
}

/** Per-node exec arguments (what the relay sends to each node). */
export interface NodeExecArgs extends ExecSpec {
  rank: number;
  size: number;
}

/** Events of one node's command. Output bytes are base64 so any byte survives JSON. */
export type ExecEvent =
  | { t: 'start'; pid: number }
  | { t: 'out'; b: string }
  | { t: 'err'; b: string }
  | { t: 'exit'; code: number | null; signal: string | null; timedOut: boolean; ms: number };

/** The relay's stream: the plan, then node-tagged events, then one `unreachable` or `exit` per node. */
export type FanoutEvent =
  | { t: 'plan'; nodes: string[] }
  | ({ node: string } & ExecEvent)
  | { node: string; t: 'unreachable'; error: string; code: string }
  | { node: string; t: 'cancelled' };

export interface FanoutExecArgs {
  targets: TargetSpec;
  exec: ExecSpec;
  /** Nodes running at once (sliding window); default 64. */
  fanout?: number;
  /** Stop every node at the first failure (non-zero exit, timeout, unreachable). */
  failFast?: boolean;
  /** Connecting to a node must finish within this (default: the cluster's request timeout). */
  connectTimeoutMs?: number;
}

/** A file as the planner sees it: path relative to the destination, size, mode and SHA-256. */
export interface FileEntry {
  path: string;
  size: number;
  mode: number;
  sha256: string;
}

export interface NodeCheckArgs {
  /** Destination directory (relative to the work directory unless absolute). */
  dest: string;
  files: FileEntry[];
}

export interface NodeCheckResult {
  /** Per file, true when the node already holds it with the same size and SHA-256. */
  present: boolean[];
}

export interface NodePutArgs {
  dest: string;
  file: FileEntry;
  /** fdatasync the file before it is renamed into place (rsync --fsync); default off, as scp and rsync. */
  fsync?: boolean;
}

export interface NodePutResult {
  path: string;
  bytes: number;
  sha256: string;
}

export interface NodeMkdirArgs {
  paths: string[];
}

export interface NodeMkdirResult {
  /** Absolute paths, each with whether it was created now (false: it already existed). */
  dirs: { path: string; created: boolean }[];
}

export interface NodeListArgs {
  path: string;
}

export interface ListedEntry {
  /** Relative to the listed path's parent: the listed name itself first ("data", "data/a.txt"). */
  path: string;
  type: 'file' | 'dir';
  size: number;
  mode: number;
  /** Files only. */
  sha256?: string;
}

export interface NodeListResult {
  root: string;
  entries: ListedEntry[];
}

/** /v1/fanout/call: the same JSON request to every target node. */
export interface FanoutCallArgs {
  targets: TargetSpec | { list: string[] };
  path: typeof FANOUT_PATHS.nodeMkdir | typeof FANOUT_PATHS.nodeCheck | typeof FANOUT_PATHS.nodeList;
  body: unknown;
  fanout?: number;
  connectTimeoutMs?: number;
  timeoutMs?: number;
}

export type FanoutCallEvent =
  | { t: 'plan'; nodes: string[] }
  | { node: string; t: 'ok'; result: unknown; ms: number }
  | { node: string; t: 'error'; error: string; code: string; ms: number };

/** /v1/fanout/put: one file's bytes (the input), written on each listed node. */
export interface FanoutPutArgs {
  nodes: string[];
  put: NodePutArgs;
  connectTimeoutMs?: number;
}

export type FanoutPutEvent = { node: string; t: 'ok'; result: NodePutResult } | { node: string; t: 'error'; error: string; code: string };

export interface FanoutTargetsResult {
  nodes: string[];
  /** Nodes the cluster knows of but whose agent is down now. */
  down: string[];
}
