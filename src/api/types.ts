// Request and response shapes of the agent's /v1 API, shared by the agent and the typed client.

export const PATHS = {
  ping: '/v1/ping',
  status: '/v1/status',
  clusterPing: '/v1/cluster/ping',
  join: '/v1/join',
  masterStepDown: '/v1/master/step-down',
} as const;

export interface PingResponse {
  node: string;
  cluster: string;
  version: string;
  /** Wall-clock time at the agent, ISO 8601 (display only). */
  time: string;
  /** What this agent believes it is: still connecting, a member, or the master. */
  phase: 'connecting' | 'member' | 'master' | 'stopped';
  /** The master's term while this agent is master (a decimal string), else null. */
  term: string | null;
}

export type ClusterState = 'up' | 'forming' | 'store-unavailable';

export interface NodeStatus {
  name: string;
  state: 'up' | 'down';
  address: string;
  /** Seconds since the node's agent started, while it is up. */
  uptimeSeconds: number | null;
  startedAt: string | null;
  pid: number | null;
  version: string | null;
  master: boolean;
  coordinator: boolean;
}

export interface StatusResponse {
  cluster: string;
  state: ClusterState;
  /** The node whose agent answered. */
  answeredBy: string;
  master: string | null;
  /** The master's term (its campaign key's revision), a decimal string. */
  term: string | null;
  store: {
    backend: 'embedded' | 'etcd';
    /** Embedded: the node hosting the store. */
    coordinator: string | null;
    /** etcd: the endpoints the agents use. */
    endpoints: string[] | null;
    available: boolean;
    revision: string | null;
    error: string | null;
  };
  /** How node states were determined: from the store, or by probing each agent when it is unavailable. */
  source: 'store' | 'probe';
  nodes: NodeStatus[];
  /** A sentence for humans when something needs attention. */
  note: string | null;
}

export interface NodePing {
  name: string;
  address: string;
  ok: boolean;
  rttMs: number | null;
  error: string | null;
}

export interface ClusterPingResponse {
  from: string;
  nodes: NodePing[];
}

export interface JoinRequest {
  node: string;
  address: string;
  publicKeyPem: string;
}

export interface JoinResponse {
  cluster: string;
  caPem: string;
  certPem: string;
  coordinator: { name: string; address: string };
  join: string;
  timings: Record<string, number>;
}
