// Between the Store contract's shapes (UTF-8 strings, bigint) and etcd's messages (bytes, 64-bit
// integers as decimal strings). Pure functions, unit-tested without an etcd.

import { CorralError } from '../../api/errors.js';
import { NO_LEASE, type Compare, type KeyValue, type TxnOp, type TxnOpResult, type WatchEvent } from '../store.js';
import type { CompareResult, CompareTarget, Int64, RequestOp, ResponseOp, WireCompare, WireEvent, WireKeyValue } from './proto.js';

export const bytes = (s: string): Buffer => Buffer.from(s, 'utf8');
export const text = (b: Buffer): string => b.toString('utf8');
export const int64 = (n: bigint | number): Int64 => n.toString();

/** Parses a decimal 64-bit integer from the wire; a missing one (never sent by etcd) reads 0. */
export function big(s: Int64 | undefined | null): bigint {
  return s === undefined || s === null || s === '' ? 0n : BigInt(s);
}

/** The end of the range of keys that start with `prefix`: etcd's "prefix + 1" on the last byte < 0xff. */
export function prefixEnd(prefix: Buffer): Buffer {
  for (let i = prefix.length - 1; i >= 0; i--) {
    const byte = prefix[i] as number;
    if (byte < 0xff) {
      const end = Buffer.from(prefix.subarray(0, i + 1));
      end[i] = byte + 1;
      return end;
    }
  }
  // Empty, or only 0xff bytes: no key above the prefix ends the range, so take every key >= it.
  return Buffer.from([0]);
}

/**
 * [key, range_end) for every key under `prefix`. The empty prefix is every key: etcd's key "\0"
 * with range_end "\0" (an empty key is not allowed in a request).
 */
export function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  if (prefix === '') return { key: Buffer.from([0]), range_end: Buffer.from([0]) };
  const key = bytes(prefix);
  return { key, range_end: prefixEnd(key) };
}

export function decodeKv(kv: WireKeyValue): KeyValue {
  return {
    key: text(kv.key),
    value: text(kv.value),
    createRevision: big(kv.create_revision),
    modRevision: big(kv.mod_revision),
    version: big(kv.version),
    lease: big(kv.lease),
  };
}

export function decodeOptionalKv(kv: WireKeyValue | null | undefined): KeyValue | undefined {
  return kv === null || kv === undefined ? undefined : decodeKv(kv);
}

/** A watch event in the contract's shape; a delete carries only its key and deleting revision. */
export function decodeEvent(ev: WireEvent): WatchEvent {
  if (ev.kv === null) throw new CorralError('INTERNAL', 'etcd sent a watch event without a key-value');
  const revision = big(ev.kv.mod_revision);
  if (ev.type === 'DELETE') {
    return {
      type: 'delete',
      revision,
      kv: { key: text(ev.kv.key), value: '', createRevision: 0n, modRevision: revision, version: 0n, lease: NO_LEASE },
    };
  }
  return { type: 'put', revision, kv: decodeKv(ev.kv) };
}

const RESULTS: Record<Compare['op'], CompareResult> = { '=': 'EQUAL', '!=': 'NOT_EQUAL', '<': 'LESS', '>': 'GREATER' };

export function encodeCompare(c: Compare): WireCompare {
  const head = { result: RESULTS[c.op], key: bytes(c.key) };
  switch (c.target) {
    case 'value':
      return { ...head, target: 'VALUE' satisfies CompareTarget, value: bytes(c.value) };
    case 'version':
      return { ...head, target: 'VERSION', version: int64(c.value) };
    case 'createRevision':
      return { ...head, target: 'CREATE', create_revision: int64(c.value) };
    case 'modRevision':
      return { ...head, target: 'MOD', mod_revision: int64(c.value) };
    case 'lease':
      return { ...head, target: 'LEASE', lease: int64(c.value) };
  }
}

export function encodeOp(op: TxnOp): RequestOp {
  switch (op.type) {
    case 'put':
      return { request_put: { key: bytes(op.key), value: bytes(op.value), lease: int64(op.lease ?? NO_LEASE), prev_kv: true } };
    case 'delete':
      return { request_delete_range: op.prefix === true ? prefixRange(op.key) : { key: bytes(op.key) } };
    case 'get':
      return { request_range: { key: bytes(op.key) } };
    case 'range':
      return { request_range: { ...prefixRange(op.prefix), limit: int64(op.limit ?? 0) } };
  }
}

/** etcd answers a get and a range alike (a RangeResponse): the request's op says which it was. */
export function decodeOpResult(op: TxnOp, res: ResponseOp): TxnOpResult {
  const mismatch = (): CorralError => new CorralError('INTERNAL', `etcd answered a txn ${op.type} with ${res.response}`);
  switch (op.type) {
    case 'put':
      if (!res.response_put) throw mismatch();
      return { type: 'put', prev: decodeOptionalKv(res.response_put.prev_kv) };
    case 'delete':
      if (!res.response_delete_range) throw mismatch();
      return { type: 'delete', deleted: Number(res.response_delete_range.deleted) };
    case 'get': {
      if (!res.response_range) throw mismatch();
      const [kv] = res.response_range.kvs;
      return { type: 'get', kv: decodeOptionalKv(kv) };
    }
    case 'range':
      if (!res.response_range) throw mismatch();
      return { type: 'range', kvs: res.response_range.kvs.map(decodeKv), more: res.response_range.more };
  }
}
