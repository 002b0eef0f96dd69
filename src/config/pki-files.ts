// Where a cluster's credentials live inside its pki directory, and loading them with errors that
// say which file is missing and how to get it.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CorralError } from '../api/errors.js';

export const PKI_FILES = {
  caCert: 'ca.crt',
  /** Only on the coordinator (and wherever `corral init` ran): signs node certificates. */
  caKey: 'ca.key',
  /** Only on the coordinator: the join secret behind `corral token`. */
  joinSecret: 'join.secret',
  nodeCert: (node: string) => path.join('nodes', `${node}.crt`),
  nodeKey: (node: string) => path.join('nodes', `${node}.key`),
  adminCert: 'admin.crt',
  adminKey: 'admin.key',
} as const;

export interface PemCredentials {
  ca: string;
  cert: string;
  key: string;
}

function read(pkiDir: string, file: string, hint: string): string {
  const full = path.join(pkiDir, file);
  try {
    return readFileSync(full, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'is missing' : `cannot be read (${code ?? (err as Error).message})`;
    throw new CorralError('TLS', `${full} ${why}; ${hint}`);
  }
}

/** A node's mutual-TLS credentials. */
export function loadNodeCredentials(pkiDir: string, node: string): PemCredentials {
  const hint = `node ${node} gets its certificate from 'corral init' (on the first node) or 'corral join'`;
  return {
    ca: read(pkiDir, PKI_FILES.caCert, hint),
    cert: read(pkiDir, PKI_FILES.nodeCert(node), hint),
    key: read(pkiDir, PKI_FILES.nodeKey(node), hint),
  };
}

/** The administrator's client credentials (written by `corral init`). */
export function loadAdminCredentials(pkiDir: string): PemCredentials {
  const hint = "copy the admin credentials from the machine where 'corral init' ran";
  return {
    ca: read(pkiDir, PKI_FILES.caCert, hint),
    cert: read(pkiDir, PKI_FILES.adminCert, hint),
    key: read(pkiDir, PKI_FILES.adminKey, hint),
  };
}

export function readCaKey(pkiDir: string): string {
  return read(pkiDir, PKI_FILES.caKey, 'only the coordinator (where corral init ran) can sign certificates');
}
