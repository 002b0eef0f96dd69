// etcd's gRPC API as corral uses it: loads our own minimal .proto files (proto/rpc.proto and
// proto/kv.proto, package names, tags and types as etcd's) and types the decoded messages.
//
// The .proto files are read at run time. tsc does not copy them into dist/, so they are looked up
// next to this module first (a run from source, or a build that copies them) and then at their
// place in the source tree relative to the package root (dist/src/store/etcd/ -> src/store/etcd/),
// which is what a fresh clone has after `npm ci` (whose `prepare` runs tsc).
//
// Decoding options: 64-bit integers become decimal strings (`longs: String`), so revisions and lease
// ids never pass through a JavaScript number; bytes stay Buffers; enums are their names; absent
// fields get their defaults, so every field below is present after decoding.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { MethodDefinition } from '@grpc/proto-loader';
import { loadSync } from '@grpc/proto-loader';

/** A 64-bit integer on the wire: a decimal string (int64 and uint64 alike). */
export type Int64 = string;

export interface ResponseHeader {
  cluster_id: Int64;
  member_id: Int64;
  revision: Int64;
  raft_term: Int64;
}

export interface WireKeyValue {
  key: Buffer;
  create_revision: Int64;
  mod_revision: Int64;
  version: Int64;
  value: Buffer;
  lease: Int64;
}

export interface RangeRequest {
  key: Buffer;
  range_end?: Buffer;
  limit?: Int64;
  count_only?: boolean;
}
export interface RangeResponse {
  header: ResponseHeader;
  kvs: WireKeyValue[];
  more: boolean;
  count: Int64;
}

export interface PutRequest {
  key: Buffer;
  value: Buffer;
  lease?: Int64;
  prev_kv?: boolean;
}
export interface PutResponse {
  header: ResponseHeader;
  prev_kv: WireKeyValue | null;
}

export interface DeleteRangeRequest {
  key: Buffer;
  range_end?: Buffer;
}
export interface DeleteRangeResponse {
  header: ResponseHeader;
  deleted: Int64;
}

export type RequestOp = { request_range: RangeRequest } | { request_put: PutRequest } | { request_delete_range: DeleteRangeRequest };

export interface ResponseOp {
  /** Which member of the oneof is set (proto-loader's `oneofs: true`). */
  response: 'response_range' | 'response_put' | 'response_delete_range';
  response_range?: RangeResponse | null;
  response_put?: PutResponse | null;
  response_delete_range?: DeleteRangeResponse | null;
}

export type CompareResult = 'EQUAL' | 'GREATER' | 'LESS' | 'NOT_EQUAL';
export type CompareTarget = 'VERSION' | 'CREATE' | 'MOD' | 'VALUE' | 'LEASE';

export type WireCompare = { result: CompareResult; target: CompareTarget; key: Buffer } & (
  | { version: Int64 }
  | { create_revision: Int64 }
  | { mod_revision: Int64 }
  | { value: Buffer }
  | { lease: Int64 }
);

export interface TxnRequest {
  compare: WireCompare[];
  success: RequestOp[];
  failure: RequestOp[];
}
export interface TxnResponse {
  header: ResponseHeader;
  succeeded: boolean;
  responses: ResponseOp[];
}

export interface WatchRequest {
  create_request: { key: Buffer; range_end?: Buffer; start_revision?: Int64 };
}
export interface WireEvent {
  type: 'PUT' | 'DELETE';
  kv: WireKeyValue | null;
}
export interface WatchResponse {
  header: ResponseHeader;
  watch_id: Int64;
  created: boolean;
  canceled: boolean;
  compact_revision: Int64;
  cancel_reason: string;
  events: WireEvent[];
}

export interface LeaseGrantRequest {
  TTL: Int64;
  ID?: Int64;
}
export interface LeaseGrantResponse {
  header: ResponseHeader;
  ID: Int64;
  TTL: Int64;
  error: string;
}
export interface LeaseRevokeRequest {
  ID: Int64;
}
export interface LeaseRevokeResponse {
  header: ResponseHeader;
}
export interface LeaseKeepAliveRequest {
  ID: Int64;
}
export interface LeaseKeepAliveResponse {
  header: ResponseHeader;
  ID: Int64;
  TTL: Int64;
}
export interface LeaseTimeToLiveRequest {
  ID: Int64;
  keys?: boolean;
}
export interface LeaseTimeToLiveResponse {
  header: ResponseHeader;
  ID: Int64;
  TTL: Int64;
  grantedTTL: Int64;
  keys: Buffer[];
}

export type StatusRequest = Record<string, never>;
export interface StatusResponse {
  header: ResponseHeader;
  version: string;
  dbSize: Int64;
  /** The member id this member believes leads; '0' when it knows no leader. */
  leader: Int64;
  raftIndex: Int64;
  raftTerm: Int64;
  errors: string[];
}

/** One RPC: its path, codecs and a short name for messages. */
export interface Rpc<Req, Res> {
  readonly name: string;
  readonly path: string;
  readonly serialize: (value: Req) => Buffer;
  readonly deserialize: (bytes: Buffer) => Res;
}

export interface EtcdRpcs {
  range: Rpc<RangeRequest, RangeResponse>;
  put: Rpc<PutRequest, PutResponse>;
  deleteRange: Rpc<DeleteRangeRequest, DeleteRangeResponse>;
  txn: Rpc<TxnRequest, TxnResponse>;
  watch: Rpc<WatchRequest, WatchResponse>;
  leaseGrant: Rpc<LeaseGrantRequest, LeaseGrantResponse>;
  leaseRevoke: Rpc<LeaseRevokeRequest, LeaseRevokeResponse>;
  leaseKeepAlive: Rpc<LeaseKeepAliveRequest, LeaseKeepAliveResponse>;
  leaseTimeToLive: Rpc<LeaseTimeToLiveRequest, LeaseTimeToLiveResponse>;
  status: Rpc<StatusRequest, StatusResponse>;
}

/** Where the .proto files are: next to this module, else in the source tree of the package. */
export function protoDirectory(): string {
  const candidates = [new URL('./proto/', import.meta.url), new URL('../../../../src/store/etcd/proto/', import.meta.url)];
  for (const dir of candidates) {
    if (existsSync(new URL('rpc.proto', dir))) return fileURLToPath(dir);
  }
  throw new Error(
    `corral's etcd protocol files are missing (looked for rpc.proto in ${candidates.map((u) => fileURLToPath(u)).join(' and ')}); ` +
      'reinstall corral from a complete checkout or package',
  );
}

let loaded: EtcdRpcs | undefined;

/** The RPCs, loaded once per process (parsing the .proto files takes a few milliseconds). */
export function etcdRpcs(): EtcdRpcs {
  if (loaded) return loaded;
  const dir = protoDirectory();
  const pkg = loadSync('rpc.proto', { includeDirs: [dir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const rpc = <Req, Res>(service: string, method: string): Rpc<Req, Res> => {
    const def = (pkg[`etcdserverpb.${service}`] as Record<string, MethodDefinition<Req, Res>> | undefined)?.[method];
    if (def === undefined) throw new Error(`rpc.proto lacks etcdserverpb.${service}/${method}`);
    return { name: method, path: def.path, serialize: def.requestSerialize, deserialize: def.responseDeserialize };
  };
  loaded = {
    range: rpc('KV', 'Range'),
    put: rpc('KV', 'Put'),
    deleteRange: rpc('KV', 'DeleteRange'),
    txn: rpc('KV', 'Txn'),
    watch: rpc('Watch', 'Watch'),
    leaseGrant: rpc('Lease', 'LeaseGrant'),
    leaseRevoke: rpc('Lease', 'LeaseRevoke'),
    leaseKeepAlive: rpc('Lease', 'LeaseKeepAlive'),
    leaseTimeToLive: rpc('Lease', 'LeaseTimeToLive'),
    status: rpc('Maintenance', 'Status'),
  };
  return loaded;
}
