// Request checks and compare evaluation, shared by every write path of the embedded store.
// Checks run before the first write of a transaction, because a write in progress cannot roll back.

import { CorralError } from '../../api/errors.js';
import { badRequest, checkTxnShape, requestedTtl } from '../checks.js';
import type { Compare, CompareOp, KeyValue, LeaseId, Txn, TxnOp } from '../store.js';
import { compareKeys } from './key-order.js';

/** Keys and values of one write may total this many UTF-8 bytes (etcd's limit is 1.5 MiB). */
export const MAX_WRITE_BYTES = 16 * 1024 * 1024;

export { badRequest, checkKey, checkLease, checkLimit, checkPrefix, checkValue } from '../checks.js';

export function leaseNotFound(id: LeaseId): CorralError {
  return new CorralError('LEASE_NOT_FOUND', `lease ${id} does not exist or has expired; grant a new lease`);
}

/** Whole seconds, at least `min`: the TTL the store grants for a request. */
export function grantedTtl(ttlSeconds: unknown, min: number): number {
  return Math.max(min, requestedTtl(ttlSeconds));
}

/** Throws TOO_LARGE when the keys and values of a write exceed MAX_WRITE_BYTES. */
export function checkWriteSize(strings: readonly string[]): void {
  let bytes = 0;
  // length * 3 bounds the UTF-8 size; measure exactly only when the bound is not enough.
  for (const s of strings) bytes += s.length * 3;
  if (bytes <= MAX_WRITE_BYTES) return;
  bytes = 0;
  for (const s of strings) bytes += Buffer.byteLength(s, 'utf8');
  if (bytes > MAX_WRITE_BYTES) {
    throw new CorralError('TOO_LARGE', `a write of ${bytes} bytes exceeds the store's limit of ${MAX_WRITE_BYTES} bytes`);
  }
}

/**
 * Checks a transaction's shape, and, as etcd does, that no branch puts one key twice or puts a key
 * that the same branch deletes: each key changes at most once per revision.
 */
export function checkTxn(txn: Txn): void {
  checkTxnShape(txn);
  checkBranch(txn.success);
  checkBranch(txn.failure ?? []);
}

function checkBranch(ops: readonly TxnOp[]): void {
  const puts = new Set<string>();
  const deletes: { key: string; prefix: boolean }[] = [];
  const sizes: string[] = [];
  for (const op of ops) {
    if (op.type === 'put') {
      if (puts.has(op.key)) throw badRequest(`txn puts key ${JSON.stringify(op.key)} twice`);
      puts.add(op.key);
      sizes.push(op.key, op.value);
    } else if (op.type === 'delete') {
      deletes.push({ key: op.key, prefix: op.prefix === true });
    }
  }
  for (const key of puts) {
    if (deletes.some((d) => (d.prefix ? key.startsWith(d.key) : key === d.key))) {
      throw badRequest(`txn both puts and deletes key ${JSON.stringify(key)}`);
    }
  }
  checkWriteSize(sizes);
}

/** etcd's rule: on a missing key the numbers are 0 and a value compare is false. */
export function compareHolds(kv: KeyValue | undefined, c: Compare): boolean {
  if (c.target === 'value') return kv !== undefined && holds(compareKeys(kv.value, c.value), c.op);
  const actual = kv === undefined ? 0n : kv[c.target];
  return holds(actual === c.value ? 0 : actual < c.value ? -1 : 1, c.op);
}

function holds(order: number, op: CompareOp): boolean {
  switch (op) {
    case '=':
      return order === 0;
    case '!=':
      return order !== 0;
    case '<':
      return order < 0;
    case '>':
      return order > 0;
  }
}
