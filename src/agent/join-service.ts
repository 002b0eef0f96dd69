// The coordinator's join endpoint. A new node proves it holds the join token by completing a
// TLS 1.3 handshake keyed with a PSK derived from the token's secret (so nothing listens without
// mutual authentication, and the secret never crosses the wire); it receives a node certificate
// for the public key it sent, the CA, and what it needs to write its corral.yaml.

import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { CorralError } from '../api/errors.js';
import { obj } from '../api/store-wire.js';
import { PATHS, type JoinRequest, type JoinResponse } from '../api/types.js';
import { formatHostPort, NODE_NAME, parseHostPort } from '../config/cluster-config.js';
import { PKI_FILES, readCaKey } from '../config/pki-files.js';
import { readClusterView } from '../coord/membership.js';
import { joinPsk } from '../transport/join-token.js';
import { issueCertificate } from '../transport/pki.js';
import { RpcServer } from '../transport/server.js';
import type { Agent } from './agent.js';

function parseJoinRequest(body: unknown): JoinRequest {
  const b = obj(body, 'join request');
  if (typeof b.node !== 'string' || !NODE_NAME.test(b.node)) {
    throw new CorralError('BAD_REQUEST', 'node must be a node name (letters, digits, ".", "_", "-")');
  }
  if (typeof b.address !== 'string' || !parseHostPort(b.address)) throw new CorralError('BAD_REQUEST', 'address must be HOST:PORT');
  if (typeof b.publicKeyPem !== 'string' || b.publicKeyPem.length > 4096) throw new CorralError('BAD_REQUEST', 'publicKeyPem must be a PEM public key');
  try {
    const key = createPublicKey(b.publicKeyPem);
    if (key.asymmetricKeyType !== 'ec') throw new Error('not an EC key');
  } catch (err) {
    throw new CorralError('BAD_REQUEST', `publicKeyPem is not a usable EC public key: ${(err as Error).message}`);
  }
  return { node: b.node, address: b.address, publicKeyPem: b.publicKeyPem };
}

export class JoinService {
  private constructor(private readonly server: RpcServer) {}

  static async start(agent: Agent): Promise<JoinService | undefined> {
    const { config, logger } = agent;
    const address = config.join;
    if (!address) return undefined;
    let secret: Buffer;
    try {
      secret = Buffer.from(readFileSync(path.join(config.pkiDir, PKI_FILES.joinSecret), 'utf8').trim(), 'hex');
    } catch {
      logger.info('no join secret in the pki directory: joining is disabled on this coordinator');
      return undefined;
    }
    const caPem = readFileSync(path.join(config.pkiDir, PKI_FILES.caCert), 'utf8');
    const caKeyPem = readCaKey(config.pkiDir);
    const server = new RpcServer({ logger: logger.child({ component: 'join' }) });
    server.route(
      'POST',
      PATHS.join,
      async (req): Promise<JoinResponse> => {
        const join = parseJoinRequest(req.body);
        const store = agent.storeClient;
        const view = await readClusterView(store);
        // A name that exists (registered, or in the cluster's configuration) is never handed out
        // again: the token would otherwise let its holder impersonate that node.
        const existing = view.nodes.find((n) => n.name === join.node);
        if (existing) {
          throw new CorralError(
            'JOIN_REFUSED',
            `node ${join.node} is already a member (${existing.up ? 'up' : 'down'}, ${existing.address}); join under another name`,
          );
        }
        if (config.nodes.some((n) => n.name === join.node)) {
          throw new CorralError('JOIN_REFUSED', `node ${join.node} is already in the cluster's configuration; join under another name`);
        }
        const clash = view.nodes.find((n) => n.address === join.address && n.name !== join.node);
        if (clash) throw new CorralError('JOIN_REFUSED', `address ${join.address} already belongs to node ${clash.name}`);
        const host = (parseHostPort(join.address) as { host: string }).host;
        const { certPem } = issueCertificate({
          ca: { certPem: caPem, keyPem: caKeyPem },
          commonName: join.node,
          role: 'node',
          clusterName: config.cluster,
          publicKeyPem: join.publicKeyPem,
          ...(isIP(host) ? { ipAddresses: [host] } : { dnsNames: [host] }),
        });
        // The node enters the registry when its agent first starts (it writes its own key), so a
        // join whose joiner then gives up (say, the CA did not match its token) leaves nothing behind.
        logger.info({ peer: join.node, address: join.address }, 'issued a node certificate to a joining node');
        return {
          cluster: config.cluster,
          caPem,
          certPem,
          coordinator: { name: agent.self.name, address: formatHostPort(agent.self.address) },
          join: formatHostPort(address),
          timings: { ...config.timings },
        };
      },
      { allow: (peer) => peer.kind === 'psk' },
    );
    const psk = joinPsk(secret);
    await server.listenPsk({ host: address.host, port: address.port, identity: psk.identity, key: psk.key });
    logger.info({ address: formatHostPort(address) }, 'accepting joins');
    return new JoinService(server);
  }

  close(): Promise<void> {
    return this.server.close();
  }
}
