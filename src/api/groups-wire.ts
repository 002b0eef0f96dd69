// Cluster-wide resource groups on the wire and in the store (docs/groups.md).
//
// Store keys:
//   /corral/groups/config          {groups: ClusterGroupConfig[], source, publishedAt}  (validated)
//   /corral/groups/target/<group>  {level, by, at}   the level `corral tell` asked for
//   /corral/groups/status/<node>   NodeGroupsReport  what each agent's supervisor reports
// A tell is identified by the revision of its target write; an agent reports, per group, the
// revision of the target it has applied, so `corral tell --wait` knows when every node got there.

import type { ClusterGroupConfig } from '../config/groups.js';
import type { GroupState, GroupStatus } from '../supervisor/types.js';

export const GROUP_KEYS = {
  root: '/corral/groups/',
  config: '/corral/groups/config',
  target: '/corral/groups/target/',
  status: '/corral/groups/status/',
} as const;

export const GROUP_PATHS = {
  tell: '/v1/groups/tell',
  reload: '/v1/groups/reload',
  status: '/v1/groups/status',
  logs: '/v1/groups/logs',
} as const;

export interface GroupsConfigDoc {
  groups: ClusterGroupConfig[];
  /** The file it was read from, and by whom, for `corral status`. */
  source: string;
  publishedAt: string;
}

export interface TargetDoc {
  level: string;
  by: string;
  at: string;
}

export interface NodeGroupReport extends GroupStatus {
  /** Revision of the target write this node last applied to the group ('0': never told). */
  targetRevision: string;
}

export interface NodeGroupsReport {
  node: string;
  /** The reporting agent's pid: a report whose pid is not the live member's is from a dead incarnation. */
  agentPid: number;
  /** Revision of the configuration this node runs ('0': none yet). */
  configRevision: string;
  /** Why the published configuration could not be applied here, if it could not. */
  configError?: string;
  groups: NodeGroupReport[];
  /** Wall-clock time of this report. */
  at: string;
}

export interface TellRequest {
  group: string;
  level: string;
  /** Wait until every node of the group reports the level settled (DONE, PASSED or FAILED). */
  wait?: boolean;
  timeoutMs?: number;
}

/** One node's outcome of a tell with wait. */
export interface TellNodeResult {
  node: string;
  state: GroupState | 'DOWN' | 'PENDING';
  level: string | null;
}

export interface TellResponse {
  group: string;
  level: string;
  revision: string;
  nodes: string[];
  /** With wait: each node's state when the wait ended. */
  results?: TellNodeResult[];
  /** With wait: whether every node reached a settled state in time. */
  settled?: boolean;
  ms?: number;
}

export interface ReloadRequest {
  groups: unknown;
  source: string;
}

export interface ReloadResponse {
  revision: string;
  added: string[];
  removed: string[];
  changed: string[];
  unchanged: string[];
}

/** GET /v1/groups/status: the published configuration, targets, and every node's report. */
export interface GroupsStatusResponse {
  configRevision: string;
  source: string | null;
  /** Why the published configuration does not validate (the nodes keep the one in force). */
  configError?: string;
  /** Every node of the cluster: UP or not, and the configuration its agent last reported. */
  nodes: { node: string; up: boolean; configRevision: string | null; configError?: string }[];
  groups: {
    name: string;
    nodes: string[];
    target: string | null;
    targetRevision: string;
    /** One row per node the group runs on. */
    perNode: { node: string; up: boolean; report: NodeGroupReport | null; configRevision: string | null; configError?: string }[];
  }[];
}

/** One log line (`corral logs`): which node and process, which file, the text. */
export interface LogLine {
  node: string;
  group: string;
  tag: string;
  line: string;
}
