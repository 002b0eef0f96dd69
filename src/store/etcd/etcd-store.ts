// The Store contract on etcd v3, over a thin gRPC client of our own (see docs/architecture.md for
// why not the `etcd3` package). Each Store call is one etcd RPC with a deadline; nothing is retried
// behind the caller's back, so a caller's deadline (a session's) is never hidden by ours.

import { CorralError } from '../../api/errors.js';
import { systemClock, type Clock, type Timer } from '../../util/clock.js';
import { nullLogger, type Logger } from '../../util/log.js';
import type {
  DeleteResult,
  GetResult,
  LeaseGrant,
  LeaseId,
  LeaseStatus,
  PutResult,
  RangeResult,
  Revision,
  Store,
  StoreTraits,
  Txn,
  TxnResult,
  Watch,
  WatchOptions,
} from '../store.js';
import { NO_LEASE } from '../store.js';
import { checkKey, checkLease, checkLimit, checkPrefix, checkTxnShape as checkTxn, checkValue, requestedTtl } from '../checks.js';
import { big, bytes, decodeKv, decodeOpResult, decodeOptionalKv, encodeCompare, encodeOp, int64, prefixRange, text } from './codec.js';
import { EtcdConnection } from './connection.js';
import { channelCredentials, parseEndpoints, type EtcdTlsOptions } from './endpoints.js';
import { KeepAlives } from './keepalive.js';
import { etcdRpcs, type EtcdRpcs } from './proto.js';
import { EtcdWatch } from './watch.js';

export interface EtcdStoreOptions {
  /** Every member's client URL: "host:port", "http://host:port" or "https://host:port". */
  endpoints: string[];
  /** For an etcd that serves TLS (PEM contents, not paths). */
  tls?: EtcdTlsOptions;
  /** Deadline of every call (default 2000 ms). */
  requestTimeoutMs?: number;
  /** How long openEtcdStore() waits for a member to answer (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Deadline of one keepalive round trip (default requestTimeoutMs): a session wants it short. */
  keepAliveTimeoutMs?: number;
  /**
   * Wait until a member answers before resolving (default true). An agent passes false after a
   * first attempt failed, so it starts while etcd is down and joins once etcd answers.
   */
  waitForMember?: boolean;
  logger?: Logger;
  clock?: Clock;
}

/** Connects to etcd: resolves once a member answers, else throws STORE_UNAVAILABLE (or TLS). */
export async function openEtcdStore(options: EtcdStoreOptions): Promise<EtcdStore> {
  const endpoints = parseEndpoints(options.endpoints, options.tls);
  const credentials = channelCredentials(endpoints.some((e) => e.secure), options.tls);
  const clock = options.clock ?? systemClock;
  const conn = new EtcdConnection(endpoints, credentials, clock, options.logger ?? nullLogger);
  const rpcs = etcdRpcs();
  if (options.waitForMember !== false) {
    try {
      await conn.connect((member, ms) => conn.unary(rpcs.status, {}, ms, { member, failover: false }), options.connectTimeoutMs ?? 5_000);
    } catch (err) {
      conn.close();
      throw err;
    }
  }
  return new EtcdStore(conn, rpcs, {
    requestTimeoutMs: options.requestTimeoutMs ?? 2_000,
    keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? options.requestTimeoutMs ?? 2_000,
    clock,
  });
}

/**
 * What etcd needs from the contract, given the members' --heartbeat-interval and
 * --election-timeout (etcd's defaults: 100 and 1000 ms).
 *
 * - minLeaseTtlSeconds: etcd raises every TTL to ceil(1.5 × election timeout), in whole seconds
 *   (etcdserver: minTTL = (3 × electionTicks / 2) × heartbeat).
 * - leaseExpirySlackMs: the leader looks for expired leases every 500 ms, then commits their
 *   revocation through Raft (a round of heartbeats and an fsync). Not covered: a leader change,
 *   after which etcd 3.4 restarts every lease's TTL (so a lease can outlive its TTL by up to an
 *   election plus a TTL); recipes that depend on expiry must use fencing anyway.
 */
export function etcdStoreTraits(server: { heartbeatIntervalMs?: number; electionTimeoutMs?: number } = {}): StoreTraits {
  const heartbeat = server.heartbeatIntervalMs ?? 100;
  const election = server.electionTimeoutMs ?? 1_000;
  const electionTicks = Math.floor(election / heartbeat);
  const minTtlMs = Math.floor((3 * electionTicks) / 2) * heartbeat;
  return {
    minLeaseTtlSeconds: Math.max(1, Math.ceil(minTtlMs / 1000)),
    leaseExpirySlackMs: 500 + 500 + 4 * heartbeat,
  };
}

export class EtcdStore implements Store {
  private readonly keepAlives: KeepAlives;
  private readonly watches = new Set<EtcdWatch>();
  /** Default-start watches that etcd has not confirmed yet: later requests wait for them. */
  private readonly creating = new Set<Promise<void>>();
  private readonly timeoutMs: number;
  private readonly keepAliveTimeoutMs: number;
  private readonly clock: Clock;

  constructor(
    private readonly conn: EtcdConnection,
    private readonly rpcs: EtcdRpcs,
    options: { requestTimeoutMs: number; keepAliveTimeoutMs: number; clock: Clock },
  ) {
    this.timeoutMs = options.requestTimeoutMs;
    this.keepAliveTimeoutMs = options.keepAliveTimeoutMs;
    this.clock = options.clock;
    this.keepAlives = new KeepAlives(conn, rpcs.leaseKeepAlive, this.clock);
  }

  /** 'etcd at A, B, C', and which member is in use. */
  describe(): { cluster: string; current: string } {
    return { cluster: this.conn.cluster, current: this.conn.current().endpoint.label };
  }

  async get(key: string): Promise<GetResult> {
    checkKey(key);
    const ms = await this.afterWatchCreation();
    const r = await this.conn.unary(this.rpcs.range, { key: bytes(key) }, ms);
    return { revision: big(r.header.revision), kv: decodeOptionalKv(r.kvs[0]) };
  }

  async range(prefix: string, options: { limit?: number } = {}): Promise<RangeResult> {
    checkPrefix(prefix);
    checkLimit(options.limit);
    const ms = await this.afterWatchCreation();
    const r = await this.conn.unary(this.rpcs.range, { ...prefixRange(prefix), limit: int64(options.limit ?? 0) }, ms);
    return { revision: big(r.header.revision), kvs: r.kvs.map(decodeKv), more: r.more };
  }

  async put(key: string, value: string, options: { lease?: LeaseId } = {}): Promise<PutResult> {
    checkKey(key);
    checkValue(value);
    if (options.lease !== undefined) checkLease(options.lease);
    const ms = await this.afterWatchCreation();
    const r = await this.conn.unary(this.rpcs.put, { key: bytes(key), value: bytes(value), lease: int64(options.lease ?? NO_LEASE), prev_kv: true }, ms);
    return { revision: big(r.header.revision), prev: decodeOptionalKv(r.prev_kv) };
  }

  async delete(key: string, options: { prefix?: boolean } = {}): Promise<DeleteResult> {
    if (options.prefix === true) checkPrefix(key);
    else checkKey(key);
    const ms = await this.afterWatchCreation();
    const request = options.prefix === true ? prefixRange(key) : { key: bytes(key) };
    const r = await this.conn.unary(this.rpcs.deleteRange, request, ms);
    return { revision: big(r.header.revision), deleted: Number(r.deleted) };
  }

  async txn(txn: Txn): Promise<TxnResult> {
    checkTxn(txn);
    const failure = txn.failure ?? [];
    const ms = await this.afterWatchCreation();
    const r = await this.conn.unary(
      this.rpcs.txn,
      { compare: txn.compare.map(encodeCompare), success: txn.success.map(encodeOp), failure: failure.map(encodeOp) },
      ms,
    );
    const ops = r.succeeded ? txn.success : failure;
    if (r.responses.length !== ops.length) {
      throw new CorralError('INTERNAL', `etcd answered a txn of ${ops.length} ops with ${r.responses.length} results`);
    }
    return {
      succeeded: r.succeeded,
      revision: big(r.header.revision),
      results: r.responses.map((res, i) => decodeOpResult(ops[i] as (typeof ops)[number], res)),
    };
  }

  async grantLease(ttlSeconds: number): Promise<LeaseGrant> {
    const ttl = requestedTtl(ttlSeconds);
    const r = await this.conn.unary(this.rpcs.leaseGrant, { TTL: int64(ttl) }, this.timeoutMs);
    if (r.error) throw new CorralError('INTERNAL', `etcd refused a lease of ${ttl} s: ${r.error}`);
    return { id: big(r.ID), ttlSeconds: Number(r.TTL) };
  }

  async keepAlive(id: LeaseId): Promise<{ ttlSeconds: number }> {
    checkLease(id);
    return { ttlSeconds: await this.keepAlives.keepAlive(id, this.keepAliveTimeoutMs) };
  }

  async revokeLease(id: LeaseId): Promise<void> {
    checkLease(id);
    const ms = await this.afterWatchCreation();
    try {
      await this.conn.unary(this.rpcs.leaseRevoke, { ID: int64(id) }, ms);
    } catch (err) {
      if (!(err instanceof CorralError && err.code === 'LEASE_NOT_FOUND')) throw err;
    }
  }

  async leaseStatus(id: LeaseId): Promise<LeaseStatus> {
    checkLease(id);
    const r = await this.conn.unary(this.rpcs.leaseTimeToLive, { ID: int64(id), keys: true }, this.timeoutMs);
    // etcd lists a lease's keys in no particular order; the contract's is key (UTF-8 byte) order.
    const keys = [...r.keys].sort((a, b) => Buffer.compare(a, b)).map(text);
    const truncated = Number(r.TTL);
    if (truncated < 0) return { id, grantedTtlSeconds: 0, remainingSeconds: -1, keys: [] };
    // etcd rounds the time left down to whole seconds (a live lease with 0.7 s left says 0); the
    // contract's remainingSeconds is rounded up, like the embedded store's: floor + 1 is the
    // ceiling except at an exact second, capped at the granted TTL.
    const granted = Number(r.grantedTTL);
    return { id, grantedTtlSeconds: granted, remainingSeconds: Math.min(granted, truncated + 1), keys };
  }

  watch(prefix: string, options: WatchOptions = {}): Watch {
    const w = new EtcdWatch(this.conn, this.rpcs.watch, prefix, options.fromRevision, options.signal, this.clock, this.timeoutMs, (ended) =>
      this.watches.delete(ended),
    );
    if (w.ended) return w;
    this.watches.add(w);
    if (options.fromRevision === undefined || options.fromRevision <= 0n) {
      const created = w.created;
      this.creating.add(created);
      void created.then(() => this.creating.delete(created));
    }
    return w;
  }

  async revision(): Promise<Revision> {
    const ms = await this.afterWatchCreation();
    // A linearizable count of one key: the cheapest read that returns the current revision.
    const r = await this.conn.unary(this.rpcs.range, { key: Buffer.from([0]), count_only: true }, ms);
    return big(r.header.revision);
  }

  async close(): Promise<void> {
    if (this.conn.isClosed) return;
    for (const w of [...this.watches]) w.close();
    this.keepAlives.close(this.conn.closedError());
    this.conn.close();
    await Promise.resolve();
  }

  /**
   * A default watch starts after the revision current when etcd creates it; a request made after
   * watch() returned must not reach etcd before that, or its write could precede the watch's start.
   * Costs nothing when no watch is being created. Returns the time left for the request itself:
   * waiting counts against its deadline, so a request never takes longer than requestTimeoutMs.
   */
  private async afterWatchCreation(): Promise<number> {
    if (this.creating.size === 0) return this.timeoutMs;
    const started = this.clock.now();
    let timer: Timer | undefined;
    await Promise.race([Promise.all(this.creating), new Promise<void>((resolve) => (timer = this.clock.setTimer(this.timeoutMs, resolve)))]);
    timer?.cancel();
    return Math.max(1, this.timeoutMs - (this.clock.now() - started));
  }
}
