// The embedded coordination store: the state machine in memory, every change a journal record.
//
// A request runs synchronously against the state (so concurrent requests are totally ordered and
// later ones see earlier ones), then waits until the journal holds everything it has seen durably:
// its own record for a write, the current tail for a read. Nothing a crash could undo is ever
// revealed, so no revision or lease id is ever handed out twice.

import { mkdir } from 'node:fs/promises';
import { CorralError } from '../../api/errors.js';
import { systemClock, type Clock } from '../../util/clock.js';
import { nullLogger, type Logger } from '../../util/log.js';
import {
  NO_LEASE,
  type DeleteResult,
  type GetResult,
  type LeaseGrant,
  type LeaseId,
  type LeaseStatus,
  type PutResult,
  type RangeResult,
  type Revision,
  type Store,
  type StoreTraits,
  type Txn,
  type TxnOp,
  type TxnOpResult,
  type TxnResult,
  type Watch,
  type WatchEvent,
  type WatchOptions,
} from '../store.js';
import { acquireDirLock, type DirLock } from './dir-lock.js';
import { frame } from './framing.js';
import { Journal, recoverJournal, type JournalCounters } from './journal.js';
import { LeaseDeadlines } from './leases.js';
import { decodeRecord, encodeRecord, type JournalRecord } from './records.js';
import { loadNewestSnapshot, removeSnapshotsBefore, removeTempFiles, writeSnapshot } from './snapshot.js';
import { StoreState, type StateImage, type WriteTxn } from './state.js';
import {
  checkKey,
  checkLease,
  checkLimit,
  checkPrefix,
  checkTxn,
  checkValue,
  checkWriteSize,
  compareHolds,
  grantedTtl,
  leaseNotFound,
} from './validate.js';
import { WatchHub, type WatchHubStats } from './watch-hub.js';

export interface EmbeddedStoreOptions {
  dataDir: string;
  clock?: Clock;
  logger?: Logger;
  /** Write a snapshot (and start a new journal segment) after this many records. Default 10,000. */
  snapshotEveryRecords?: number;
  /** Watch events kept in memory for watches that start in the past. Default 20,000. */
  historyLimit?: number;
  /** Write a lone writer's records synchronously (journal.ts). Default true. */
  syncLoneWrites?: boolean;
  /** A synchronous write slower than this pauses them (journal.ts). Default 20 ms. */
  slowSyncMs?: number;
}

export interface EmbeddedStoreStats extends JournalCounters, WatchHubStats {
  revision: Revision;
  /** Snapshots written since open. */
  snapshots: number;
  keys: number;
  leases: number;
}

/** How the embedded store differs from other backends, for the contract suite and recipes. */
export const embeddedStoreTraits: StoreTraits = {
  // Expiry timers fire within a few ms; the slack covers a busy event loop and the journal write.
  leaseExpirySlackMs: 250,
  minLeaseTtlSeconds: 1,
};

const DEFAULT_SNAPSHOT_EVERY = 10_000;
const DEFAULT_HISTORY_LIMIT = 20_000;

export async function openEmbeddedStore(opts: EmbeddedStoreOptions): Promise<EmbeddedStore> {
  const clock = opts.clock ?? systemClock;
  const logger = (opts.logger ?? nullLogger).child({ component: 'store', dataDir: opts.dataDir });
  try {
    await mkdir(opts.dataDir, { recursive: true });
    const lock = await acquireDirLock(opts.dataDir, logger);
    try {
      return await recover({ ...opts, clock, logger, lock });
    } catch (err) {
      await lock.release();
      throw err;
    }
  } catch (err) {
    if (err instanceof CorralError) throw err;
    // File-system errors (EACCES, ENOSPC, EROFS...) become one line that says where.
    throw new CorralError(
      'STORE_UNAVAILABLE',
      `cannot open the store in ${opts.dataDir}: ${(err as Error).message}; check that the directory is writable and the disk has space`,
      { cause: err },
    );
  }
}

interface Parts {
  dataDir: string;
  clock: Clock;
  logger: Logger;
  lock: DirLock;
  state: StoreState;
  hub: WatchHub;
  journal: Journal;
  snapshotEvery: number;
  recordsSinceSnapshot: number;
}

async function recover(opts: EmbeddedStoreOptions & { clock: Clock; logger: Logger; lock: DirLock }): Promise<EmbeddedStore> {
  const { dataDir, logger } = opts;
  await removeTempFiles(dataDir);
  const snapshot = await loadNewestSnapshot(dataDir);
  const state = snapshot === undefined ? new StoreState() : StoreState.fromImage(snapshot.image);
  const hub = new WatchHub(opts.historyLimit ?? DEFAULT_HISTORY_LIMIT, state.revision + 1n);
  const snapshotSeq = state.seq;
  let replayed = 0;
  const recovered = await recoverJournal({
    dir: dataDir,
    logger,
    onFrame: (payload) => {
      const record = decodeRecord(payload);
      if (record.seq <= snapshotSeq) return; // already in the snapshot
      hub.append(state.apply(record));
      replayed++;
    },
  });
  hub.release(state.revision);
  // The journal reports a failure to the store, which does not exist yet while it opens.
  const owner: { store?: EmbeddedStore } = {};
  const journal = await Journal.open({
    dir: dataDir,
    logger,
    recovered,
    nextSeq: state.seq + 1,
    onDurable: (revision) => hub.release(revision),
    onFailure: (err) => owner.store?.stopServing(err),
    ...(opts.syncLoneWrites === undefined ? {} : { syncLoneWrites: opts.syncLoneWrites }),
    ...(opts.slowSyncMs === undefined ? {} : { slowSyncMs: opts.slowSyncMs }),
  });
  logger.info(
    { revision: state.revision.toString(), snapshot: snapshot?.path, replayed, keys: state.keyCount, leases: state.leaseCount },
    'store recovered',
  );
  const snapshotEvery = Math.max(1, opts.snapshotEveryRecords ?? DEFAULT_SNAPSHOT_EVERY);
  owner.store = new EmbeddedStore({ ...opts, state, hub, journal, snapshotEvery, recordsSinceSnapshot: replayed });
  return owner.store;
}

export class EmbeddedStore implements Store {
  private readonly state: StoreState;
  private readonly hub: WatchHub;
  private readonly journal: Journal;
  private readonly deadlines: LeaseDeadlines;
  private readonly logger: Logger;
  private closing: Promise<void> | undefined;
  private failure: CorralError | undefined;
  private snapshotTask: Promise<void> | undefined;
  private recordsSinceSnapshot: number;
  private snapshots = 0;

  /** Use openEmbeddedStore(). */
  constructor(private readonly parts: Parts) {
    this.state = parts.state;
    this.hub = parts.hub;
    this.journal = parts.journal;
    this.logger = parts.logger;
    this.recordsSinceSnapshot = parts.recordsSinceSnapshot;
    this.deadlines = new LeaseDeadlines(parts.clock, (id) => this.expire(id));
    // A restart gives every lease a fresh full TTL (as etcd does): its holder may be alive and
    // renewing, and the outage must not count against it.
    for (const id of this.state.leaseIds()) this.deadlines.renew(id, this.state.lease(id)?.ttlSeconds ?? 1);
  }

  get dataDir(): string {
    return this.parts.dataDir;
  }

  stats(): EmbeddedStoreStats {
    return {
      ...this.journal.stats(),
      ...this.hub.stats(),
      revision: this.state.revision,
      snapshots: this.snapshots,
      keys: this.state.keyCount,
      leases: this.state.leaseCount,
    };
  }

  async get(key: string): Promise<GetResult> {
    this.checkServing();
    checkKey(key);
    const result = { revision: this.state.revision, kv: this.state.get(key) };
    await this.settled();
    return result;
  }

  async range(prefix: string, options?: { limit?: number }): Promise<RangeResult> {
    this.checkServing();
    checkPrefix(prefix);
    checkLimit(options?.limit);
    const result = { revision: this.state.revision, ...this.state.range(prefix, options?.limit) };
    await this.settled();
    return result;
  }

  async put(key: string, value: string, options?: { lease?: LeaseId }): Promise<PutResult> {
    this.checkServing();
    checkKey(key);
    checkValue(value);
    const lease = options?.lease ?? NO_LEASE;
    checkLease(lease);
    checkWriteSize([key, value]);
    if (lease !== NO_LEASE && this.state.lease(lease) === undefined) return this.refuse(leaseNotFound(lease));
    const txn = this.state.beginTxn();
    const prev = txn.put(key, value, lease);
    return { revision: await this.commit(txn), prev };
  }

  async delete(key: string, options?: { prefix?: boolean }): Promise<DeleteResult> {
    this.checkServing();
    const prefix = options?.prefix === true;
    if (prefix) checkPrefix(key);
    else checkKey(key);
    const txn = this.state.beginTxn();
    const deleted = prefix ? txn.deletePrefix(key) : txn.delete(key);
    return { revision: await this.commit(txn), deleted };
  }

  async txn(txn: Txn): Promise<TxnResult> {
    this.checkServing();
    checkTxn(txn);
    const succeeded = txn.compare.every((c) => compareHolds(this.state.get(c.key), c));
    const ops = succeeded ? txn.success : (txn.failure ?? []);
    for (const op of ops) {
      if (op.type === 'put' && op.lease !== undefined && op.lease !== NO_LEASE && this.state.lease(op.lease) === undefined) {
        return this.refuse(leaseNotFound(op.lease));
      }
    }
    const write = this.state.beginTxn();
    const results = ops.map((op) => execute(write, op));
    return { succeeded, revision: await this.commit(write), results };
  }

  async grantLease(ttlSeconds: number): Promise<LeaseGrant> {
    this.checkServing();
    const ttl = grantedTtl(ttlSeconds, embeddedStoreTraits.minLeaseTtlSeconds);
    const record = this.state.grant(ttl);
    this.deadlines.renew(record.id, ttl);
    await this.persist(record, []);
    return { id: record.id, ttlSeconds: ttl };
  }

  async keepAlive(id: LeaseId): Promise<{ ttlSeconds: number }> {
    this.checkServing();
    checkLease(id);
    const lease = this.state.lease(id);
    if (lease === undefined) return this.refuse(leaseNotFound(id));
    this.deadlines.renew(id, lease.ttlSeconds);
    await this.settled();
    return { ttlSeconds: lease.ttlSeconds };
  }

  async revokeLease(id: LeaseId): Promise<void> {
    this.checkServing();
    checkLease(id);
    const revoked = this.state.revoke(id);
    if (revoked === undefined) return this.settled();
    this.deadlines.forget(id);
    await this.persist(revoked.record, revoked.events);
  }

  async leaseStatus(id: LeaseId): Promise<LeaseStatus> {
    this.checkServing();
    checkLease(id);
    const lease = this.state.lease(id);
    const remainingMs = lease === undefined ? undefined : this.deadlines.remainingMs(id);
    const status: LeaseStatus =
      lease === undefined || remainingMs === undefined
        ? { id, grantedTtlSeconds: 0, remainingSeconds: -1, keys: [] }
        : { id, grantedTtlSeconds: lease.ttlSeconds, remainingSeconds: Math.ceil(remainingMs / 1000), keys: this.state.leaseKeys(id) };
    await this.settled();
    return status;
  }

  watch(prefix: string, options?: WatchOptions): Watch {
    checkPrefix(prefix);
    const from = options?.fromRevision;
    if (from !== undefined && typeof from !== 'bigint') throw new CorralError('BAD_REQUEST', 'fromRevision must be a bigint');
    const refusal = this.failure ?? (this.closing === undefined ? undefined : this.closedError());
    return this.hub.open(prefix, from, this.state.revision, options?.signal, refusal);
  }

  async revision(): Promise<Revision> {
    this.checkServing();
    const revision = this.state.revision;
    await this.settled();
    return revision;
  }

  /** Flushes the journal, waits for a snapshot in progress, stops timers and releases the lock. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /** Called when the journal cannot be written: nothing more may be acknowledged. */
  stopServing(err: CorralError): void {
    this.failure ??= err;
    this.deadlines.close();
    this.hub.fail(this.failure);
  }

  private async shutdown(): Promise<void> {
    this.deadlines.close();
    await this.journal.whenDurable().catch(() => undefined);
    await this.snapshotTask;
    await this.journal.close();
    this.hub.fail(this.closedError());
    await this.parts.lock.release();
    this.logger.debug({ revision: this.state.revision.toString() }, 'store closed');
  }

  private checkServing(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closing !== undefined) throw this.closedError();
  }

  private closedError(): CorralError {
    return new CorralError('STORE_UNAVAILABLE', `the store at ${this.dataDir} is closed`);
  }

  /** Waits until everything this request may have seen is durable. */
  private settled(): Promise<void> {
    return this.journal.idle ? Promise.resolve() : this.journal.whenDurable();
  }

  /** Throws `err`, but only after what the caller saw is durable (an error reveals state too). */
  private async refuse(err: CorralError): Promise<never> {
    await this.settled();
    throw err;
  }

  private async commit(txn: WriteTxn): Promise<Revision> {
    const { record, events } = txn.commit();
    const revision = this.state.revision;
    if (record === undefined) await this.settled();
    else await this.persist(record, events);
    return revision;
  }

  private persist(record: JournalRecord, events: WatchEvent[]): Promise<void> {
    const done = this.journal.append(frame(Buffer.from(encodeRecord(record), 'utf8')), this.state.revision);
    if (events.length > 0) this.hub.append(events);
    if (++this.recordsSinceSnapshot >= this.parts.snapshotEvery && this.snapshotTask === undefined) this.startSnapshot();
    return done;
  }

  // Captures the state now (records appended later go to the next segment) and writes it in the
  // background; the journal segments it covers are removed only once it is durable.
  private startSnapshot(): void {
    this.recordsSinceSnapshot = 0;
    const image = this.state.image();
    const rotated = this.journal.rotate(image.seq + 1);
    this.snapshotTask = this.writeSnapshot(image, rotated)
      .catch((err: unknown) => this.logger.error({ err }, `snapshot at record ${image.seq} failed; the journal still has everything`))
      .finally(() => {
        this.snapshotTask = undefined;
      });
  }

  private async writeSnapshot(image: StateImage, rotated: Promise<void>): Promise<void> {
    await rotated;
    const path = await writeSnapshot(this.dataDir, image);
    await this.journal.removeSegmentsBefore(image.seq + 1);
    await removeSnapshotsBefore(this.dataDir, image.seq);
    this.snapshots++;
    this.logger.debug({ file: path, seq: image.seq, revision: image.revision.toString() }, 'snapshot written');
  }

  private expire(id: LeaseId): void {
    if (this.failure !== undefined || this.closing !== undefined) return;
    const revoked = this.state.revoke(id);
    if (revoked === undefined) return;
    this.logger.debug({ lease: id.toString(), keys: revoked.events.length }, 'lease expired');
    // A failed write stops the store (stopServing); there is no caller to tell.
    this.persist(revoked.record, revoked.events).catch(() => undefined);
  }
}

function execute(write: WriteTxn, op: TxnOp): TxnOpResult {
  switch (op.type) {
    case 'put':
      return { type: 'put', prev: write.put(op.key, op.value, op.lease ?? NO_LEASE) };
    case 'delete':
      return { type: 'delete', deleted: op.prefix === true ? write.deletePrefix(op.key) : write.delete(op.key) };
    case 'get':
      return { type: 'get', kv: write.get(op.key) };
    case 'range':
      return { type: 'range', ...write.range(op.prefix, op.limit) };
  }
}

