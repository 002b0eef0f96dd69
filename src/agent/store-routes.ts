// The coordinator's /v1/store/* endpoints: the Store contract served to other agents and tools.
// Every request body is validated (store-wire decoders) before it touches the store.

import { CorralError } from '../api/errors.js';
import {
  decodeTxn,
  encodeEvent,
  encodeKv,
  encodeOptionalKv,
  encodeTxnResult,
  flag,
  int64,
  key,
  obj,
  optionalInt,
  prefix,
  STORE_PATHS,
  value,
  type WireWatchEvent,
} from '../api/store-wire.js';
import type { Store, TxnOp } from '../store/store.js';
import { actorOf, StorePolicy, type StoreActor } from './store-policy.js';
import type { RpcServer } from '../transport/server.js';
import type { PeerIdentity } from '../transport/types.js';

/** Agents (node certificates), administrators and local clients may use the store. */
export function mayUseStore(peer: PeerIdentity): boolean {
  return peer.kind === 'local' || (peer.kind === 'tls' && (peer.role === 'node' || peer.role === 'admin'));
}

export function addStoreRoutes(server: RpcServer, store: Store): void {
  const policy = new StorePolicy(store);
  const post = (path: string, handler: (body: Record<string, unknown>, actor: StoreActor) => unknown): void => {
    server.route('POST', path, (req) => handler(obj(req.body ?? {}, 'request body'), actorOf(req.peer)) as Promise<unknown>, { allow: mayUseStore });
  };

  post(STORE_PATHS.get, async (b) => {
    const r = await store.get(key(b.key));
    return { revision: r.revision.toString(), kv: encodeOptionalKv(r.kv) };
  });
  post(STORE_PATHS.range, async (b) => {
    const limit = optionalInt(b.limit, 'limit', 0, 1_000_000);
    const r = await store.range(prefix(b.prefix), limit === undefined ? {} : { limit });
    return { revision: r.revision.toString(), kvs: r.kvs.map(encodeKv), more: r.more };
  });
  post(STORE_PATHS.put, async (b, actor) => {
    const lease = b.lease === undefined || b.lease === null ? undefined : int64(b.lease, 'lease');
    const op: TxnOp = lease === undefined ? { type: 'put', key: key(b.key), value: value(b.value) } : { type: 'put', key: key(b.key), value: value(b.value), lease };
    await policy.checkWrite(actor, op);
    const r = await store.put(op.key, op.value, lease === undefined ? {} : { lease });
    return { revision: r.revision.toString(), prev: encodeOptionalKv(r.prev) };
  });
  post(STORE_PATHS.delete, async (b, actor) => {
    const op: TxnOp = { type: 'delete', key: key(b.key), prefix: flag(b.prefix, 'prefix') };
    await policy.checkWrite(actor, op);
    const r = await store.delete(op.key, { prefix: op.prefix === true });
    return { revision: r.revision.toString(), deleted: r.deleted };
  });
  post(STORE_PATHS.txn, async (b, actor) => {
    const txn = decodeTxn(b);
    for (const op of [...txn.success, ...(txn.failure ?? [])]) await policy.checkWrite(actor, op);
    return encodeTxnResult(await store.txn(txn));
  });
  post(STORE_PATHS.leaseGrant, async (b, actor) => {
    const ttl = b.ttlSeconds;
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl > 86_400 * 365) {
      throw new CorralError('BAD_REQUEST', 'ttlSeconds must be a number of seconds (at most a year)');
    }
    const g = await store.grantLease(ttl); // the store rounds up and refuses what is not positive
    await policy.recordGrant(actor, g.id);
    return { id: g.id.toString(), ttlSeconds: g.ttlSeconds };
  });
  post(STORE_PATHS.leaseKeepAlive, async (b, actor) => {
    const id = int64(b.id, 'id');
    await policy.checkLease(actor, id, 'keep alive');
    return store.keepAlive(id);
  });
  post(STORE_PATHS.leaseRevoke, async (b, actor) => {
    const id = int64(b.id, 'id');
    await policy.checkLease(actor, id, 'revoke');
    await store.revokeLease(id);
    return {};
  });
  post(STORE_PATHS.leaseStatus, async (b, actor) => {
    const id = int64(b.id, 'id');
    await policy.checkLease(actor, id, 'inspect');
    const s = await store.leaseStatus(id);
    return { id: s.id.toString(), grantedTtlSeconds: s.grantedTtlSeconds, remainingSeconds: s.remainingSeconds, keys: s.keys };
  });
  post(STORE_PATHS.revision, async () => ({ revision: (await store.revision()).toString() }));
  server.route(
    'POST',
    STORE_PATHS.watch,
    (req) => {
      const b = obj(req.body ?? {}, 'request body');
      const from = b.fromRevision === undefined || b.fromRevision === null ? undefined : int64(b.fromRevision, 'fromRevision');
      const watch = store.watch(prefix(b.prefix), from === undefined ? { signal: req.signal } : { fromRevision: from, signal: req.signal });
      return (async function* (): AsyncGenerator<WireWatchEvent> {
        try {
          for await (const event of watch) yield encodeEvent(event);
        } finally {
          watch.close();
        }
      })();
    },
    { allow: mayUseStore },
  );
}
