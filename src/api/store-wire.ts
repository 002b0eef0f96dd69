// The Store contract on the wire (/v1/store/...). JSON cannot carry 64-bit integers, so revisions,
// versions and lease ids travel as decimal strings. Decoders validate untrusted input: a hostile
// or buggy peer gets BAD_REQUEST, never a crash or a half-applied request.

import type {
  Compare,
  CompareOp,
  KeyValue,
  Txn,
  TxnOp,
  TxnOpResult,
  TxnResult,
  WatchEvent,
} from '../store/store.js';
import { CorralError } from './errors.js';

export const STORE_PATHS = {
  get: '/v1/store/get',
  range: '/v1/store/range',
  put: '/v1/store/put',
  delete: '/v1/store/delete',
  txn: '/v1/store/txn',
  leaseGrant: '/v1/store/lease/grant',
  leaseKeepAlive: '/v1/store/lease/keepalive',
  leaseRevoke: '/v1/store/lease/revoke',
  leaseStatus: '/v1/store/lease/status',
  watch: '/v1/store/watch',
  revision: '/v1/store/revision',
} as const;

export interface WireKeyValue {
  key: string;
  value: string;
  createRevision: string;
  modRevision: string;
  version: string;
  lease: string;
}

export type WireCompare = { key: string; target: Compare['target']; op: CompareOp; value: string };

export type WireTxnOp =
  | { type: 'put'; key: string; value: string; lease?: string }
  | { type: 'delete'; key: string; prefix?: boolean }
  | { type: 'get'; key: string }
  | { type: 'range'; prefix: string; limit?: number };

export type WireTxnOpResult =
  | { type: 'put'; prev: WireKeyValue | null }
  | { type: 'delete'; deleted: number }
  | { type: 'get'; kv: WireKeyValue | null }
  | { type: 'range'; kvs: WireKeyValue[]; more: boolean };

export interface WireTxn {
  compare: WireCompare[];
  success: WireTxnOp[];
  failure: WireTxnOp[];
}

export interface WireTxnResult {
  succeeded: boolean;
  revision: string;
  results: WireTxnOpResult[];
}

export interface WireWatchEvent {
  type: 'put' | 'delete';
  kv: WireKeyValue;
  revision: string;
}

const MAX_KEY_BYTES = 4096;
const MAX_VALUE_BYTES = 512 * 1024;
const MAX_TXN_OPS = 128;

function bad(message: string): never {
  throw new CorralError('BAD_REQUEST', message);
}

export function obj(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

export function key(v: unknown, what = 'key'): string {
  if (typeof v !== 'string' || v.length === 0) bad(`${what} must be a non-empty string`);
  if (Buffer.byteLength(v) > MAX_KEY_BYTES) bad(`${what} is longer than ${MAX_KEY_BYTES} bytes`);
  return v;
}

export function prefix(v: unknown): string {
  if (typeof v !== 'string') bad('prefix must be a string');
  if (Buffer.byteLength(v) > MAX_KEY_BYTES) bad(`prefix is longer than ${MAX_KEY_BYTES} bytes`);
  return v;
}

export function value(v: unknown): string {
  if (typeof v !== 'string') bad('value must be a string');
  if (Buffer.byteLength(v) > MAX_VALUE_BYTES) bad(`value is larger than ${MAX_VALUE_BYTES} bytes`);
  return v;
}

export function int64(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^-?\d{1,20}$/.test(v)) bad(`${what} must be a decimal string`);
  const n = BigInt(v);
  if (n < -(2n ** 63n) || n >= 2n ** 63n) bad(`${what} is out of the 64-bit range`);
  return n;
}

/** An optional boolean: absent is false; anything but true or false is refused, not guessed. */
export function flag(v: unknown, what: string): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') bad(`${what} must be true or false`);
  return v;
}

export function optionalInt(v: unknown, what: string, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(`${what} must be an integer in [${min}, ${max}]`);
  return v;
}

export function encodeKv(kv: KeyValue): WireKeyValue {
  return {
    key: kv.key,
    value: kv.value,
    createRevision: kv.createRevision.toString(),
    modRevision: kv.modRevision.toString(),
    version: kv.version.toString(),
    lease: kv.lease.toString(),
  };
}

export function decodeKv(w: WireKeyValue): KeyValue {
  return {
    key: w.key,
    value: w.value,
    createRevision: BigInt(w.createRevision),
    modRevision: BigInt(w.modRevision),
    version: BigInt(w.version),
    lease: BigInt(w.lease),
  };
}

export function encodeOptionalKv(kv: KeyValue | undefined): WireKeyValue | null {
  return kv ? encodeKv(kv) : null;
}

export function decodeOptionalKv(w: WireKeyValue | null | undefined): KeyValue | undefined {
  return w ? decodeKv(w) : undefined;
}

// ---- transactions -------------------------------------------------------------------------

export function encodeTxn(t: Txn): WireTxn {
  return {
    compare: t.compare.map((c) => ({ key: c.key, target: c.target, op: c.op, value: typeof c.value === 'bigint' ? c.value.toString() : c.value })),
    success: t.success.map(encodeOp),
    failure: (t.failure ?? []).map(encodeOp),
  };
}

function encodeOp(op: TxnOp): WireTxnOp {
  if (op.type === 'put') return op.lease === undefined ? { type: 'put', key: op.key, value: op.value } : { type: 'put', key: op.key, value: op.value, lease: op.lease.toString() };
  return op;
}

const TARGETS = new Set(['value', 'version', 'createRevision', 'modRevision', 'lease']);
const OPS = new Set(['=', '!=', '<', '>']);

function decodeCompare(v: unknown): Compare {
  const c = obj(v, 'compare');
  const k = key(c.key);
  if (typeof c.target !== 'string' || !TARGETS.has(c.target)) bad('compare.target must be value, version, createRevision, modRevision or lease');
  if (typeof c.op !== 'string' || !OPS.has(c.op)) bad("compare.op must be one of = != < >");
  const op = c.op as CompareOp;
  if (c.target === 'value') return { key: k, target: 'value', op, value: value(c.value) };
  return { key: k, target: c.target as Exclude<Compare['target'], 'value'>, op, value: int64(c.value, 'compare.value') };
}

function decodeOp(v: unknown): TxnOp {
  const o = obj(v, 'operation');
  switch (o.type) {
    case 'put': {
      const op: TxnOp = { type: 'put', key: key(o.key), value: value(o.value) };
      if (o.lease !== undefined) op.lease = int64(o.lease, 'lease');
      return op;
    }
    case 'delete':
      return { type: 'delete', key: key(o.key), prefix: flag(o.prefix, 'prefix') };
    case 'get':
      return { type: 'get', key: key(o.key) };
    case 'range': {
      const limit = optionalInt(o.limit, 'limit', 0, 1_000_000);
      return limit === undefined ? { type: 'range', prefix: prefix(o.prefix) } : { type: 'range', prefix: prefix(o.prefix), limit };
    }
    default:
      bad('operation.type must be put, delete, get or range');
  }
}

function list(v: unknown, what: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) bad(`${what} must be an array`);
  if (v.length > MAX_TXN_OPS) bad(`${what} has more than ${MAX_TXN_OPS} entries`);
  return v;
}

export function decodeTxn(v: unknown): Txn {
  const t = obj(v, 'txn');
  return {
    compare: list(t.compare, 'compare').map(decodeCompare),
    success: list(t.success, 'success').map(decodeOp),
    failure: list(t.failure, 'failure').map(decodeOp),
  };
}

export function encodeTxnResult(r: TxnResult): WireTxnResult {
  return {
    succeeded: r.succeeded,
    revision: r.revision.toString(),
    results: r.results.map((x): WireTxnOpResult => {
      switch (x.type) {
        case 'put':
          return { type: 'put', prev: encodeOptionalKv(x.prev) };
        case 'delete':
          return x;
        case 'get':
          return { type: 'get', kv: encodeOptionalKv(x.kv) };
        case 'range':
          return { type: 'range', kvs: x.kvs.map(encodeKv), more: x.more };
      }
    }),
  };
}

export function decodeTxnResult(w: WireTxnResult): TxnResult {
  return {
    succeeded: w.succeeded,
    revision: BigInt(w.revision),
    results: w.results.map((x): TxnOpResult => {
      switch (x.type) {
        case 'put':
          return { type: 'put', prev: decodeOptionalKv(x.prev) };
        case 'delete':
          return x;
        case 'get':
          return { type: 'get', kv: decodeOptionalKv(x.kv) };
        case 'range':
          return { type: 'range', kvs: x.kvs.map(decodeKv), more: x.more };
      }
    }),
  };
}

export function encodeEvent(e: WatchEvent): WireWatchEvent {
  return { type: e.type, kv: encodeKv(e.kv), revision: e.revision.toString() };
}

export function decodeEvent(w: WireWatchEvent): WatchEvent {
  return { type: w.type, kv: decodeKv(w.kv), revision: BigInt(w.revision) };
}
