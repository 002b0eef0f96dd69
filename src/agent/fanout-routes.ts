// Fan-out endpoints. /v1/node/* act on this machine: operators (local socket, admin certificate)
// and the agents of nodes listed in corral.yaml (relaying an operator's request) may call them.
// Those nodes were provisioned by the administrator and are trusted with each other, as in any
// cluster manager that can start anything anywhere. A node that joined with the join token holds
// a node certificate too, but is not trusted to run commands elsewhere: it can be a target, not a
// relay. /v1/fanout/* relay to many nodes and are for operators only.

import { CorralError } from '../api/errors.js';
import { FANOUT_PATHS } from '../api/fanout-wire.js';
import { formatHostPort, parseHostPort } from '../config/cluster-config.js';
import { expandNodeSet } from '../config/nodeset.js';
import { readClusterView, type ClusterView } from '../coord/membership.js';
import { NodeOps } from '../fanout/node-ops.js';
import { Relay } from '../fanout/relay.js';
import type { RpcClient } from '../transport/client.js';
import { RawResponse } from '../transport/routes.js';
import type { RpcServer } from '../transport/server.js';
import type { PeerIdentity } from '../transport/types.js';
import type { Agent } from './agent.js';
import { isOperator } from './routes.js';

/** CORRAL_FAULT_SLOW_PUT_MS: a whole number of milliseconds up to a minute, else ignored. */
function slowPutMs(text: string | undefined): number | undefined {
  const n = Number(text);
  return text !== undefined && /^\d+$/.test(text) && n > 0 && n <= 60_000 ? n : undefined;
}

export function addFanoutRoutes(server: RpcServer, agent: Agent): void {
  const configured = new Set(agent.config.nodes.map((n) => n.name));
  const operatorOrNode = (peer: PeerIdentity): boolean => isOperator(peer) || (peer.kind === 'tls' && peer.role === 'node' && configured.has(peer.commonName));
  const self = agent.self;
  const slowPut = slowPutMs(process.env.CORRAL_FAULT_SLOW_PUT_MS);
  const ops = new NodeOps({
    node: agent.name,
    workDir: self.workDir,
    ...(self.writeRoots ? { writeRoots: self.writeRoots } : {}),
    ...(process.env.CORRAL_FAULT_CORRUPT_PUT ? { corruptPutsMatching: process.env.CORRAL_FAULT_CORRUPT_PUT } : {}),
    // Test-only (docs/fanout.md, Testing hooks): slow every received file down, so that a test can
    // stop an agent in the middle of a transfer.
    ...(slowPut !== undefined ? { slowPutMs: slowPut } : {}),
  });
  const addresses = new Map<string, string>();
  for (const n of agent.config.nodes) addresses.set(n.name, formatHostPort(n.address));
  let lastView: ClusterView | undefined;
  const groups: Record<string, string[]> = {};
  for (const [name, expr] of Object.entries(agent.config.nodegroups ?? {})) groups[name] = expandNodeSet(expr);

  const relay = new Relay({
    self: agent.name,
    ops,
    groups,
    connectTimeoutMs: agent.config.timings.requestTimeoutMs,
    nodes: async () => {
      try {
        lastView = await readClusterView(agent.storeClient);
      } catch {
        // The store is away: use the last view and the configuration; unreachable nodes show as such.
      }
      const all = agent.config.nodes.map((n) => n.name);
      const down = new Set<string>();
      for (const n of lastView?.nodes ?? []) {
        if (!all.includes(n.name)) all.push(n.name);
        if (n.address) addresses.set(n.name, n.address);
        if (!n.up) down.add(n.name);
      }
      return { all, down };
    },
    peer: (name): RpcClient | undefined => {
      const address = parseHostPort(addresses.get(name) ?? '');
      return address ? agent.peer({ name, address }) : undefined;
    },
  });

  const body = (b: unknown): Record<string, unknown> => {
    if (b === undefined) return {};
    if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new CorralError('BAD_REQUEST', 'the request arguments must be a JSON object');
    return b as Record<string, unknown>;
  };

  const node = { allow: operatorOrNode };
  server.route('POST', FANOUT_PATHS.nodeExec, (req) => ops.exec(body(req.body), req.input, req.signal), { ...node, input: true });
  server.route('POST', FANOUT_PATHS.nodeMkdir, (req) => ops.mkdir(body(req.body)), node);
  server.route('POST', FANOUT_PATHS.nodeCheck, (req) => ops.check(body(req.body)), node);
  server.route('POST', FANOUT_PATHS.nodeList, (req) => ops.list(body(req.body)), node);
  server.route('POST', FANOUT_PATHS.nodePut, (req) => ops.put(body(req.body), req.input), { ...node, input: true });
  server.route('POST', FANOUT_PATHS.nodeRead, async (req) => new RawResponse(await ops.read(body(req.body))), { ...node, input: true });

  const operator = { allow: isOperator };
  server.route('POST', FANOUT_PATHS.targets, (req) => relay.targets(body(req.body).targets), operator);
  server.route('POST', FANOUT_PATHS.exec, (req) => relay.exec(body(req.body), req.input, req.signal), { ...operator, input: true });
  server.route('POST', FANOUT_PATHS.call, (req) => relay.call(body(req.body), req.signal), operator);
  server.route('POST', FANOUT_PATHS.put, (req) => relay.put(body(req.body), req.input, req.signal), { ...operator, input: true });
  server.route('POST', FANOUT_PATHS.read, async (req) => new RawResponse(await relay.read(body(req.body), req.signal)), { ...operator, input: true });
}
