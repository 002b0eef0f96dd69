// gRPC and etcd failures as corral's error codes. etcd reports its errors as gRPC statuses with
// fixed messages ("etcdserver: ..."; api/v3rpc/rpctypes in etcd), which are stable across 3.x.

import { status, type ServiceError } from '@grpc/grpc-js';
import { CorralError } from '../../api/errors.js';

/** What a failed call was, for a message that says where and what. */
export interface CallSite {
  /** The RPC, e.g. 'Put'. */
  rpc: string;
  /** The member asked, as configured. */
  endpoint: string;
  /** Every configured member, e.g. 'etcd at 10.0.0.1:2379, 10.0.0.2:2379'. */
  cluster: string;
}

const FIX = 'check that a majority of the etcd members is running and reachable from this machine, and that store.endpoints lists their client URLs';
const TLS_FIX = 'check store.tls: the CA must have signed the members’ server certificates, whose names must match the endpoints, and etcd must accept the client certificate';
const TLS_FAILURE = /certificate|ssl|tls|handshake/i;

export function looksLikeTls(why: string): boolean {
  return TLS_FAILURE.test(why);
}

/** How to fix a failure to reach etcd, judged by its description. */
export function fixFor(why: string): string {
  return looksLikeTls(why) ? TLS_FIX : FIX;
}

/** grpc's details on one line, without its timestamps and empty "Resolution note:". */
export function cleanDetails(s: string): string {
  return s
    .replace(/ \(\d{4}-\d\d-\d\dT[\d:.]+Z\)/g, '')
    .replace(/\s*Resolution note:\s*$/, '')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The underlying gRPC details of an error this module made, else its message. */
export function detailsOf(err: unknown): string {
  if (err instanceof CorralError && err.cause instanceof Error) {
    const cause = err.cause as Partial<ServiceError>;
    return cleanDetails(cause.details ?? err.cause.message);
  }
  return err instanceof Error ? err.message : String(err);
}

export function unavailable(site: CallSite, why: string, cause?: unknown): CorralError {
  const clean = cleanDetails(why);
  return new CorralError('STORE_UNAVAILABLE', `${site.cluster} is unavailable (${site.rpc} on ${site.endpoint}: ${clean}); ${fixFor(clean)}`, { cause });
}

export function deadlineExceeded(site: CallSite, ms: number): CorralError {
  return new CorralError('STORE_UNAVAILABLE', `${site.cluster} did not answer ${site.rpc} on ${site.endpoint} within ${ms} ms; ${FIX}`);
}

export function closedStore(cluster: string): CorralError {
  return new CorralError('STORE_UNAVAILABLE', `the client of ${cluster} is closed; open the store again`);
}

export function leaseNotFound(id: bigint): CorralError {
  return new CorralError('LEASE_NOT_FOUND', `lease ${id} does not exist or has expired; grant a new lease`);
}

export function compacted(what: string, oldest: bigint | undefined): CorralError {
  const kept = oldest === undefined ? '' : `: the oldest revision etcd keeps is ${oldest}`;
  return new CorralError('COMPACTED', `${what} asks for history etcd has compacted away${kept}; read the keys again (range) and watch from that read’s revision + 1`);
}

/** Maps a gRPC error from etcd to a CorralError. */
export function translate(err: ServiceError, site: CallSite): CorralError {
  const details = err.details || err.message;
  const d = details.toLowerCase();
  const code = err.code;
  // Unreachable, connection lost, "no leader", "leader changed", "request timed out", "server stopped".
  if (code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED) return unavailable(site, details, err);
  if (code === status.NOT_FOUND && d.includes('lease not found')) return new CorralError('LEASE_NOT_FOUND', `${details}; grant a new lease`, { cause: err });
  if (code === status.INVALID_ARGUMENT) {
    if (d.includes('request is too large')) return new CorralError('TOO_LARGE', `${details} (etcd's --max-request-bytes, 1.5 MiB by default)`, { cause: err });
    if (d.includes('duplicate key') || d.includes('key is not provided') || d.includes('too many operations')) {
      return new CorralError('BAD_REQUEST', details, { cause: err });
    }
  }
  if (code === status.OUT_OF_RANGE && d.includes('compacted')) return compacted(site.rpc, undefined);
  if (code === status.RESOURCE_EXHAUSTED) {
    if (d.includes('space exceeded')) {
      return new CorralError('STORE_UNAVAILABLE', `${site.cluster} refuses writes: ${details}; compact and defragment etcd, then disarm the NOSPACE alarm (etcdctl alarm disarm)`, { cause: err });
    }
    if (d.includes('too many requests')) return unavailable(site, details, err);
  }
  // "not leader" / "not capable": this member cannot serve right now; another may.
  if (code === status.FAILED_PRECONDITION && (d.includes('leader') || d.includes('not capable'))) return unavailable(site, details, err);
  if (code === status.PERMISSION_DENIED || code === status.UNAUTHENTICATED) {
    return new CorralError('FORBIDDEN', `${site.cluster} refused ${site.rpc}: ${details}; give corral's client certificate (store.tls) access to its keys`, { cause: err });
  }
  return new CorralError('INTERNAL', `${site.rpc} on ${site.endpoint} failed: ${details} (gRPC ${status[err.code] ?? err.code})`, { cause: err });
}
