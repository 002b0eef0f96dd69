// Membership: every agent registers its node (a persistent registry key) and keeps a member key
// attached to its session. A node is UP while its member key exists and DOWN when it is gone:
// the key vanishes when the agent revokes its session (clean stop) or when the lease expires.

import type { Revision, Store } from '../store/store.js';
import { leaderOf, type Leader } from './election.js';
import type { Session } from './session.js';

export const KEYS = {
  registry: '/corral/nodes/',
  members: '/corral/members/',
  masterElection: '/corral/election/master/',
} as const;

/** What a node publishes about itself while it is up. */
export interface MemberInfo {
  address: string;
  pid: number;
  /** Wall-clock start time (ISO 8601), for display (uptime) only. */
  startedAt: string;
  version: string;
}

export interface RegistryEntry {
  address: string;
}

export interface NodeView {
  name: string;
  address: string;
  up: boolean;
  member: MemberInfo | undefined;
}

export interface ClusterView {
  /** In registry key order. */
  nodes: NodeView[];
  master: Leader | undefined;
  /** The store revision the view was read at. */
  revision: bigint;
}

/** JSON.parse that answers undefined for text that is not JSON (values written by other versions). */
export function parseJson<T>(text: string): T | undefined {
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

/** Registers a node and marks it up under the session; returns the revision of that write. */
export async function joinMembership(store: Store, session: Session, name: string, info: MemberInfo): Promise<Revision> {
  const registry: RegistryEntry = { address: info.address };
  const { revision } = await store.txn({
    compare: [],
    success: [
      { type: 'put', key: KEYS.registry + name, value: JSON.stringify(registry) },
      { type: 'put', key: KEYS.members + name, value: JSON.stringify(info), lease: session.lease },
    ],
  });
  return revision;
}

/** Reads nodes, their state and the master in one transaction (one consistent revision). */
export async function readClusterView(store: Store): Promise<ClusterView> {
  const res = await store.txn({
    compare: [],
    success: [
      { type: 'range', prefix: KEYS.registry },
      { type: 'range', prefix: KEYS.members },
      { type: 'range', prefix: KEYS.masterElection },
    ],
  });
  const [registry, members, election] = res.results;
  if (registry?.type !== 'range' || members?.type !== 'range' || election?.type !== 'range') {
    throw new Error('store returned an unexpected transaction result');
  }
  const memberByName = new Map<string, MemberInfo | undefined>();
  for (const kv of members.kvs) memberByName.set(kv.key.slice(KEYS.members.length), parseJson<MemberInfo>(kv.value));
  const nodes: NodeView[] = registry.kvs.map((kv) => {
    const name = kv.key.slice(KEYS.registry.length);
    const entry = parseJson<RegistryEntry>(kv.value);
    const member = memberByName.get(name);
    return { name, address: member?.address ?? entry?.address ?? '', up: memberByName.has(name), member };
  });
  const master = leaderOf(election.kvs);
  return { nodes, master, revision: res.revision };
}

