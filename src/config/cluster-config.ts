// corral.yaml: the cluster's configuration, shared by every agent (`--node` picks which one it is)
// and by clients. Loading validates everything and names file, line and field on the first error.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CorralError } from '../api/errors.js';
import { parseGroupsSection, type ClusterGroupConfig } from './groups.js';
import { expandNodeSet } from './nodeset.js';
import { MapField, YamlView } from './yaml-view.js';

export const NODE_NAME = /^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$/i;
export const CLUSTER_NAME = NODE_NAME;

export interface HostPort {
  host: string;
  port: number;
}

export interface NodeConfig {
  name: string;
  address: HostPort;
  /** The agent's UNIX socket for local clients. */
  socket: string;
  /** Where the agent keeps its state (and the store's journal on the coordinator). */
  dataDir: string;
  /** Where the agent runs the processes it supervises, and where relative fan-out paths lead. */
  workDir: string;
  /** Directories fan-out may write into (push, scatter, mkdir); default: the work directory. */
  writeRoots?: string[];
}

export interface Timings {
  /** TTL of each agent's session lease: a killed agent is DOWN about this long after its death. */
  sessionTtlSeconds: number;
  /** How often an agent renews its session. */
  keepaliveIntervalMs: number;
  /** Deadline of one request to the store or a peer. */
  requestTimeoutMs: number;
  /** How long a stopping agent waits for its children and streams before forcing them. */
  shutdownGraceMs: number;
}

export interface EmbeddedStoreConfig {
  backend: 'embedded';
  snapshotEveryRecords: number;
}

export interface EtcdStoreConfig {
  backend: 'etcd';
  /** "host:port" or "https://host:port", in order of preference. */
  endpoints: string[];
  /** Every key corral writes is under this prefix, so clusters can share one etcd. */
  prefix: string;
  /** TLS client settings for an etcd that requires them (absolute PEM file paths). */
  tls: { ca: string; cert: string | undefined; key: string | undefined } | undefined;
}

export type StoreConfig = EmbeddedStoreConfig | EtcdStoreConfig;

const ETCD_ENDPOINT = /^(?:https?:\/\/)?(?:\[[0-9a-fA-F:.]+\]|[^:/\s[\]]+):\d{1,5}$/;

export interface ClusterConfig {
  /** Absolute path of the file this was loaded from. */
  file: string;
  cluster: string;
  /** The node whose agent hosts the embedded store. */
  coordinator: string;
  /** Directory of credentials: ca.crt, nodes/NAME.crt|key, admin.crt|key. */
  pkiDir: string;
  store: StoreConfig;
  /** In file order. */
  nodes: NodeConfig[];
  /** Where the coordinator accepts joins (TLS with a pre-shared key derived from the join token). */
  join: HostPort | undefined;
  timings: Timings;
  /** Resource groups declared here (docs/groups.md); the cluster runs what `corral reload` published. */
  groups: ClusterGroupConfig[];
  /** Named node sets for `@name` in -w and -x (docs/fanout.md). */
  nodegroups?: Record<string, string>;
}

export const defaultTimings: Timings = {
  sessionTtlSeconds: 2,
  keepaliveIntervalMs: 500,
  requestTimeoutMs: 2000,
  shutdownGraceMs: 5000,
};

/**
 * On etcd a session must outlive an etcd leader election (1–3 s with etcd's defaults), or every
 * etcd failover would end sessions and move the master: a 5 s TTL renewed every second.
 */
export const etcdDefaultTimings: Timings = { ...defaultTimings, sessionTtlSeconds: 5, keepaliveIntervalMs: 1000 };

export function timingDefaults(backend: StoreConfig['backend']): Timings {
  return backend === 'etcd' ? etcdDefaultTimings : defaultTimings;
}

export function parseHostPort(text: string): HostPort | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2]) as string, port };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

function hostPortField(map: MapField, key: string, required: boolean): HostPort | undefined {
  const text = required
    ? map.string(key, { required: true, hint: 'HOST:PORT' })
    : map.string(key, { hint: 'HOST:PORT' });
  if (text === undefined) return undefined;
  const hp = parseHostPort(text);
  if (!hp) map.fail(key, `expected HOST:PORT (for example 10.0.0.5:7400 or [::1]:7400), got ${JSON.stringify(text)}`);
  return hp;
}

function parseTimings(root: MapField, defaults: Timings): Timings {
  const t = root.map('timings');
  if (!t) return { ...defaults };
  const timings: Timings = {
    sessionTtlSeconds: t.integer('sessionTtlSeconds', { min: 1, max: 3600, default: defaults.sessionTtlSeconds }),
    keepaliveIntervalMs: t.integer('keepaliveIntervalMs', { min: 50, max: 600_000, default: defaults.keepaliveIntervalMs }),
    requestTimeoutMs: t.integer('requestTimeoutMs', { min: 100, max: 600_000, default: defaults.requestTimeoutMs }),
    shutdownGraceMs: t.integer('shutdownGraceMs', { min: 0, max: 600_000, default: defaults.shutdownGraceMs }),
  };
  if (timings.keepaliveIntervalMs * 2 > timings.sessionTtlSeconds * 1000) {
    t.fail('keepaliveIntervalMs', `must be at most half of sessionTtlSeconds (${timings.sessionTtlSeconds * 500} ms) so one lost keepalive does not end the session`);
  }
  t.rejectUnknown();
  return timings;
}

function parseStore(root: MapField, dir: string): StoreConfig {
  const s = root.map('store');
  if (!s) return { backend: 'embedded', snapshotEveryRecords: 10_000 };
  const backend = s.string('backend') ?? 'embedded';
  if (backend === 'etcd') {
    const endpoints = s.stringList('endpoints', { required: true, hint: 'etcd client URLs, e.g. ["10.0.0.5:2379", "https://10.0.0.6:2379"]' }) as string[];
    if (endpoints.length === 0) s.fail('endpoints', 'list at least one etcd endpoint');
    for (const e of endpoints) if (!ETCD_ENDPOINT.test(e)) s.fail('endpoints', `${JSON.stringify(e)} is not HOST:PORT or http(s)://HOST:PORT`);
    const prefix = s.string('prefix') ?? '';
    if (prefix !== '' && (!prefix.startsWith('/') || prefix.endsWith('/'))) s.fail('prefix', 'a prefix starts with "/" and does not end with one, e.g. "/clusters/prod"');
    const t = s.map('tls');
    let tls: EtcdStoreConfig['tls'];
    if (t) {
      const file = (key: string, required: boolean): string | undefined => {
        const v = required ? t.string(key, { required: true, hint: 'a PEM file' }) : t.string(key);
        return v === undefined ? undefined : path.resolve(dir, v);
      };
      tls = { ca: file('ca', true) as string, cert: file('cert', false), key: file('key', false) };
      if ((tls.cert === undefined) !== (tls.key === undefined)) t.fail(tls.cert ? 'key' : 'cert', 'a client certificate needs both cert and key');
      t.rejectUnknown();
    }
    s.rejectUnknown();
    return { backend: 'etcd', endpoints, prefix, tls };
  }
  if (backend !== 'embedded') s.fail('backend', `unknown store backend ${JSON.stringify(backend)} (known: embedded, etcd)`);
  const snapshotEveryRecords = s.integer('snapshotEveryRecords', { min: 100, max: 10_000_000, default: 10_000 });
  s.rejectUnknown();
  return { backend: 'embedded', snapshotEveryRecords };
}

function parseNodes(root: MapField, dir: string): NodeConfig[] {
  const nodesMap = root.map('nodes', { required: true }) as MapField;
  const nodes: NodeConfig[] = [];
  const addresses = new Map<string, string>();
  for (const { key: name, node } of nodesMap.keys()) {
    if (!NODE_NAME.test(name)) {
      nodesMap.view.fail(node, `nodes.${name}`, 'a node name is letters, digits, ".", "_" and "-" (at most 63, starting and ending with a letter or digit)');
    }
    const entry = nodesMap.map(name, { required: true }) as MapField;
    const address = hostPortField(entry, 'address', true) as HostPort;
    const addrKey = formatHostPort(address);
    const other = addresses.get(addrKey);
    if (other) entry.fail('address', `${addrKey} is already the address of node ${other}`);
    addresses.set(addrKey, name);
    const dataDir = path.resolve(dir, entry.string('dataDir') ?? `/var/lib/corral/${name}`);
    const socket = path.resolve(dir, entry.string('socket') ?? path.join(dataDir, 'agent.sock'));
    if (Buffer.byteLength(socket) > 107) {
      entry.fail('socket', `the socket path ${socket} is longer than the 107 bytes a UNIX socket allows; choose a shorter path`);
    }
    const workDir = path.resolve(dir, entry.string('workDir') ?? path.join(dataDir, 'work'));
    const roots = entry.stringList('writeRoots', { hint: 'directories fan-out may write into, e.g. [/srv/data]' });
    const writeRoots = roots === undefined ? undefined : roots.map((r) => path.resolve(dir, r));
    entry.rejectUnknown();
    nodes.push({ name, address, socket, dataDir, workDir, ...(writeRoots ? { writeRoots } : {}) });
  }
  if (nodes.length === 0) nodesMap.view.fail(nodesMap.node, 'nodes', 'list at least one node');
  return nodes;
}

/** `nodegroups: {web: "n[1-3]", db: n4}`: names for `@web` in node sets; each must expand. */
function parseNodeGroups(root: MapField): Record<string, string> | undefined {
  const m = root.map('nodegroups');
  if (!m) return undefined;
  const out: Record<string, string> = {};
  for (const { key } of m.keys()) {
    if (!NODE_NAME.test(key)) m.fail(key, 'a node group name is letters, digits, ".", "_" and "-"');
    const expr = m.string(key, { required: true, hint: 'a node set, e.g. "n[1-3],web1"' });
    try {
      expandNodeSet(expr);
    } catch (err) {
      m.fail(key, (err as Error).message);
    }
    out[key] = expr;
  }
  return out;
}

/** Parses corral.yaml text. `file` names it in errors; relative paths resolve against its directory. */
export function parseClusterConfig(text: string, file: string): ClusterConfig {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const view = new YamlView(file, text);
  const root = MapField.root(view);
  const cluster = root.string('cluster', { required: true, pattern: CLUSTER_NAME, hint: 'the cluster name: letters, digits, ".", "_", "-"' });
  const nodes = parseNodes(root, dir);
  const coordinator = root.string('coordinator') ?? (nodes[0] as NodeConfig).name;
  if (!nodes.some((n) => n.name === coordinator)) {
    root.fail('coordinator', `${JSON.stringify(coordinator)} is not one of the nodes (${nodes.map((n) => n.name).join(', ')})`);
  }
  const pkiDir = path.resolve(dir, root.string('pki') ?? 'pki');
  const store = parseStore(root, dir);
  const joinMap = root.map('join');
  let join: HostPort | undefined;
  if (joinMap) {
    join = hostPortField(joinMap, 'address', true);
    joinMap.rejectUnknown();
  }
  const timings = parseTimings(root, timingDefaults(store.backend));
  const groups = parseGroupsSection(root, nodes.map((n) => n.name));
  const nodegroups = parseNodeGroups(root);
  root.rejectUnknown();
  return { file: abs, cluster, coordinator, pkiDir, store, nodes, join, timings, groups, ...(nodegroups ? { nodegroups } : {}) };
}

export function loadClusterConfig(file: string): ClusterConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new CorralError('CONFIG_NOT_FOUND', `${file} does not exist; create one with 'corral init' or point --config at the cluster's corral.yaml`);
    }
    throw new CorralError('CONFIG_INVALID', `cannot read ${file}: ${(err as Error).message}`);
  }
  return parseClusterConfig(text, file);
}

export const DEFAULT_CONFIG_FILE = '/etc/corral/corral.yaml';

/** Which config file a client command uses: --config, then $CORRAL_CONFIG, then /etc/corral/corral.yaml. */
export function configPath(flagValue: string | undefined, env: NodeJS.ProcessEnv): string {
  return flagValue ?? (env.CORRAL_CONFIG || DEFAULT_CONFIG_FILE);
}

export function findNode(config: ClusterConfig, name: string): NodeConfig {
  const node = config.nodes.find((n) => n.name === name);
  if (!node) {
    throw new CorralError('UNKNOWN_NODE', `node ${JSON.stringify(name)} is not in ${config.file} (nodes: ${config.nodes.map((n) => n.name).join(', ')})`);
  }
  return node;
}

/** Renders a corral.yaml; used by `corral init`, `corral join` and `corral local up`. */
export function renderClusterConfig(c: {
  cluster: string;
  coordinator: string;
  pki: string;
  nodes: { name: string; address: string; socket?: string; dataDir?: string; workDir?: string }[];
  join?: string;
  timings?: Partial<Timings>;
  store?: StoreConfig;
}): string {
  const q = (s: string): string => JSON.stringify(s);
  const lines = [
    '# corral cluster configuration. Every agent reads this file (`corral agent --config FILE --node NAME`),',
    '# and so do clients (`--config FILE` or CORRAL_CONFIG). Relative paths resolve against this file.',
    `cluster: ${q(c.cluster)}`,
    '# The node whose agent hosts the embedded coordination store.',
    `coordinator: ${q(c.coordinator)}`,
    `pki: ${q(c.pki)}`,
    'nodes:',
  ];
  for (const n of c.nodes) {
    lines.push(`  ${n.name}:`, `    address: ${q(n.address)}`);
    if (n.socket) lines.push(`    socket: ${q(n.socket)}`);
    if (n.dataDir) lines.push(`    dataDir: ${q(n.dataDir)}`);
    if (n.workDir) lines.push(`    workDir: ${q(n.workDir)}`);
  }
  if (c.join) lines.push('# The coordinator accepts `corral join` here (TLS with a key derived from the join token).', 'join:', `  address: ${q(c.join)}`);
  if (c.store?.backend === 'etcd') {
    lines.push('# The coordination store: an etcd cluster (every agent talks to it directly).', 'store:', '  backend: etcd', '  endpoints:');
    for (const e of c.store.endpoints) lines.push(`    - ${q(e)}`);
    if (c.store.prefix) lines.push(`  prefix: ${q(c.store.prefix)}`);
    if (c.store.tls) {
      lines.push('  tls:', `    ca: ${q(c.store.tls.ca)}`);
      if (c.store.tls.cert) lines.push(`    cert: ${q(c.store.tls.cert)}`);
      if (c.store.tls.key) lines.push(`    key: ${q(c.store.tls.key)}`);
    }
  }
  const t = { ...timingDefaults(c.store?.backend ?? 'embedded'), ...c.timings };
  lines.push(
    'timings:',
    `  sessionTtlSeconds: ${t.sessionTtlSeconds}`,
    `  keepaliveIntervalMs: ${t.keepaliveIntervalMs}`,
    `  requestTimeoutMs: ${t.requestTimeoutMs}`,
    `  shutdownGraceMs: ${t.shutdownGraceMs}`,
    '',
  );
  return lines.join('\n');
}
