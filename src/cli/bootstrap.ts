// Creating a cluster's files: corral.yaml and its credentials (a CA, one certificate per node, the
// administrator's certificate and the join secret). Used by `corral init` and `corral local up`.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { CorralError } from '../api/errors.js';
import { parseHostPort, renderClusterConfig, type StoreConfig, type Timings } from '../config/cluster-config.js';
import { PKI_FILES } from '../config/pki-files.js';
import { makeJoinToken, newJoinSecret } from '../transport/join-token.js';
import { createCA, issueCertificate } from '../transport/pki.js';

export interface BootstrapNode {
  name: string;
  address: string;
  socket?: string;
  dataDir?: string;
  workDir?: string;
}

export interface BootstrapOptions {
  dir: string;
  cluster: string;
  nodes: BootstrapNode[];
  coordinator: string;
  join?: string;
  timings?: Partial<Timings>;
  store?: StoreConfig;
}

export interface BootstrapResult {
  configFile: string;
  pkiDir: string;
  joinToken: string;
}

/** Writes a file that must not exist yet (O_EXCL), private when it holds a secret. */
function writeNew(file: string, content: string, secret = false): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    writeFileSync(file, content, { flag: 'wx', mode: secret ? 0o600 : 0o644 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new CorralError('ALREADY_RUNNING', `${file} already exists (credentials of an earlier cluster?); remove ${path.dirname(file)} or choose another directory`);
    }
    throw err;
  }
}

function sans(address: string): { ipAddresses?: string[]; dnsNames?: string[] } {
  const host = (parseHostPort(address) as { host: string }).host;
  const hosts = isIP(host) ? { ipAddresses: [host] } : { dnsNames: [host] };
  return hosts;
}

export function bootstrapCluster(o: BootstrapOptions): BootstrapResult {
  const configFile = path.join(o.dir, 'corral.yaml');
  if (existsSync(configFile)) {
    throw new CorralError('ALREADY_RUNNING', `${configFile} already exists; nothing changed (remove it to start over, or use it as it is)`);
  }
  for (const n of o.nodes) {
    if (!parseHostPort(n.address)) throw new CorralError('USAGE', `node ${n.name}: address ${JSON.stringify(n.address)} is not HOST:PORT`);
  }
  const pkiDir = path.join(o.dir, 'pki');
  const ca = createCA({ clusterName: o.cluster });
  writeNew(path.join(pkiDir, PKI_FILES.caCert), ca.certPem);
  writeNew(path.join(pkiDir, PKI_FILES.caKey), ca.keyPem, true);
  for (const n of o.nodes) {
    const cert = issueCertificate({ ca, commonName: n.name, role: 'node', clusterName: o.cluster, ...sans(n.address) });
    writeNew(path.join(pkiDir, PKI_FILES.nodeCert(n.name)), cert.certPem);
    writeNew(path.join(pkiDir, PKI_FILES.nodeKey(n.name)), cert.keyPem as string, true);
  }
  const admin = issueCertificate({ ca, commonName: 'admin', role: 'admin', clusterName: o.cluster });
  writeNew(path.join(pkiDir, PKI_FILES.adminCert), admin.certPem);
  writeNew(path.join(pkiDir, PKI_FILES.adminKey), admin.keyPem as string, true);
  const secret = newJoinSecret();
  writeNew(path.join(pkiDir, PKI_FILES.joinSecret), secret.toString('hex') + '\n', true);
  // The config goes last: its presence means the cluster's files are complete.
  writeNew(
    configFile,
    renderClusterConfig({
      cluster: o.cluster,
      coordinator: o.coordinator,
      pki: 'pki',
      nodes: o.nodes,
      ...(o.join ? { join: o.join } : {}),
      ...(o.timings ? { timings: o.timings } : {}),
      ...(o.store ? { store: o.store } : {}),
    }),
  );
  return { configFile, pkiDir, joinToken: makeJoinToken(ca.certPem, secret) };
}
