// The store's state machine: keys, revisions and leases in memory, changed only by journal records.
// It is pure and deterministic (no clock, no I/O): replaying the same records from the same snapshot
// yields the same state, which is what makes recovery, and a replicated log later, possible.
// Lease deadlines are not state: they live in leases.ts, because after a restart every lease gets a
// fresh TTL anyway.

import type { KeyValue, LeaseId, Revision, WatchEvent } from '../store.js';
import { compareKeys } from './key-order.js';
import type { JournalRecord, Mutation } from './records.js';
import { SortedKeySet } from './sorted-keys.js';

export interface LeaseEntry {
  readonly id: LeaseId;
  readonly ttlSeconds: number;
  readonly keys: Set<string>;
}

/** A consistent image of the state at `seq`, what a snapshot file holds. */
export interface StateImage {
  seq: number;
  revision: Revision;
  leaseHighWater: LeaseId;
  kvs: KeyValue[];
  leases: { id: LeaseId; ttlSeconds: number }[];
}

/** A record that does not fit the state it is applied to: the journal is inconsistent. */
export class ReplayError extends Error {
  override name = 'ReplayError';
}

export class StoreState {
  /** Sequence number of the last applied record (every record, including lease grants). */
  seq = 0;
  /** The etcd-style revision: bumped once by every record that changes a key. */
  revision: Revision = 0n;
  /** The highest lease id ever granted; ids are never reused, even across restarts. */
  leaseHighWater: LeaseId = 0n;
  private readonly kvs = new Map<string, KeyValue>();
  private readonly index = new SortedKeySet();
  private readonly leases = new Map<LeaseId, LeaseEntry>();

  get keyCount(): number {
    return this.kvs.size;
  }

  get leaseCount(): number {
    return this.leases.size;
  }

  get(key: string): KeyValue | undefined {
    return this.kvs.get(key);
  }

  /** Keys under `prefix` in key order; `limit` 0 means no limit. */
  range(prefix: string, limit = 0): { kvs: KeyValue[]; more: boolean } {
    const kvs: KeyValue[] = [];
    for (const key of this.index.from(prefix)) {
      if (!key.startsWith(prefix)) break;
      if (limit > 0 && kvs.length === limit) return { kvs, more: true };
      kvs.push(this.kvs.get(key) as KeyValue);
    }
    return { kvs, more: false };
  }

  lease(id: LeaseId): LeaseEntry | undefined {
    return this.leases.get(id);
  }

  leaseIds(): LeaseId[] {
    return [...this.leases.keys()];
  }

  /** Keys attached to a lease, in key order. */
  leaseKeys(id: LeaseId): string[] {
    return [...(this.leases.get(id)?.keys ?? [])].sort(compareKeys);
  }

  /** Starts a write at the next revision; its reads see its own earlier writes, as in etcd. */
  beginTxn(): WriteTxn {
    return new WriteTxn(this);
  }

  /** Applies a record read back from the journal; returns the watch events it produces. */
  apply(record: JournalRecord): WatchEvent[] {
    if (record.seq !== this.seq + 1) {
      throw new ReplayError(`record ${record.seq} does not follow record ${this.seq}`);
    }
    switch (record.type) {
      case 'txn':
        return this.replayTxn(record);
      case 'grant':
        this.applyGrant(record.id, record.ttl);
        this.seq = record.seq;
        return [];
      case 'revoke':
        return this.applyRevoke(record.id, record.seq);
    }
  }

  /** Builds the record for a lease grant and applies it. */
  grant(ttlSeconds: number): JournalRecord & { type: 'grant' } {
    const record = { seq: this.seq + 1, type: 'grant' as const, id: this.leaseHighWater + 1n, ttl: ttlSeconds };
    this.apply(record);
    return record;
  }

  /** Builds the record for a revoke and applies it; undefined when the lease does not exist. */
  revoke(id: LeaseId): { record: JournalRecord; events: WatchEvent[] } | undefined {
    if (!this.leases.has(id)) return undefined;
    const record = { seq: this.seq + 1, type: 'revoke' as const, id };
    return { record, events: this.apply(record) };
  }

  image(): StateImage {
    const kvs: KeyValue[] = [];
    for (const key of this.index.from('')) kvs.push(this.kvs.get(key) as KeyValue);
    const leases = [...this.leases.values()]
      .map((l) => ({ id: l.id, ttlSeconds: l.ttlSeconds }))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
    return { seq: this.seq, revision: this.revision, leaseHighWater: this.leaseHighWater, kvs, leases };
  }

  static fromImage(image: StateImage): StoreState {
    const state = new StoreState();
    state.seq = image.seq;
    state.revision = image.revision;
    state.leaseHighWater = image.leaseHighWater;
    for (const l of image.leases) state.leases.set(l.id, { id: l.id, ttlSeconds: l.ttlSeconds, keys: new Set() });
    for (const kv of image.kvs) {
      if (kv.lease !== 0n) state.leaseOrThrow(kv.lease).keys.add(kv.key);
      state.kvs.set(kv.key, Object.freeze({ ...kv }));
      state.index.add(kv.key);
    }
    return state;
  }

  // --- transitions; called only by WriteTxn and apply() so that live writes and replay share them.

  /** Puts a key at `rev`; returns the previous value. */
  putKey(rev: Revision, m: Mutation & { op: 'put' }, events: WatchEvent[]): KeyValue | undefined {
    const prev = this.kvs.get(m.key);
    if (m.lease !== 0n) this.leaseOrThrow(m.lease).keys.add(m.key);
    if (prev !== undefined && prev.lease !== 0n && prev.lease !== m.lease) this.leases.get(prev.lease)?.keys.delete(m.key);
    const kv: KeyValue = Object.freeze({
      key: m.key,
      value: m.value,
      createRevision: prev?.createRevision ?? rev,
      modRevision: rev,
      version: (prev?.version ?? 0n) + 1n,
      lease: m.lease,
    });
    this.kvs.set(m.key, kv);
    if (prev === undefined) this.index.add(m.key);
    events.push(Object.freeze({ type: 'put', kv, revision: rev }));
    return prev;
  }

  /** Deletes a key at `rev`; returns whether it existed. */
  deleteKey(rev: Revision, key: string, events: WatchEvent[]): boolean {
    const prev = this.kvs.get(key);
    if (prev === undefined) return false;
    this.kvs.delete(key);
    this.index.delete(key);
    if (prev.lease !== 0n) this.leases.get(prev.lease)?.keys.delete(key);
    // etcd's delete event carries only the key and the deleting revision.
    const kv: KeyValue = Object.freeze({ key, value: '', createRevision: 0n, modRevision: rev, version: 0n, lease: 0n });
    events.push(Object.freeze({ type: 'delete', kv, revision: rev }));
    return true;
  }

  /** Deletes every key under a prefix at `rev`, in key order; returns how many. */
  deletePrefix(rev: Revision, prefix: string, events: WatchEvent[]): number {
    const keys: string[] = [];
    for (const key of this.index.from(prefix)) {
      if (!key.startsWith(prefix)) break;
      keys.push(key);
    }
    for (const key of keys) this.deleteKey(rev, key, events);
    return keys.length;
  }

  /** Called by WriteTxn.commit: the write becomes the current revision. */
  finishTxn(seq: number, rev: Revision): void {
    this.seq = seq;
    this.revision = rev;
  }

  private replayTxn(record: JournalRecord & { type: 'txn' }): WatchEvent[] {
    if (record.rev !== this.revision + 1n) {
      throw new ReplayError(`record ${record.seq} writes revision ${record.rev} after revision ${this.revision}`);
    }
    const txn = this.beginTxn();
    for (const m of record.muts) txn.replay(m);
    const done = txn.commit();
    if (done.record === undefined) throw new ReplayError(`record ${record.seq} changes nothing`);
    return done.events;
  }

  private applyGrant(id: LeaseId, ttlSeconds: number): void {
    if (id <= this.leaseHighWater) throw new ReplayError(`lease ${id} was already granted`);
    this.leaseHighWater = id;
    this.leases.set(id, { id, ttlSeconds, keys: new Set() });
  }

  private applyRevoke(id: LeaseId, seq: number): WatchEvent[] {
    if (!this.leases.has(id)) throw new ReplayError(`record ${seq} revokes unknown lease ${id}`);
    const rev = this.revision + 1n;
    const events: WatchEvent[] = [];
    for (const key of this.leaseKeys(id)) this.deleteKey(rev, key, events);
    this.leases.delete(id);
    this.seq = seq;
    if (events.length > 0) this.revision = rev;
    return events;
  }

  private leaseOrThrow(id: LeaseId): LeaseEntry {
    const lease = this.leases.get(id);
    if (lease === undefined) throw new ReplayError(`lease ${id} does not exist`);
    return lease;
  }
}

/**
 * One write in progress at revision `rev`. It mutates the state as it goes (so later reads in the
 * same transaction see earlier writes) and must be committed synchronously: callers validate
 * everything before the first write, because there is no rollback.
 */
export class WriteTxn {
  readonly rev: Revision;
  private readonly muts: Mutation[] = [];
  private readonly events: WatchEvent[] = [];

  constructor(private readonly state: StoreState) {
    this.rev = state.revision + 1n;
  }

  get(key: string): KeyValue | undefined {
    return this.state.get(key);
  }

  range(prefix: string, limit?: number): { kvs: KeyValue[]; more: boolean } {
    return this.state.range(prefix, limit);
  }

  put(key: string, value: string, lease: LeaseId): KeyValue | undefined {
    const m = { op: 'put' as const, key, value, lease };
    const prev = this.state.putKey(this.rev, m, this.events);
    this.muts.push(m);
    return prev;
  }

  delete(key: string): number {
    if (!this.state.deleteKey(this.rev, key, this.events)) return 0;
    this.muts.push({ op: 'del', key });
    return 1;
  }

  deletePrefix(prefix: string): number {
    const n = this.state.deletePrefix(this.rev, prefix, this.events);
    if (n > 0) this.muts.push({ op: 'delp', prefix });
    return n;
  }

  /** Re-applies a recorded mutation; a recorded delete must delete something. */
  replay(m: Mutation): void {
    switch (m.op) {
      case 'put':
        this.put(m.key, m.value, m.lease);
        return;
      case 'del':
        if (this.delete(m.key) === 0) throw new ReplayError(`recorded delete of missing key ${JSON.stringify(m.key)}`);
        return;
      case 'delp':
        if (this.deletePrefix(m.prefix) === 0) throw new ReplayError(`recorded delete of empty prefix ${JSON.stringify(m.prefix)}`);
        return;
    }
  }

  /** Ends the write; a write that changed nothing produces no record and keeps the revision. */
  commit(): { record: (JournalRecord & { type: 'txn' }) | undefined; events: WatchEvent[] } {
    if (this.muts.length === 0) return { record: undefined, events: [] };
    const record = { seq: this.state.seq + 1, type: 'txn' as const, rev: this.rev, muts: this.muts };
    this.state.finishTxn(record.seq, this.rev);
    return { record, events: this.events };
  }
}
