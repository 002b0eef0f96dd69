// The lock endpoints (src/api/lock-wire.ts). Who may lock: local clients (the socket's file mode is
// the authentication), the administrator's certificate, and node certificates, so that agents and
// the programs on their machines can serialize cluster-wide. A private daemon also answers -x and -X.

import { CorralError } from '../api/errors.js';
import { LOCK_PATHS } from '../api/lock-wire.js';
import type { RpcServer } from '../transport/server.js';
import type { PeerIdentity } from '../transport/types.js';
import { serveLockChannel } from './lock-channel.js';
import type { LockService } from './lock-service.js';
import { isOperator } from './routes.js';

/** Local clients, administrators and nodes (any peer with the cluster's certificate). */
export function mayLock(peer: PeerIdentity): boolean {
  return peer.kind === 'local' || (peer.kind === 'tls' && (peer.role === 'node' || peer.role === 'admin'));
}

export interface PrivateControls {
  /** -x: exit once idle, as soon as possible. */
  quiesce(): void;
  /** -X: exit now; held locks are reported lost and their keys expire with the lock session's TTL. */
  exit(): void;
}

function bodyOf(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new CorralError('BAD_REQUEST', 'the request body must be a JSON object');
  return body as Record<string, unknown>;
}

export function addLockRoutes(server: RpcServer, locks: LockService, controls?: PrivateControls): void {
  const allow = { allow: mayLock };
  server.channel(LOCK_PATHS.channel, (req) => serveLockChannel(locks, req), allow);
  server.route('POST', LOCK_PATHS.acquire, (req) => locks.acquire(req.body, req.peer, req.signal), allow);
  server.route('POST', LOCK_PATHS.release, (req) => {
    const b = bodyOf(req.body);
    return locks.release(b.id, b.rollback, req.peer);
  }, allow);
  server.route('POST', LOCK_PATHS.confirm, (req) => Promise.resolve(locks.confirm(bodyOf(req.body).id, req.peer)), allow);
  server.route('GET', LOCK_PATHS.list, () => locks.list(), allow);

  const notPrivate = (): Promise<never> =>
    Promise.reject(new CorralError('FORBIDDEN', 'this is a cluster agent, not a private lock daemon: stop it with systemctl (or corral local down), not corral lock -x/-X'));
  server.route('POST', LOCK_PATHS.quiesce, () => {
    if (!controls) return notPrivate();
    controls.quiesce();
    return Promise.resolve({ quiescing: true });
  }, { allow: isOperator });
  server.route('POST', LOCK_PATHS.exit, () => {
    if (!controls) return notPrivate();
    // Answer first: the exit closes the server.
    setImmediate(() => controls.exit());
    return Promise.resolve({ exiting: true });
  }, { allow: isOperator });
}
