// The agent's own endpoints: ping, status and cluster-wide ping. Status reads membership from the
// store; when the store cannot be reached it says so and probes each agent directly instead of
// showing stale state.

import { CorralError, isCorralError } from '../api/errors.js';
import {
  PATHS,
  type ClusterPingResponse,
  type NodePing,
  type NodeStatus,
  type PingResponse,
  type StatusResponse,
} from '../api/types.js';
import { formatHostPort, parseHostPort } from '../config/cluster-config.js';
import { readClusterView, type ClusterView } from '../coord/membership.js';
import type { RpcServer } from '../transport/server.js';
import type { PeerIdentity } from '../transport/types.js';
import type { Agent } from './agent.js';

/** Operators: a local client on the agent's socket, or the administrator's certificate. */
export function isOperator(peer: PeerIdentity): boolean {
  return peer.kind === 'local' || (peer.kind === 'tls' && peer.role === 'admin');
}

interface KnownNode {
  name: string;
  address: string;
}

/** Nodes this agent knows of without the store: its configuration plus the last view it read. */
function knownNodes(agent: Agent, lastView: ClusterView | undefined): KnownNode[] {
  const byName = new Map<string, KnownNode>();
  for (const n of agent.config.nodes) byName.set(n.name, { name: n.name, address: formatHostPort(n.address) });
  for (const n of lastView?.nodes ?? []) if (n.address) byName.set(n.name, { name: n.name, address: n.address });
  return [...byName.values()];
}

async function pingNode(agent: Agent, node: KnownNode, timeoutMs: number): Promise<NodePing> {
  const address = parseHostPort(node.address);
  if (!address) return { name: node.name, address: node.address, ok: false, rttMs: null, error: 'no valid address registered' };
  const deadline = performance.now() + timeoutMs;
  try {
    // The first call may have to connect (TCP + TLS handshake); the round trip is the second.
    const peer = agent.peer({ name: node.name, address });
    await peer.call<PingResponse>('GET', PATHS.ping, undefined, { timeoutMs });
    const started = performance.now();
    await peer.call<PingResponse>('GET', PATHS.ping, undefined, { timeoutMs: Math.max(1, deadline - started) });
    return { name: node.name, address: node.address, ok: true, rttMs: Math.round((performance.now() - started) * 1000) / 1000, error: null };
  } catch (err) {
    return { name: node.name, address: node.address, ok: false, rttMs: null, error: (err as Error).message };
  }
}

/**
 * A read that fails fast as unavailable (an etcd member answering "no leader" during an election)
 * is tried again until one request deadline has passed: a read is safe to repeat, and a moment of
 * failover should not show as an outage. A store that stays down still fails within the deadline.
 */
async function readWithin<T>(agent: Agent, read: () => Promise<T>): Promise<T> {
  const deadline = agent.clock.now() + agent.config.timings.requestTimeoutMs;
  for (;;) {
    try {
      return await read();
    } catch (err) {
      if (!isCorralError(err, 'STORE_UNAVAILABLE') || agent.clock.now() + 100 >= deadline) throw err;
      await agent.clock.sleep(100);
    }
  }
}

export function addAgentRoutes(server: RpcServer, agent: Agent): void {
  let lastView: ClusterView | undefined;

  server.route('GET', PATHS.ping, () =>
    Promise.resolve<PingResponse>({
      node: agent.name,
      cluster: agent.config.cluster,
      version: agent.version,
      time: new Date(agent.clock.wallNow()).toISOString(),
      phase: agent.membershipState?.phase ?? 'connecting',
      term: agent.membershipState?.term?.toString() ?? null,
    }),
  );

  server.route('GET', PATHS.status, async (): Promise<StatusResponse> => {
    const { config } = agent;
    const base = {
      cluster: config.cluster,
      answeredBy: agent.name,
      store: {
        backend: config.store.backend,
        coordinator: config.store.backend === 'embedded' ? config.coordinator : null,
        endpoints: config.store.backend === 'etcd' ? config.store.endpoints : null,
        available: true,
        revision: null as string | null,
        error: null as string | null,
      },
    };
    let view: ClusterView;
    try {
      view = await readWithin(agent, () => readClusterView(agent.storeClient));
      lastView = view;
    } catch (err) {
      if (!isCorralError(err, 'STORE_UNAVAILABLE') && !isCorralError(err, 'SHUTTING_DOWN')) throw err;
      const probes = await Promise.all(knownNodes(agent, lastView).map((n) => pingNode(agent, n, Math.min(1000, config.timings.requestTimeoutMs))));
      return {
        ...base,
        state: 'store-unavailable',
        master: null,
        term: null,
        store: { ...base.store, available: false, error: err.message },
        source: 'probe',
        nodes: probes.map((p) => ({
          name: p.name,
          state: p.ok ? 'up' : 'down',
          address: p.address,
          uptimeSeconds: null,
          startedAt: null,
          pid: null,
          version: null,
          master: false,
          coordinator: config.store.backend === 'embedded' && p.name === config.coordinator,
        })),
        note: `${
          config.store.backend === 'etcd' ? `the etcd cluster (${config.store.endpoints.join(', ')})` : `the coordination store on ${config.coordinator}`
        } is unavailable: the cluster cannot make decisions (no master, no membership changes) until it returns; node states come from direct probes`,
      };
    }
    const now = agent.clock.wallNow();
    const master = view.master?.value ?? null;
    const nodes: NodeStatus[] = view.nodes.map((n) => {
      const started = n.member ? Date.parse(n.member.startedAt) : NaN;
      return {
        name: n.name,
        state: n.up ? 'up' : 'down',
        address: n.address,
        uptimeSeconds: n.up && Number.isFinite(started) ? Math.max(0, Math.round((now - started) / 1000)) : null,
        startedAt: n.up ? (n.member?.startedAt ?? null) : null,
        pid: n.up ? (n.member?.pid ?? null) : null,
        version: n.up ? (n.member?.version ?? null) : null,
        master: n.name === master,
        coordinator: config.store.backend === 'embedded' && n.name === config.coordinator,
      };
    });
    const down = nodes.filter((n) => n.state === 'down').length;
    return {
      ...base,
      state: master ? 'up' : 'forming',
      master,
      term: view.master ? view.master.term.toString() : null,
      store: { ...base.store, revision: view.revision.toString() },
      source: 'store',
      nodes,
      note: master ? (down > 0 ? `${down} node${down === 1 ? ' is' : 's are'} down` : null) : 'no master elected yet',
    };
  });

  server.route(
    'POST',
    PATHS.masterStepDown,
    async () => {
      const membership = agent.membershipState;
      if (!membership) throw new CorralError('NOT_RUNNING', `${agent.name} has not joined the cluster yet`);
      await membership.stepDown();
      return { node: agent.name, phase: membership.phase };
    },
    { allow: isOperator },
  );

  server.route('GET', PATHS.clusterPing, async (req): Promise<ClusterPingResponse> => {
    const timeout = Number(req.query.get('timeoutMs') ?? agent.config.timings.requestTimeoutMs);
    if (!Number.isFinite(timeout) || timeout < 1 || timeout > 60_000) throw new CorralError('BAD_REQUEST', 'timeoutMs must be between 1 and 60000');
    let nodes: KnownNode[];
    try {
      lastView = await readClusterView(agent.storeClient);
      nodes = lastView.nodes.map((n) => ({ name: n.name, address: n.address }));
    } catch {
      nodes = knownNodes(agent, lastView);
    }
    return { from: agent.name, nodes: await Promise.all(nodes.map((n) => pingNode(agent, n, timeout))) };
  });
}
