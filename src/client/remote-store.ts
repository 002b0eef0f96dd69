// The Store contract over the authenticated transport: how agents that are not the coordinator
// (and tools) reach the embedded store hosted by the coordinator's agent.

import { CorralError, isCorralError } from '../api/errors.js';
import {
  decodeEvent,
  decodeKv,
  decodeOptionalKv,
  decodeTxnResult,
  encodeTxn,
  STORE_PATHS,
  type WireKeyValue,
  type WireTxnResult,
  type WireWatchEvent,
} from '../api/store-wire.js';
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
  Txn,
  TxnResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from '../store/store.js';
import type { RpcClient } from '../transport/client.js';

export class RemoteStore implements Store {
  constructor(
    private readonly rpc: RpcClient,
    /** Names the store's host in errors, e.g. 'coordinator n1 (127.0.0.1:7401)'. */
    private readonly description: string,
    private readonly options: {
      ownsClient?: boolean;
      /** Deadline of a keepalive (shorter than other calls: a session counts on it). */
      keepAliveTimeoutMs?: number;
    } = {},
  ) {}

  private unavailable(err: unknown): unknown {
    if (isCorralError(err, 'UNAVAILABLE') || isCorralError(err, 'TIMEOUT') || isCorralError(err, 'SHUTTING_DOWN')) {
      return new CorralError('STORE_UNAVAILABLE', `the store on ${this.description} is unavailable: ${err.message}`, { cause: err });
    }
    return err;
  }

  private async call<T>(path: string, body: unknown, timeoutMs?: number): Promise<T> {
    try {
      return await this.rpc.call<T>('POST', path, body, timeoutMs === undefined ? {} : { timeoutMs });
    } catch (err) {
      throw this.unavailable(err);
    }
  }

  async get(key: string): Promise<GetResult> {
    const r = await this.call<{ revision: string; kv: WireKeyValue | null }>(STORE_PATHS.get, { key });
    return { revision: BigInt(r.revision), kv: decodeOptionalKv(r.kv) };
  }

  async range(prefix: string, options: { limit?: number } = {}): Promise<RangeResult> {
    const r = await this.call<{ revision: string; kvs: WireKeyValue[]; more: boolean }>(STORE_PATHS.range, { prefix, limit: options.limit });
    return { revision: BigInt(r.revision), kvs: r.kvs.map(decodeKv), more: r.more };
  }

  async put(key: string, value: string, options: { lease?: LeaseId } = {}): Promise<PutResult> {
    const r = await this.call<{ revision: string; prev: WireKeyValue | null }>(STORE_PATHS.put, {
      key,
      value,
      lease: options.lease?.toString(),
    });
    return { revision: BigInt(r.revision), prev: decodeOptionalKv(r.prev) };
  }

  async delete(key: string, options: { prefix?: boolean } = {}): Promise<DeleteResult> {
    const r = await this.call<{ revision: string; deleted: number }>(STORE_PATHS.delete, { key, prefix: options.prefix === true });
    return { revision: BigInt(r.revision), deleted: r.deleted };
  }

  async txn(txn: Txn): Promise<TxnResult> {
    return decodeTxnResult(await this.call<WireTxnResult>(STORE_PATHS.txn, encodeTxn(txn)));
  }

  async grantLease(ttlSeconds: number): Promise<LeaseGrant> {
    const r = await this.call<{ id: string; ttlSeconds: number }>(STORE_PATHS.leaseGrant, { ttlSeconds });
    return { id: BigInt(r.id), ttlSeconds: r.ttlSeconds };
  }

  async keepAlive(id: LeaseId): Promise<{ ttlSeconds: number }> {
    return this.call<{ ttlSeconds: number }>(STORE_PATHS.leaseKeepAlive, { id: id.toString() }, this.options.keepAliveTimeoutMs);
  }

  async revokeLease(id: LeaseId): Promise<void> {
    await this.call<unknown>(STORE_PATHS.leaseRevoke, { id: id.toString() });
  }

  async leaseStatus(id: LeaseId): Promise<LeaseStatus> {
    const r = await this.call<{ id: string; grantedTtlSeconds: number; remainingSeconds: number; keys: string[] }>(STORE_PATHS.leaseStatus, {
      id: id.toString(),
    });
    return { id: BigInt(r.id), grantedTtlSeconds: r.grantedTtlSeconds, remainingSeconds: r.remainingSeconds, keys: r.keys };
  }

  async revision(): Promise<Revision> {
    const r = await this.call<{ revision: string }>(STORE_PATHS.revision, {});
    return BigInt(r.revision);
  }

  /**
   * The watch request is sent now, not when iteration starts: a watch without `fromRevision`
   * starts after the revision current when it was created, so a write this client makes after
   * watch() returns (sent later on the same connection) is among its events.
   */
  watch(prefix: string, options: WatchOptions = {}): Watch {
    const stream = this.rpc.stream<WireWatchEvent>('POST', STORE_PATHS.watch, {
      prefix,
      fromRevision: options.fromRevision?.toString(),
    }, options.signal ? { signal: options.signal } : {});
    const lines = stream[Symbol.asyncIterator]();
    let first: Promise<IteratorResult<WireWatchEvent>> | undefined = lines.next();
    first.catch(() => undefined); // surfaced to the iterating caller below
    const translate = (err: unknown): unknown => this.unavailable(err);
    return {
      close: () => stream.close(),
      async *[Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
        try {
          for (;;) {
            const next = first ?? lines.next();
            first = undefined;
            const step = await next;
            if (step.done) return;
            yield decodeEvent(step.value);
          }
        } catch (err) {
          if (options.signal?.aborted) return;
          throw translate(err);
        } finally {
          stream.close();
        }
      },
    };
  }

  async close(): Promise<void> {
    if (this.options.ownsClient) await this.rpc.close();
  }
}
