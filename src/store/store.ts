// The Store contract, after etcd's v3 data model. Every recipe in src/coord is written against this
// interface only, so the embedded store, the remote (agent-hosted) store and etcd are interchangeable.
//
// Revisions and lease ids are 64-bit: they are bigint everywhere and decimal strings on the wire.
// Keys and values are UTF-8 strings.

export type Revision = bigint;
export type LeaseId = bigint;

/** No lease: a key that is not attached to one. */
export const NO_LEASE: LeaseId = 0n;

export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the write that created the key (since its last deletion). */
  createRevision: Revision;
  /** Revision of the last write to the key. */
  modRevision: Revision;
  /** Number of writes since the key was created; 1 after the creating put. */
  version: bigint;
  /** The lease the key is attached to, or NO_LEASE. */
  lease: LeaseId;
}

export interface GetResult {
  /** The store's revision when the read was served. */
  revision: Revision;
  kv: KeyValue | undefined;
}

export interface RangeResult {
  revision: Revision;
  kvs: KeyValue[];
  /** True when `limit` cut the result short. */
  more: boolean;
}

export interface PutResult {
  revision: Revision;
  prev: KeyValue | undefined;
}

export interface DeleteResult {
  revision: Revision;
  deleted: number;
}

export type CompareTarget = 'value' | 'version' | 'createRevision' | 'modRevision' | 'lease';
export type CompareOp = '=' | '!=' | '<' | '>';

/**
 * A compare on one key. For a key that does not exist, version, createRevision, modRevision and
 * lease are 0 and a value compare is false (as in etcd).
 */
export type Compare =
  | { key: string; target: 'value'; op: CompareOp; value: string }
  | { key: string; target: 'version' | 'createRevision' | 'modRevision' | 'lease'; op: CompareOp; value: bigint };

export type TxnOp =
  | { type: 'put'; key: string; value: string; lease?: LeaseId }
  | { type: 'delete'; key: string; prefix?: boolean }
  | { type: 'get'; key: string }
  | { type: 'range'; prefix: string; limit?: number };

export type TxnOpResult =
  | { type: 'put'; prev: KeyValue | undefined }
  | { type: 'delete'; deleted: number }
  | { type: 'get'; kv: KeyValue | undefined }
  | { type: 'range'; kvs: KeyValue[]; more: boolean };

/**
 * A transaction: if every compare holds, the success ops run, else the failure ops, in order and at
 * one revision; a read in a branch sees that branch's earlier writes (as in etcd). As in etcd, a
 * branch may not put one key twice nor put a key it also deletes: such a txn fails with BAD_REQUEST.
 */
export interface Txn {
  compare: Compare[];
  success: TxnOp[];
  failure?: TxnOp[];
}

export interface TxnResult {
  succeeded: boolean;
  /** The store's revision after the transaction (incremented once if it wrote anything). */
  revision: Revision;
  results: TxnOpResult[];
}

export interface LeaseGrant {
  id: LeaseId;
  /** The TTL the store granted; a backend may round a requested TTL up (etcd: whole seconds, a minimum). */
  ttlSeconds: number;
}

export interface LeaseStatus {
  id: LeaseId;
  grantedTtlSeconds: number;
  /** Seconds left before expiry as the store sees it; -1 (and grantedTtlSeconds 0) when the lease does not exist. */
  remainingSeconds: number;
  keys: string[];
}

export type WatchEventType = 'put' | 'delete';

export interface WatchEvent {
  type: WatchEventType;
  /**
   * For a delete, `value` is '' and `modRevision` is the deleting revision; createRevision, version
   * and lease are 0 (as etcd reports a delete).
   */
  kv: KeyValue;
  /** The revision of the write that produced the event (equal to kv.modRevision). */
  revision: Revision;
}

export interface WatchOptions {
  /** First revision to deliver (inclusive). Default: the revision after the current one. */
  fromRevision?: Revision;
  signal?: AbortSignal;
}

/**
 * An ordered stream of events for keys under a prefix, in revision order, never skipping an event.
 * Iteration ends when close() is called or the signal aborts; it throws CorralError COMPACTED when
 * fromRevision is older than the history kept, and STORE_UNAVAILABLE when the store goes away.
 */
export interface Watch extends AsyncIterable<WatchEvent> {
  close(): void;
}

export interface Store {
  get(key: string): Promise<GetResult>;
  /** Keys that start with `prefix`, in key order. */
  range(prefix: string, options?: { limit?: number }): Promise<RangeResult>;
  put(key: string, value: string, options?: { lease?: LeaseId }): Promise<PutResult>;
  /** Deletes one key, or every key that starts with it when `prefix` is true. */
  delete(key: string, options?: { prefix?: boolean }): Promise<DeleteResult>;
  txn(txn: Txn): Promise<TxnResult>;

  grantLease(ttlSeconds: number): Promise<LeaseGrant>;
  /** Renews a lease to its full TTL. Throws CorralError LEASE_NOT_FOUND when it is gone. */
  keepAlive(id: LeaseId): Promise<{ ttlSeconds: number }>;
  /** Revokes a lease and deletes its keys. Revoking an unknown lease is not an error. */
  revokeLease(id: LeaseId): Promise<void>;
  leaseStatus(id: LeaseId): Promise<LeaseStatus>;

  watch(prefix: string, options?: WatchOptions): Watch;

  /** The current revision (a linearizable read). */
  revision(): Promise<Revision>;

  /** Ends open watches; later calls fail with STORE_UNAVAILABLE. Idempotent. */
  close(): Promise<void>;
}

/**
 * What the contract lets backends differ on, stated once (not special-cased in recipes).
 */
export interface StoreTraits {
  /** After a lease's TTL has passed without keepalive, its keys vanish within this many ms. */
  leaseExpirySlackMs: number;
  /** The smallest TTL the backend grants; smaller requests are rounded up. */
  minLeaseTtlSeconds: number;
}
