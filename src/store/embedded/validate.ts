// Request checks and compare evaluation, shared by every write path of the embedded store.
// Checks run before the first write of a transaction, because a write in progress cannot roll back.

import { CorralError } from '../../api/errors.js';
import type { Compare, CompareOp, KeyValue, LeaseId, Txn, TxnOp } from '../store.js';
import { compareKeys } from './key-order.js';

/** Keys and values of one write may total this many UTF-8 bytes (etcd's limit is 1.5 MiB). */
export const MAX_WRITE_BYTES = 16 * 1024 * 1024;

export function badRequest(message: string): CorralError {
  return new CorralError('BAD_REQUEST', message);
}

export function leaseNotFound(id: LeaseId): CorralError {
  return new CorralError('LEASE_NOT_FOUND', `lease ${id} does not exist or has expired; grant a new lease`);
}

export function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) throw badRequest('a key must be a non-empty string');
}

export function checkPrefix(prefix: unknown): asserts prefix is string {
  if (typeof prefix !== 'string') throw badRequest('a prefix must be a string');
}

export function checkValue(value: unknown): asserts value is string {
  if (typeof value !== 'string') throw badRequest('a value must be a string');
}

export function checkLimit(limit: unknown): void {
  if (limit !== undefined && (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0)) {
    throw badRequest('a range limit must be a non-negative integer (0 means no limit)');
  }
}

export function checkLease(lease: unknown): asserts lease is LeaseId {
  if (typeof lease !== 'bigint' || lease < 0n) throw badRequest('a lease id must be a non-negative bigint');
}

/** Whole seconds, at least `min`: the TTL the store grants for a request. */
export function grantedTtl(ttlSeconds: unknown, min: number): number {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
    throw badRequest('a lease TTL must be a positive number of seconds');
  }
  return Math.max(min, Math.ceil(ttlSeconds));
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
  if (typeof txn !== 'object' || txn === null || !Array.isArray(txn.compare) || !Array.isArray(txn.success)) {
    throw badRequest('a txn needs compare and success arrays');
  }
  if (txn.failure !== undefined && !Array.isArray(txn.failure)) throw badRequest('txn failure must be an array');
  for (const c of txn.compare) checkCompare(c);
  checkBranch(txn.success);
  checkBranch(txn.failure ?? []);
}

function checkCompare(c: Compare): void {
  checkKey(c.key);
  if (!['=', '!=', '<', '>'].includes(c.op)) throw badRequest(`unknown compare op ${JSON.stringify(c.op)}`);
  if (c.target === 'value') {
    if (typeof c.value !== 'string') throw badRequest('a value compare needs a string value');
  } else if (['version', 'createRevision', 'modRevision', 'lease'].includes(c.target)) {
    if (typeof c.value !== 'bigint') throw badRequest(`a ${c.target} compare needs a bigint value`);
  } else {
    throw badRequest(`unknown compare target ${JSON.stringify((c as { target: unknown }).target)}`);
  }
}

function checkBranch(ops: readonly TxnOp[]): void {
  const puts = new Set<string>();
  const deletes: { key: string; prefix: boolean }[] = [];
  const sizes: string[] = [];
  for (const op of ops) {
    switch (op.type) {
      case 'put':
        checkKey(op.key);
        checkValue(op.value);
        if (op.lease !== undefined) checkLease(op.lease);
        if (puts.has(op.key)) throw badRequest(`txn puts key ${JSON.stringify(op.key)} twice`);
        puts.add(op.key);
        sizes.push(op.key, op.value);
        break;
      case 'delete':
        if (op.prefix === true) checkPrefix(op.key);
        else checkKey(op.key);
        deletes.push({ key: op.key, prefix: op.prefix === true });
        break;
      case 'get':
        checkKey(op.key);
        break;
      case 'range':
        checkPrefix(op.prefix);
        checkLimit(op.limit);
        break;
      default:
        throw badRequest(`unknown txn op ${JSON.stringify((op as { type: unknown }).type)}`);
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
