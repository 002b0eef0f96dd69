// The typed client: everything the CLI can do, a program can do through this class. It talks to
// one agent: over that agent's UNIX socket when this machine runs one, otherwise over mutual TLS
// with the administrator's credentials, trying the configured nodes in order.

import { existsSync } from 'node:fs';
import path from 'node:path';
import { CorralError, isCorralError } from '../api/errors.js';
import { LOCK_PATHS, type LockListingWire } from '../api/lock-wire.js';
import { GROUP_PATHS, type GroupsStatusResponse, type LogLine, type ReloadResponse, type TellResponse } from '../api/groups-wire.js';
import type { ClusterGroupConfig } from '../config/groups.js';
import type { RpcStream } from '../transport/client.js';
import { PATHS, type ClusterPingResponse, type PingResponse, type StatusResponse } from '../api/types.js';
import type { ClusterConfig } from '../config/cluster-config.js';
import { loadAdminCredentials, PKI_FILES } from '../config/pki-files.js';
import { RpcClient } from '../transport/client.js';
import { describeEndpoint, keepaliveOf, type Endpoint } from '../transport/types.js';
import { acquireLock, type HeldLock, type LockOptions } from './locks.js';

export interface ClientOptions {
  /** Prefer this node's agent. */
  node?: string;
  /** Use this UNIX socket and nothing else. */
  socket?: string;
  /** With `node`: reach that node's agent and no other (its socket here, else mutual TLS). */
  only?: boolean;
  requestTimeoutMs?: number;
}

/** Where this client may reach an agent, best first. */
export function candidateEndpoints(config: ClusterConfig, options: ClientOptions = {}): Endpoint[] {
  if (options.socket) return [{ kind: 'unix', path: options.socket }];
  const nodes = [...config.nodes]
    .filter((n) => !options.only || n.name === options.node)
    .sort((a, b) => Number(b.name === options.node) - Number(a.name === options.node));
  const endpoints: Endpoint[] = nodes.filter((n) => existsSync(n.socket)).map((n) => ({ kind: 'unix', path: n.socket }));
  if (existsSync(path.join(config.pkiDir, PKI_FILES.adminCert))) {
    const credentials = loadAdminCredentials(config.pkiDir);
    for (const n of nodes) endpoints.push({ kind: 'tls', host: n.address.host, port: n.address.port, credentials, serverName: n.name });
  }
  return endpoints;
}

export class CorralClient {
  private current: RpcClient | undefined;
  private currentIndex = -1;
  private readonly endpoints: Endpoint[];

  constructor(
    readonly config: ClusterConfig,
    private readonly options: ClientOptions = {},
  ) {
    this.endpoints = candidateEndpoints(config, options);
  }

  /** Describes the agent this client last reached. */
  get via(): string | undefined {
    const e = this.endpoints[this.currentIndex];
    return e ? describeEndpoint(e) : undefined;
  }

  /** Calls the first agent that answers; an unreachable one is skipped, any other error returned. */
  async call<T>(method: 'GET' | 'POST', path: string, body?: unknown, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.endpoints.length === 0) {
      throw new CorralError(
        'UNAVAILABLE',
        `no agent socket of cluster ${this.config.cluster} exists on this machine and ${this.config.pkiDir} holds no admin credentials; run this on a node, or copy admin.crt and admin.key from where 'corral init' ran`,
      );
    }
    const failures: string[] = [];
    const start = Math.max(0, this.currentIndex);
    for (let k = 0; k < this.endpoints.length; k++) {
      const i = (start + k) % this.endpoints.length;
      if (i !== this.currentIndex) {
        await this.current?.close();
        const timeout = this.options.requestTimeoutMs ?? this.config.timings.requestTimeoutMs;
        this.current = new RpcClient(this.endpoints[i] as Endpoint, { requestTimeoutMs: timeout, connectTimeoutMs: timeout });
        this.currentIndex = i;
      }
      try {
        return await (this.current as RpcClient).call<T>(method, path, body, opts);
      } catch (err) {
        if (!isCorralError(err, 'UNAVAILABLE')) throw err;
        failures.push(err.message);
      }
    }
    throw new CorralError('UNAVAILABLE', `no agent of cluster ${this.config.cluster} answered: ${failures.join('; ')}`);
  }

  /** The agent may spend a store deadline and then a probe round on it when the store is down. */
  status(): Promise<StatusResponse> {
    return this.call<StatusResponse>('GET', PATHS.status, undefined, { timeoutMs: 2 * this.config.timings.requestTimeoutMs + 2000 });
  }

  ping(): Promise<PingResponse> {
    return this.call<PingResponse>('GET', PATHS.ping);
  }

  /** Asks the agent to ping every node, each within `timeoutMs`; this call waits long enough for that. */
  clusterPing(timeoutMs?: number): Promise<ClusterPingResponse> {
    const perNode = timeoutMs ?? this.config.timings.requestTimeoutMs;
    return this.call<ClusterPingResponse>('GET', `${PATHS.clusterPing}?timeoutMs=${perNode}`, undefined, {
      timeoutMs: perNode + this.config.timings.requestTimeoutMs + 1000,
    });
  }

  /** Asks the agent this client reaches (use `node` to pick the master) to hand mastership on. */
  stepDown(): Promise<{ node: string; phase: string }> {
    return this.call('POST', PATHS.masterStepDown, {});
  }

  /** Every lock resource of the cluster with its holders and waiters. */
  locks(): Promise<LockListingWire> {
    return this.call<LockListingWire>('GET', LOCK_PATHS.list);
  }

  /** Every resource group: its nodes, target level, and each node's report. */
  groups(): Promise<GroupsStatusResponse> {
    return this.call<GroupsStatusResponse>('GET', GROUP_PATHS.status);
  }

  /** Sets a group's target level; with `wait`, until every UP node of the group settled or `timeoutMs`. */
  tell(group: string, level: string, options: { wait?: boolean; timeoutMs?: number } = {}): Promise<TellResponse> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    return this.call<TellResponse>('POST', GROUP_PATHS.tell, { group, level, wait: options.wait === true, timeoutMs }, { timeoutMs: timeoutMs + this.config.timings.requestTimeoutMs + 2_000 });
  }

  /** Validates and publishes a group configuration cluster-wide. */
  reload(groups: ClusterGroupConfig[], source: string): Promise<ReloadResponse> {
    return this.call<ReloadResponse>('POST', GROUP_PATHS.reload, { groups, source });
  }

  /** Log lines of GROUP (optionally one TAG) on the agent this client reaches (use `only` to pick it). */
  async logs(group: string, options: { tag?: string; lines?: number; follow?: boolean; signal?: AbortSignal } = {}): Promise<RpcStream<LogLine>> {
    const q = new URLSearchParams({ group, lines: String(options.lines ?? 50), follow: options.follow ? '1' : '0' });
    if (options.tag) q.set('tag', options.tag);
    const rpc = await this.agent();
    return rpc.stream<LogLine>('GET', `${GROUP_PATHS.logs}?${q.toString()}`, undefined, options.signal ? { signal: options.signal } : {});
  }

  /**
   * Takes a cluster-wide lock through the first agent that answers (src/client/locks.ts). The lock
   * lives on this client's connection: close() ends it (as a release, rolled back).
   */
  async lock(options: LockOptions = {}): Promise<HeldLock> {
    const failures: string[] = [];
    for (let k = 0; k < Math.max(1, this.endpoints.length); k++) {
      try {
        const rpc = await this.agent();
        return await acquireLock(rpc, options);
      } catch (err) {
        if (!isCorralError(err, 'UNAVAILABLE')) throw err;
        failures.push(err.message);
        this.currentIndex = (this.currentIndex + 1) % Math.max(1, this.endpoints.length);
        await this.current?.close();
        this.current = undefined;
      }
    }
    throw new CorralError('UNAVAILABLE', `no agent of cluster ${this.config.cluster} took the lock request: ${failures.join('; ')}`);
  }

  /** The RPC client of an agent that answered (fan-out opens its own streams on it). */
  async rpc(): Promise<RpcClient> {
    if (!this.current) await this.ping();
    return this.agent();
  }

  /** The RPC client of the agent in use (the first candidate until one fails). */
  private agent(): Promise<RpcClient> {
    const index = Math.max(0, this.currentIndex);
    const endpoint = this.endpoints[index];
    if (!endpoint) return Promise.reject(new CorralError('UNAVAILABLE', `no agent socket of cluster ${this.config.cluster} exists on this machine and ${this.config.pkiDir} holds no admin credentials`));
    if (!this.current || this.currentIndex !== index) {
      const timeout = this.options.requestTimeoutMs ?? this.config.timings.requestTimeoutMs;
      this.current = new RpcClient(endpoint, { requestTimeoutMs: Math.max(10_000, timeout), connectTimeoutMs: timeout, ...keepaliveOf(this.config.timings) });
      this.currentIndex = index;
    }
    return Promise.resolve(this.current);
  }

  async close(): Promise<void> {
    await this.current?.close();
    this.current = undefined;
    this.currentIndex = -1;
  }
}
