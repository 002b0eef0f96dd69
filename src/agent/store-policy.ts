// Who may write what in the embedded store. Local clients (the socket is mode 0600) and the
// administrator's certificate may do anything. A node's certificate (which every holder of the join
// token can obtain) may read everything but write only what is its own:
//
// - its own namespaced keys: /corral/nodes/<self>, /corral/members/<self>, /corral/groups/status/<self>;
// - session-owned keys, whose last path segment is the hex id of a lease the node owns, alone or
//   followed by "." and a request id (campaign keys, lock waiters); a put there must attach that lease;
// - shared compare-and-swap keys of lock resources (/corral/locks/state/);
// - its own leases: it may keep alive, revoke or inspect only leases it was granted.
//
// A lease's owner is recorded at grant time in /corral/leases/<hex>, attached to the lease itself,
// so the record lives exactly as long as the lease.

import { CorralError } from '../api/errors.js';
import type { LeaseId, Store, TxnOp } from '../store/store.js';
import type { PeerIdentity } from '../transport/types.js';
import { KEYS } from '../coord/membership.js';
import { GROUP_KEYS } from '../api/groups-wire.js';

export const LEASE_OWNERS = '/corral/leases/';

/**
 * Prefixes under which a key's last segment names the lease of the session that owns it, as
 * `<lease hex>` or `<lease hex>.<request id>`: campaign keys, lock waiter keys, idle markers.
 */
export const SESSION_OWNED_PREFIXES = ['/corral/election/', '/corral/locks/r/', '/corral/locks/h/', '/corral/locks/idle/'];

/** Shared compare-and-swap points any node may write (a lock resource's counters). */
export const SHARED_PREFIXES = ['/corral/locks/state/'];

function ownNamespaces(node: string): string[] {
  return [KEYS.registry + node, KEYS.members + node, GROUP_KEYS.status + node];
}

export type StoreActor = { kind: 'trusted' } | { kind: 'node'; name: string };

export function actorOf(peer: PeerIdentity): StoreActor {
  if (peer.kind === 'local' || (peer.kind === 'tls' && peer.role === 'admin')) return { kind: 'trusted' };
  if (peer.kind === 'tls' && peer.role === 'node') return { kind: 'node', name: peer.commonName };
  throw new CorralError('FORBIDDEN', 'this peer may not use the store');
}

function leaseOfKey(key: string): LeaseId | undefined {
  if (!SESSION_OWNED_PREFIXES.some((p) => key.startsWith(p))) return undefined;
  const m = /^([0-9a-f]{1,16})(?:\.[A-Za-z0-9_-]{1,64})?$/.exec(key.slice(key.lastIndexOf('/') + 1));
  return m ? BigInt(`0x${m[1] as string}`) : undefined;
}

export class StorePolicy {
  constructor(private readonly store: Store) {}

  private forbidden(actor: { name: string }, what: string): never {
    throw new CorralError('FORBIDDEN', `node ${actor.name} may not ${what}: nodes write only their own keys and leases (use the admin credentials or the local socket)`);
  }

  async ownsLease(actor: { name: string }, lease: LeaseId): Promise<boolean> {
    const { kv } = await this.store.get(LEASE_OWNERS + lease.toString(16));
    return kv !== undefined && kv.value === actor.name && kv.lease === lease;
  }

  async checkLease(actor: StoreActor, lease: LeaseId, what: string): Promise<void> {
    if (actor.kind === 'trusted') return;
    if (await this.ownsLease(actor, lease)) return;
    // A lease that is gone is reported as gone (a session relies on LEASE_NOT_FOUND), not as forbidden.
    if ((await this.store.leaseStatus(lease)).remainingSeconds < 0) {
      throw new CorralError('LEASE_NOT_FOUND', `lease ${lease.toString(16)} does not exist or has expired`);
    }
    this.forbidden(actor, `${what} lease ${lease.toString(16)}, which it does not own`);
  }

  /** Records who was granted a lease (trusted grants are not recorded: nodes cannot use them). */
  async recordGrant(actor: StoreActor, lease: LeaseId): Promise<void> {
    if (actor.kind === 'trusted') return;
    try {
      await this.store.put(LEASE_OWNERS + lease.toString(16), actor.name, { lease });
    } catch (err) {
      await this.store.revokeLease(lease).catch(() => undefined);
      throw err;
    }
  }

  private inOwnNamespace(actor: { name: string }, key: string): boolean {
    return ownNamespaces(actor.name).some((ns) => key === ns);
  }

  async checkWrite(actor: StoreActor, op: TxnOp): Promise<void> {
    if (actor.kind === 'trusted' || op.type === 'get' || op.type === 'range') return;
    if (op.type === 'delete' && op.prefix) this.forbidden(actor, `delete every key under ${op.key}`);
    if (SHARED_PREFIXES.some((p) => op.key.startsWith(p))) return;
    if (this.inOwnNamespace(actor, op.key)) {
      if (op.type === 'put' && op.lease !== undefined && op.lease !== 0n) await this.checkLease(actor, op.lease, 'attach a key to');
      return;
    }
    const owner = leaseOfKey(op.key);
    if (owner === undefined) this.forbidden(actor, `write ${op.key}`);
    if (!(await this.ownsLease(actor, owner))) this.forbidden(actor, `write ${op.key}, which belongs to lease ${owner.toString(16)}`);
    if (op.type === 'put' && op.lease !== owner) this.forbidden(actor, `put ${op.key} without attaching lease ${owner.toString(16)}`);
  }
}
