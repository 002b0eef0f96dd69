// A lock request as callers write it, checked and normalised before anything touches the store.

import { CorralError } from '../../api/errors.js';
import { impossible, type LockAsk } from './grant-rule.js';
import { resourceKeys, type ResourceKeys } from './keys.js';
import { isLockMode, type LockMode } from './modes.js';
import type { LockGroupRecord, LockOwner } from './records.js';
import { effectiveMode, parseResourceName, type Resource } from './resource.js';

export interface LockRequest {
  /** FLoM's resource name; the kind follows from its syntax. */
  resource: string;
  /** Default EX. Kinds other than simple and hierarchical are always granted EX (as FLoM). */
  mode?: LockMode;
  /** Units of a numeric resource `name[N]` (default 1); ignored for other kinds (as FLoM). */
  quantity?: number;
  /** -1 (or any negative, the default): wait forever; 0: do not wait; N > 0: one deadline for the whole request. */
  timeoutMs?: number;
  /** false: fail (or wait, with a timeout) when the resource does not exist. Default true. */
  create?: boolean;
  /** How long the resource and its state outlive its last release, when this request creates it. Default 0. */
  idleLifespanMs?: number;
  /** Shown by listLocks(). */
  owner?: LockOwner;
  /** Recorded with the lock: the process group it is kept for once its client is gone. */
  group?: LockGroupRecord;
  /** Aborts the wait (the waiter key is deleted); no effect once granted. */
  signal?: AbortSignal;
}

/** A checked request. */
export interface LockPlan {
  resource: Resource;
  keys: ResourceKeys;
  ask: LockAsk;
  timeoutMs: number;
  create: boolean;
  idleLifespanMs: number;
  owner: LockOwner;
  group: LockGroupRecord | undefined;
  signal: AbortSignal | undefined;
}

function badRequest(message: string): CorralError {
  return new CorralError('BAD_LOCK_REQUEST', message);
}

/** Parsed resource names and their keys: most requests name a resource seen before. */
const parsed = new Map<string, { resource: Resource; keys: ResourceKeys }>();
const PARSED_MAX = 4096;

function parseCached(name: string): { resource: Resource; keys: ResourceKeys } {
  let entry = parsed.get(name);
  if (entry === undefined) {
    const resource = parseResourceName(name);
    entry = { resource, keys: resourceKeys(resource) };
    if (parsed.size >= PARSED_MAX) parsed.clear();
    parsed.set(name, entry);
  }
  return entry;
}

export function planRequest(request: LockRequest): LockPlan {
  if (typeof request.resource !== 'string') throw new CorralError('BAD_RESOURCE', 'a lock request needs a resource name');
  const { resource, keys } = parseCached(request.resource);
  const requestedMode = request.mode ?? 'EX';
  if (!isLockMode(requestedMode)) throw new CorralError('BAD_LOCK_MODE', `'${String(requestedMode)}' is not a lock mode (parse names with parseLockMode)`);
  const quantity = resource.kind === 'numeric' ? (request.quantity ?? 1) : 1;
  if (!Number.isSafeInteger(quantity) || quantity < 1) throw badRequest(`quantity must be a whole number of units, at least 1 (got ${request.quantity})`);
  const timeoutMs = request.timeoutMs ?? -1;
  if (!Number.isFinite(timeoutMs)) throw badRequest(`timeout must be a number of milliseconds, -1 to wait forever (got ${timeoutMs})`);
  const idleLifespanMs = request.idleLifespanMs ?? 0;
  if (!Number.isFinite(idleLifespanMs) || idleLifespanMs < 0) throw badRequest(`idle lifespan must be a non-negative number of milliseconds (got ${idleLifespanMs})`);
  const ask: LockAsk = { resource, mode: effectiveMode(resource.kind, requestedMode), quantity };
  const never = impossible(ask);
  if (never !== undefined) throw new CorralError('LOCK_IMPOSSIBLE', `resource will never satisfy the request, the lock cannot be obtained: ${never}`);
  return {
    resource,
    keys,
    ask,
    timeoutMs: timeoutMs < 0 ? -1 : timeoutMs,
    create: request.create !== false,
    idleLifespanMs,
    owner: request.owner ?? {},
    group: request.group,
    signal: request.signal,
  };
}
