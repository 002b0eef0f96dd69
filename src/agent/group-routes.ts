// The group endpoints (src/api/groups-wire.ts). Telling a level and publishing a configuration
// change what runs on every node: only operators (the local socket, the admin certificate) may.
// Reading status and logs is for operators too; node certificates read the store directly.

import { GROUP_PATHS } from '../api/groups-wire.js';
import type { RpcServer } from '../transport/server.js';
import type { PeerIdentity } from '../transport/types.js';
import type { GroupService } from './group-service.js';
import { isOperator } from './routes.js';

function who(peer: PeerIdentity): string {
  return peer.kind === 'tls' ? `${peer.role} ${peer.commonName}` : peer.kind;
}

export function addGroupRoutes(server: RpcServer, groups: GroupService, node: string): void {
  const allow = { allow: isOperator };
  server.route('POST', GROUP_PATHS.tell, (req) => groups.tell(req.body, `${who(req.peer)} via ${node}`, req.signal), allow);
  server.route('POST', GROUP_PATHS.reload, (req) => groups.reload(req.body), allow);
  server.route('GET', GROUP_PATHS.status, () => groups.status(), allow);
  server.route('GET', GROUP_PATHS.logs, (req) => groups.logs(req.query, req.signal), allow);
}
