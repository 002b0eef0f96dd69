// Request checks every Store backend makes before touching data: the contract's BAD_REQUEST with a
// clear message, for what a backend would otherwise refuse less clearly (or fail to encode).

import { CorralError } from '../api/errors.js';
import type { Compare, LeaseId, Txn, TxnOp } from './store.js';

export function badRequest(message: string): CorralError {
  return new CorralError('BAD_REQUEST', message);
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

/** Lease ids are non-negative int64s (0 is "no lease"). */
export function checkLease(lease: unknown): asserts lease is LeaseId {
  if (typeof lease !== 'bigint' || lease < 0n || lease > 0x7fff_ffff_ffff_ffffn) throw badRequest('a lease id must be a bigint in [0, 2^63)');
}

/** The whole seconds a TTL request stands for (a backend may raise them to its minimum). */
export function requestedTtl(ttlSeconds: unknown): number {
  if (typeof ttlSeconds !== 'number' || !Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
    throw badRequest('a lease TTL must be a positive number of seconds');
  }
  return Math.ceil(ttlSeconds);
}

/** A transaction's shape: arrays where arrays belong, and every compare and operation well formed. */
export function checkTxnShape(txn: Txn): void {
  if (typeof txn !== 'object' || txn === null || !Array.isArray(txn.compare) || !Array.isArray(txn.success)) {
    throw badRequest('a txn needs compare and success arrays');
  }
  if (txn.failure !== undefined && !Array.isArray(txn.failure)) throw badRequest('txn failure must be an array');
  for (const c of txn.compare) checkCompare(c);
  for (const op of [...txn.success, ...(txn.failure ?? [])]) checkOp(op);
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

function checkOp(op: TxnOp): void {
  switch (op.type) {
    case 'put':
      checkKey(op.key);
      checkValue(op.value);
      if (op.lease !== undefined) checkLease(op.lease);
      return;
    case 'delete':
      if (op.prefix === true) checkPrefix(op.key);
      else checkKey(op.key);
      return;
    case 'get':
      checkKey(op.key);
      return;
    case 'range':
      checkPrefix(op.prefix);
      checkLimit(op.limit);
      return;
    default:
      throw badRequest(`unknown txn op ${JSON.stringify((op as { type: unknown }).type)}`);
  }
}
