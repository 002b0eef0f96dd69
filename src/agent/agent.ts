// The agent: the daemon on every node. It wires the layers together: its servers (UNIX socket for
// local clients, mutual TLS for peers), the store (hosted here on the coordinator, reached over
// the transport elsewhere), and its membership (a session, a member key, a master campaign).

import { mkdirSync, readFileSync } from 'node:fs';
import { CorralError, isCorralError } from '../api/errors.js';
import { RemoteStore } from '../client/remote-store.js';
import { findNode, formatHostPort, type ClusterConfig, type NodeConfig } from '../config/cluster-config.js';
import { loadNodeCredentials, type PemCredentials } from '../config/pki-files.js';
import { Membership } from './membership-keeper.js';
import { addAgentRoutes } from './routes.js';
import { addGroupRoutes } from './group-routes.js';
import { addFanoutRoutes } from './fanout-routes.js';
import { GroupService } from './group-service.js';
import { addLockRoutes } from './lock-routes.js';
import { LOCK_SESSION_MIN_TTL_SECONDS, LockService } from './lock-service.js';
import { IdleExit, type PrivateAgentOptions } from './private-agent.js';
import { addStoreRoutes } from './store-routes.js';
import { JoinService } from './join-service.js';
import type { Store } from '../store/store.js';
import { openEmbeddedStore } from '../store/embedded/index.js';
import { RpcClient } from '../transport/client.js';
import { RpcServer } from '../transport/server.js';
import { keepaliveOf } from '../transport/types.js';
import { systemClock, type Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';

export interface AgentOptions {
  config: ClusterConfig;
  node: string;
  logger: Logger;
  version: string;
  clock?: Clock;
  /** A private lock daemon (corral lock's): no TCP listener, no credentials (private-agent.ts). */
  private?: PrivateAgentOptions;
}

export type AgentState = 'starting' | 'running' | 'stopping' | 'stopped';

export class Agent {
  private stateValue: AgentState = 'starting';
  readonly startedAt: number;
  readonly startedAtWall: Date;
  readonly self: NodeConfig;
  readonly credentials: PemCredentials;
  readonly clock: Clock;
  private readonly server: RpcServer;
  private store: Store | undefined;
  private membership: Membership | undefined;
  private join: JoinService | undefined;
  private locks: LockService | undefined;
  private groups: GroupService | undefined;
  private idleExit: IdleExit | undefined;
  private readonly peers = new Map<string, { address: string; client: RpcClient }>();
  private tlsPort = 0;
  private stopping: Promise<void> | undefined;
  private readonly stoppedPromise: Promise<void>;
  private resolveStopped!: () => void;

  private constructor(readonly opts: AgentOptions) {
    this.clock = opts.clock ?? systemClock;
    this.startedAt = this.clock.now();
    this.startedAtWall = new Date(this.clock.wallNow());
    this.self = findNode(opts.config, opts.node);
    this.credentials = opts.private ? { ca: '', cert: '', key: '' } : loadNodeCredentials(opts.config.pkiDir, opts.node);
    this.server = new RpcServer({ logger: opts.logger.child({ component: 'rpc' }), onSessionsChange: () => this.activityChanged() });
    this.stoppedPromise = new Promise((resolve) => (this.resolveStopped = resolve));
  }

  get config(): ClusterConfig {
    return this.opts.config;
  }

  get logger(): Logger {
    return this.opts.logger;
  }

  get name(): string {
    return this.self.name;
  }

  get state(): AgentState {
    return this.stateValue;
  }

  get isCoordinator(): boolean {
    return this.config.coordinator === this.name;
  }

  get version(): string {
    return this.opts.version;
  }

  /** The store this agent uses (its own on the coordinator, a remote one elsewhere). */
  get storeClient(): Store {
    if (!this.store) throw new CorralError('SHUTTING_DOWN', 'the agent has no store yet');
    return this.store;
  }

  get membershipState(): Membership | undefined {
    return this.membership;
  }

  get lockService(): LockService | undefined {
    return this.locks;
  }

  get groupService(): GroupService | undefined {
    return this.groups;
  }

  /** A private daemon counts down its lifespan while no lock is open and no client connected. */
  private activityChanged(): void {
    this.idleExit?.update((this.locks?.active ?? 0) > 0 || this.server.sessionCount > 0);
  }

  /** Starts an agent; resolves once it serves its socket and port (membership continues in the background). */
  static async start(opts: AgentOptions): Promise<Agent> {
    const agent = new Agent(opts);
    try {
      await agent.boot();
    } catch (err) {
      await agent.stop('start-up failed').catch(() => undefined);
      throw err;
    }
    return agent;
  }

  private async boot(): Promise<void> {
    const { config, logger } = this.opts;
    mkdirSync(this.self.dataDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.self.workDir, { recursive: true });
    this.store = await this.openStore();
    if (this.isCoordinator && config.store.backend === 'embedded') addStoreRoutes(this.server, this.store);
    addAgentRoutes(this.server, this);
    // At least 5 s: a holder that loses its lock needs a real grace period to stop its command.
    const lockTtlSeconds = Math.max(LOCK_SESSION_MIN_TTL_SECONDS, config.timings.sessionTtlSeconds);
    this.locks = new LockService({
      store: this.storeClient,
      node: this.name,
      ttlSeconds: lockTtlSeconds,
      keepaliveIntervalMs: Math.min(config.timings.keepaliveIntervalMs, (lockTtlSeconds * 1000) / 4),
      clock: this.clock,
      logger: logger.child({ component: 'locks' }),
      onActivity: () => this.activityChanged(),
      // Its own embedded store gives leases a fresh TTL when it restarts; etcd or a coordinator
      // elsewhere counts on while this agent is down.
      leaseOutlivesAgent: !(this.isCoordinator && config.store.backend === 'embedded'),
    });
    await this.recoverLocks(lockTtlSeconds);
    const lifespan = this.opts.private?.lifespanMs;
    if (lifespan !== undefined) this.idleExit = new IdleExit(this.clock, lifespan, (ms) => void this.stop(`idle for ${ms} ms`));
    addLockRoutes(this.server, this.locks, this.idleExit && {
      quiesce: () => this.idleExit?.quiesce(),
      exit: () => void this.stop('immediate exit requested (-X)'),
    });
    if (!this.opts.private) {
      this.groups = new GroupService({
        store: this.storeClient,
        node: this.name,
        nodes: config.nodes.map((n) => n.name),
        workDir: this.self.workDir,
        logDir: `${this.self.dataDir}/groups/log`,
        fileGroups: config.groups,
        source: config.file,
        clock: this.clock,
        logger: logger.child({ component: 'groups' }),
      });
      addGroupRoutes(this.server, this.groups, this.name);
      addFanoutRoutes(this.server, this);
    }
    await this.server.listenUnix(this.self.socket, { mode: this.opts.private?.socketMode ?? 0o600 });
    if (!this.opts.private) {
      this.tlsPort = await this.server.listenTls({ host: this.self.address.host, port: this.self.address.port, credentials: this.credentials });
    }
    if (this.isCoordinator && config.join) {
      this.join = await JoinService.start(this);
    }
    this.membership = new Membership(this, this.storeClient);
    this.membership.start();
    this.groups?.start();
    this.stateValue = 'running';
    this.activityChanged();
    logger.info(
      { socket: this.self.socket, address: formatHostPort({ host: this.self.address.host, port: this.tlsPort }), cluster: config.cluster },
      'agent started',
    );
  }

  /**
   * Before serving: the locks its previous incarnation kept for commands that still run (their
   * clients gone) are taken back (LockService.recover()). A store that does not answer now is
   * tried again in the background until the lock TTL has passed: by then those keys have expired.
   */
  private async recoverLocks(ttlSeconds: number): Promise<void> {
    const locks = this.locks;
    if (!locks) return;
    const { logger } = this.opts;
    const until = this.clock.now() + ttlSeconds * 1000;
    const attempt = async (): Promise<boolean> => {
      try {
        const n = await locks.recover();
        if (n > 0) logger.warn({ locks: n }, 'took back locks kept for commands that still run');
        return true;
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'could not look for locks kept for commands that still run; trying again');
        return false;
      }
    };
    // The first try waits at most a second: an agent must start and answer while its store is down
    // (the old incarnation's keys keep their lease until the TTL, so nobody else is granted them
    // meanwhile); the tries go on in the background until the TTL has passed.
    const first = attempt();
    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([first, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), 1000)))]);
    clearTimeout(timer);
    if (settled === true) return;
    void (async () => {
      if (settled === undefined && (await first)) return;
      while ((this.stateValue === 'starting' || this.stateValue === 'running') && this.clock.now() < until) {
        await this.clock.sleep(500);
        if (await attempt()) return;
      }
    })();
  }

  /**
   * The cluster's store as this agent uses it: on the embedded backend the coordinator hosts it and
   * the others reach it over mutual TLS; on etcd every agent talks to etcd directly.
   */
  private async openStore(): Promise<Store> {
    const { config, logger } = this.opts;
    const { timings } = config;
    const keepAliveTimeoutMs = Math.min(timings.requestTimeoutMs, (timings.sessionTtlSeconds * 1000) / 2);
    const store = config.store;
    if (store.backend === 'etcd') {
      const { openEtcdStore } = await import('../store/etcd/index.js');
      const { PrefixedStore } = await import('../store/prefixed.js');
      const tls = store.tls
        ? {
            ca: readFileSync(store.tls.ca, 'utf8'),
            ...(store.tls.cert && store.tls.key ? { cert: readFileSync(store.tls.cert, 'utf8'), key: readFileSync(store.tls.key, 'utf8') } : {}),
          }
        : undefined;
      const options = {
        endpoints: store.endpoints,
        ...(tls ? { tls } : {}),
        requestTimeoutMs: timings.requestTimeoutMs,
        connectTimeoutMs: timings.requestTimeoutMs,
        keepAliveTimeoutMs,
        logger: logger.child({ component: 'etcd' }),
        clock: this.clock,
      };
      let etcd;
      try {
        etcd = await openEtcdStore(options);
      } catch (err) {
        // etcd down at start is like a coordinator down: start anyway and join when it answers.
        // Bad endpoints or credentials are not: those stop the agent with their message.
        if (!isCorralError(err, 'STORE_UNAVAILABLE')) throw err;
        logger.warn({ err: err.message }, 'etcd does not answer yet; starting anyway');
        etcd = await openEtcdStore({ ...options, waitForMember: false });
      }
      logger.info({ endpoints: store.endpoints, prefix: store.prefix || undefined }, 'using the etcd store');
      return store.prefix ? new PrefixedStore(etcd, store.prefix) : etcd;
    }
    if (this.isCoordinator) {
      const embedded = await openEmbeddedStore({
        dataDir: `${this.self.dataDir}/store`,
        clock: this.clock,
        logger: logger.child({ component: 'store' }),
        snapshotEveryRecords: store.snapshotEveryRecords,
      });
      logger.info({ revision: (await embedded.revision()).toString() }, 'hosting the embedded store (this node is the coordinator)');
      return embedded;
    }
    const coordinator = findNode(config, config.coordinator);
    const rpc = new RpcClient(
      { kind: 'tls', host: coordinator.address.host, port: coordinator.address.port, credentials: this.credentials, serverName: coordinator.name },
      { requestTimeoutMs: timings.requestTimeoutMs, connectTimeoutMs: timings.requestTimeoutMs },
    );
    return new RemoteStore(rpc, `coordinator ${coordinator.name} (${formatHostPort(coordinator.address)})`, { ownsClient: true, keepAliveTimeoutMs });
  }

  /** A client for another node's agent (mutual TLS, the peer's certificate must name it). */
  peer(node: NodeConfig | { name: string; address: { host: string; port: number } }): RpcClient {
    const where = `${node.address.host}:${node.address.port}`;
    const cached = this.peers.get(node.name);
    if (cached?.address === where) return cached.client;
    // One client per node: a node that moved gets a new one and the old connection is closed.
    if (cached) void cached.client.close();
    const client = new RpcClient(
      { kind: 'tls', host: node.address.host, port: node.address.port, credentials: this.credentials, serverName: node.name },
      { requestTimeoutMs: this.config.timings.requestTimeoutMs, connectTimeoutMs: this.config.timings.requestTimeoutMs, ...keepaliveOf(this.config.timings) },
    );
    this.peers.set(node.name, { address: where, client });
    return client;
  }

  /** Resolves when the agent has stopped. */
  stopped(): Promise<void> {
    return this.stoppedPromise;
  }

  /**
   * Stops cleanly: leaves the cluster (the session is revoked, so peers see this node DOWN at
   * once), stops children, closes servers and streams, flushes and closes the store.
   */
  stop(reason: string): Promise<void> {
    this.stopping ??= this.shutdown(reason);
    return this.stopping;
  }

  private async shutdown(reason: string): Promise<void> {
    const { logger } = this.opts;
    this.stateValue = 'stopping';
    logger.info({ reason }, 'agent stopping');
    // Each step runs even if an earlier one failed: a half-stopped agent must not linger.
    const step = async (name: string, fn: () => Promise<unknown> | undefined): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        logger.warn({ step: name, err: (err as Error).message }, 'a shutdown step failed; continuing');
      }
    };
    this.idleExit?.close();
    // Before the servers close: held locks are reported lost (their clients stop their commands),
    // not released by the streams closing.
    await step('end the lock service', () => this.locks?.close());
    // The stop ladder of every supervised process (Cluster::Init's SIGINT, SIGTERM, SIGKILL).
    await step('stop the resource groups', () => this.groups?.close());
    await step('leave the cluster', () => this.membership?.stop());
    await step('close the join listener', () => this.join?.close());
    await step('close the servers', () => this.server.close());
    await step('close peer connections', () => Promise.all([...this.peers.values()].map((p) => p.client.close())));
    await step('close the store', () => this.store?.close());
    this.stateValue = 'stopped';
    logger.info('agent stopped');
    this.resolveStopped();
  }
}
