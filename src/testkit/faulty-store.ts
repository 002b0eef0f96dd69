// Fault injection for tests: a real Store behind a switch that makes chosen operations fail as if
// the store were unreachable. Everything not switched off goes to the real store.

import { CorralError } from '../api/errors.js';
import type { Store } from '../store/store.js';

export type StoreOperation = 'keepAlive' | 'grantLease' | 'revokeLease' | 'read' | 'write' | 'watch';

export function faultyStore(inner: Store): { store: Store; fail: Set<StoreOperation>; calls: Map<string, number> } {
  const fail = new Set<StoreOperation>();
  const calls = new Map<string, number>();
  const guard = (op: StoreOperation, name: string): void => {
    calls.set(name, (calls.get(name) ?? 0) + 1);
    if (fail.has(op)) throw new CorralError('STORE_UNAVAILABLE', `injected fault: ${name} fails`);
  };
  const store: Store = {
    get: async (k) => (guard('read', 'get'), inner.get(k)),
    range: async (p, o) => (guard('read', 'range'), inner.range(p, o)),
    put: async (k, v, o) => (guard('write', 'put'), inner.put(k, v, o)),
    delete: async (k, o) => (guard('write', 'delete'), inner.delete(k, o)),
    txn: async (t) => (guard('write', 'txn'), inner.txn(t)),
    grantLease: async (ttl) => (guard('grantLease', 'grantLease'), inner.grantLease(ttl)),
    keepAlive: async (id) => (guard('keepAlive', 'keepAlive'), inner.keepAlive(id)),
    revokeLease: async (id) => (guard('revokeLease', 'revokeLease'), inner.revokeLease(id)),
    leaseStatus: async (id) => (guard('read', 'leaseStatus'), inner.leaseStatus(id)),
    revision: async () => (guard('read', 'revision'), inner.revision()),
    watch: (p, o) => (guard('watch', 'watch'), inner.watch(p, o)),
    close: () => inner.close(),
  };
  return { store, fail, calls };
}
