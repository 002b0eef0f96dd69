// A Store seen through a key prefix: every key is stored as PREFIX + key and handed back without
// it, so several clusters (or other software) can share one etcd without seeing each other's keys.

import type {
  Compare,
  DeleteResult,
  GetResult,
  KeyValue,
  LeaseGrant,
  LeaseId,
  LeaseStatus,
  PutResult,
  RangeResult,
  Revision,
  Store,
  Txn,
  TxnOp,
  TxnOpResult,
  TxnResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from './store.js';

export class PrefixedStore implements Store {
  constructor(
    private readonly inner: Store,
    readonly prefix: string,
  ) {}

  /** An empty key stays empty so the inner store refuses it, exactly as it would unprefixed. */
  private in(key: string): string {
    return key === '' ? '' : this.prefix + key;
  }

  private inPrefix(prefix: string): string {
    return this.prefix + prefix;
  }

  private out(kv: KeyValue): KeyValue {
    return { ...kv, key: kv.key.slice(this.prefix.length) };
  }

  private outOpt(kv: KeyValue | undefined): KeyValue | undefined {
    return kv ? this.out(kv) : undefined;
  }

  private op(op: TxnOp): TxnOp {
    if (op.type === 'range') return { ...op, prefix: this.inPrefix(op.prefix) };
    if (op.type === 'delete' && op.prefix) return { ...op, key: this.inPrefix(op.key) };
    return { ...op, key: this.in(op.key) };
  }

  private result(r: TxnOpResult): TxnOpResult {
    switch (r.type) {
      case 'put':
        return { type: 'put', prev: this.outOpt(r.prev) };
      case 'get':
        return { type: 'get', kv: this.outOpt(r.kv) };
      case 'range':
        return { type: 'range', kvs: r.kvs.map((kv) => this.out(kv)), more: r.more };
      case 'delete':
        return r;
    }
  }

  async get(key: string): Promise<GetResult> {
    const r = await this.inner.get(this.in(key));
    return { revision: r.revision, kv: this.outOpt(r.kv) };
  }

  async range(prefix: string, options?: { limit?: number }): Promise<RangeResult> {
    const r = await this.inner.range(this.inPrefix(prefix), options);
    return { revision: r.revision, kvs: r.kvs.map((kv) => this.out(kv)), more: r.more };
  }

  async put(key: string, value: string, options?: { lease?: LeaseId }): Promise<PutResult> {
    const r = await this.inner.put(this.in(key), value, options);
    return { revision: r.revision, prev: this.outOpt(r.prev) };
  }

  delete(key: string, options?: { prefix?: boolean }): Promise<DeleteResult> {
    return this.inner.delete(options?.prefix ? this.inPrefix(key) : this.in(key), options);
  }

  async txn(txn: Txn): Promise<TxnResult> {
    const r = await this.inner.txn({
      compare: txn.compare.map((c): Compare => ({ ...c, key: this.in(c.key) })),
      success: txn.success.map((op) => this.op(op)),
      ...(txn.failure ? { failure: txn.failure.map((op) => this.op(op)) } : {}),
    });
    return { succeeded: r.succeeded, revision: r.revision, results: r.results.map((x) => this.result(x)) };
  }

  grantLease(ttlSeconds: number): Promise<LeaseGrant> {
    return this.inner.grantLease(ttlSeconds);
  }

  keepAlive(id: LeaseId): Promise<{ ttlSeconds: number }> {
    return this.inner.keepAlive(id);
  }

  revokeLease(id: LeaseId): Promise<void> {
    return this.inner.revokeLease(id);
  }

  async leaseStatus(id: LeaseId): Promise<LeaseStatus> {
    const s = await this.inner.leaseStatus(id);
    return { ...s, keys: s.keys.filter((k) => k.startsWith(this.prefix)).map((k) => k.slice(this.prefix.length)) };
  }

  watch(prefix: string, options?: WatchOptions): Watch {
    const inner = this.inner.watch(this.inPrefix(prefix), options);
    const out = (e: WatchEvent): WatchEvent => ({ ...e, kv: this.out(e.kv) });
    return {
      close: () => inner.close(),
      async *[Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
        for await (const event of inner) yield out(event);
      },
    };
  }

  revision(): Promise<Revision> {
    return this.inner.revision();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
