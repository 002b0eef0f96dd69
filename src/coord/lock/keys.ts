// Where locks live in the store. Every waiter key's last path segment is `<lease hex>.<request id>`,
// so the store policy can let a node write only the waiter keys of its own sessions.
//
//   /corral/locks/r/<name>/<lease>.<req>          waiters of a non-hierarchical resource
//   /corral/locks/h/<root>/<...path>/<lease>.<req>  waiters of hierarchical /<root>/<...path>
//   /corral/locks/state/<name>                     set index, sequence counter, last timestamp
//   /corral/locks/idle/r/<name>/<lease>            kept within the idle lifespan (see idle.ts)
//   /corral/locks/idle/h/<root>/<lease>
//
// Non-hierarchical names never contain '/', so a resource's prefix never covers another's. All
// paths under one root share the prefix /corral/locks/h/<root>/: one range read finds every
// ancestor, descendant and sibling, and the path of a key is everything before its last segment.

import type { LeaseId } from '../../store/store.js';
import type { Resource } from './resource.js';

export const LOCKS_PREFIX = '/corral/locks/';
const FLAT = `${LOCKS_PREFIX}r/`;
const HIER = `${LOCKS_PREFIX}h`;
const STATE = `${LOCKS_PREFIX}state/`;
const IDLE = `${LOCKS_PREFIX}idle/`;

export interface ResourceKeys {
  /** Prefix of this resource's own waiter keys. */
  readonly waiterPrefix: string;
  /** Prefix to read to find every key that may conflict (the root's, for a hierarchical path). */
  readonly scanPrefix: string;
  /** The per-resource state key (set, sequence and timestamp resources). */
  readonly stateKey: string;
  /** Prefix of the idle markers that keep the resource within its idle lifespan. */
  readonly idlePrefix: string;
}

export function resourceKeys(resource: Resource): ResourceKeys {
  if (resource.kind === 'hierarchical') {
    return {
      waiterPrefix: `${HIER}${resource.name}/`,
      scanPrefix: `${HIER}/${resource.root}/`,
      stateKey: `${STATE}h/${resource.root}`,
      idlePrefix: `${IDLE}h/${resource.root}/`,
    };
  }
  const waiters = `${FLAT}${resource.name}/`;
  return { waiterPrefix: waiters, scanPrefix: waiters, stateKey: `${STATE}${resource.name}`, idlePrefix: `${IDLE}r/${resource.name}/` };
}

const PROCESS_TAG = Math.floor(Math.random() * 36 ** 4)
  .toString(36)
  .padStart(4, '0');
let requestCounter = 0;

/** A request id unique within a lease even if several processes share it. */
export function nextRequestId(): string {
  return `${PROCESS_TAG}${(++requestCounter).toString(36)}`;
}

export function waiterKey(keys: ResourceKeys, lease: LeaseId, requestId: string): string {
  return `${keys.waiterPrefix}${lease.toString(16)}.${requestId}`;
}

export function idleMarkerKey(keys: ResourceKeys, lease: LeaseId): string {
  return `${keys.idlePrefix}${lease.toString(16)}`;
}

export interface WaiterKeyParts {
  /** The resource name (the full path for a hierarchical resource). */
  resourceName: string;
  hierarchical: boolean;
  lease: LeaseId;
  requestId: string;
}

const WAITER_SEGMENT = /^([0-9a-f]{1,16})\.([0-9a-z]+)$/;

/** The parts of a waiter key, or undefined for any other key. */
export function parseWaiterKey(key: string): WaiterKeyParts | undefined {
  const hierarchical = key.startsWith(`${HIER}/`);
  if (!hierarchical && !key.startsWith(FLAT)) return undefined;
  const slash = key.lastIndexOf('/');
  const m = WAITER_SEGMENT.exec(key.slice(slash + 1));
  if (!m) return undefined;
  const resourceName = hierarchical ? key.slice(HIER.length, slash) : key.slice(FLAT.length, slash);
  if (resourceName === '' || resourceName === '/') return undefined;
  return { resourceName, hierarchical, lease: BigInt(`0x${m[1] as string}`), requestId: m[2] as string };
}

/** The resource name of a state key, or undefined. */
export function parseStateKey(key: string): string | undefined {
  return key.startsWith(STATE) && !key.startsWith(`${STATE}h/`) ? key.slice(STATE.length) : undefined;
}

/** The resource (a name, or a hierarchical root as `/root`) an idle marker keeps, or undefined. */
export function parseIdleMarkerKey(key: string): string | undefined {
  if (!key.startsWith(IDLE)) return undefined;
  const rest = key.slice(IDLE.length);
  const slash = rest.lastIndexOf('/');
  if (rest.startsWith('r/')) return rest.slice(2, slash);
  if (rest.startsWith('h/')) return `/${rest.slice(2, slash)}`;
  return undefined;
}
