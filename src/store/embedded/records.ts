// Journal records: the commands of the store's state machine, and their JSON payload form.
// A record carries the effects to apply (keys, values, the revision), not the request, so
// replaying it is deterministic. Bigints travel as decimal strings, as everywhere on the wire.

import type { LeaseId, Revision } from '../store.js';

export type Mutation =
  | { op: 'put'; key: string; value: string; lease: LeaseId }
  | { op: 'del'; key: string }
  /** Deletes every key under the prefix; recorded as the prefix so a large delete stays small. */
  | { op: 'delp'; prefix: string };

export type JournalRecord =
  | { seq: number; type: 'txn'; rev: Revision; muts: Mutation[] }
  | { seq: number; type: 'grant'; id: LeaseId; ttl: number }
  /** Revokes a lease (by request or by expiry); its keys are deleted at the next revision. */
  | { seq: number; type: 'revoke'; id: LeaseId };

type WireMutation = { p: string; v: string; l?: string } | { d: string } | { dp: string };

type WireRecord =
  | { s: number; t: 'txn'; r: string; m: WireMutation[] }
  | { s: number; t: 'grant'; id: string; ttl: number }
  | { s: number; t: 'revoke'; id: string };

export function encodeRecord(record: JournalRecord): string {
  return JSON.stringify(toWire(record));
}

function toWire(record: JournalRecord): WireRecord {
  switch (record.type) {
    case 'txn':
      return { s: record.seq, t: 'txn', r: record.rev.toString(), m: record.muts.map(mutationToWire) };
    case 'grant':
      return { s: record.seq, t: 'grant', id: record.id.toString(), ttl: record.ttl };
    case 'revoke':
      return { s: record.seq, t: 'revoke', id: record.id.toString() };
  }
}

function mutationToWire(m: Mutation): WireMutation {
  switch (m.op) {
    case 'put':
      return m.lease === 0n ? { p: m.key, v: m.value } : { p: m.key, v: m.value, l: m.lease.toString() };
    case 'del':
      return { d: m.key };
    case 'delp':
      return { dp: m.prefix };
  }
}

/** Parses a payload; throws a plain Error describing what is malformed (the caller adds the location). */
export function decodeRecord(payload: Buffer): JournalRecord {
  const wire = JSON.parse(payload.toString('utf8')) as unknown;
  if (!isObject(wire) || typeof wire.s !== 'number' || !Number.isSafeInteger(wire.s)) {
    throw new Error('record has no sequence number');
  }
  switch (wire.t) {
    case 'txn':
      if (!Array.isArray(wire.m)) throw new Error('txn record has no mutations');
      return { seq: wire.s, type: 'txn', rev: toBigint(wire.r), muts: wire.m.map(mutationFromWire) };
    case 'grant':
      if (typeof wire.ttl !== 'number' || !(wire.ttl > 0)) throw new Error('grant record has no ttl');
      return { seq: wire.s, type: 'grant', id: toBigint(wire.id), ttl: wire.ttl };
    case 'revoke':
      return { seq: wire.s, type: 'revoke', id: toBigint(wire.id) };
    default:
      throw new Error(`unknown record type ${JSON.stringify(wire.t)}`);
  }
}

function mutationFromWire(m: unknown): Mutation {
  if (!isObject(m)) throw new Error('mutation is not an object');
  if (typeof m.p === 'string' && typeof m.v === 'string') {
    return { op: 'put', key: m.p, value: m.v, lease: m.l === undefined ? 0n : toBigint(m.l) };
  }
  if (typeof m.d === 'string') return { op: 'del', key: m.d };
  if (typeof m.dp === 'string') return { op: 'delp', prefix: m.dp };
  throw new Error('mutation has an unknown shape');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function toBigint(v: unknown): bigint {
  if (typeof v !== 'string' || !/^-?\d+$/.test(v)) throw new Error(`expected a decimal string, got ${JSON.stringify(v)}`);
  return BigInt(v);
}
