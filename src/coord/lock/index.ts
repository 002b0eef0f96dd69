// Locks over the Store contract: FLoM's resources and modes, with FIFO fairness and fencing.
//
//   const session = await Session.open(store, { ttlSeconds: 10, keepaliveIntervalMs: 2000 });
//   const lock = await acquire(store, session, { resource: 'backup', mode: 'PR', timeoutMs: 5000 });
//   lock.lost.addEventListener('abort', stopTheWork);
//   try { await work(lock.fencingToken); } finally { await lock.release(); }

export { acquire, type AcquireOptions } from './acquire.js';
export { grantOf, groupLocksOf, type LeaseLocks } from './adopt.js';
export { LockGrant, type LockSession, type ReleaseOptions } from './grant.js';
export { decide, keysAhead, type Decision, type LockAsk } from './grant-rule.js';
export { LOCKS_PREFIX, parseWaiterKey, resourceKeys, type ResourceKeys } from './keys.js';
export { listLocks, type LockEntryInfo, type LockListing, type ResourceLocks } from './list.js';
export { compatible, isLockMode, LOCK_MODE_LONG_NAMES, LOCK_MODES, lockModeNumber, parseLockMode, type LockMode } from './modes.js';
export type { LockGroupRecord, LockOwner, WaiterEntry } from './records.js';
export type { LockRequest } from './request.js';
export { allowedModes, DEFAULT_RESOURCE_NAME, effectiveMode, parseResourceName, pathsRelated, type Resource, type ResourceKind } from './resource.js';
export type { ResourceState } from './resource-state.js';
export { formatTimestamp, parseTimestampFormat, type TimestampFormat } from './timestamp-format.js';
