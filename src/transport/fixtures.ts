// Helpers for the transport's tests: a cluster's worth of credentials, temporary socket paths, and
// a raw probe that records every byte a hostile peer gets back. Not used by production code.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { createCA, issueCertificate, type CertifiedKey } from './pki.js';
import type { Role, TlsCredentials } from './types.js';

export interface TestCluster {
  ca: CertifiedKey;
  /** The server's node certificate, CN n1, SAN 127.0.0.1. */
  server: TlsCredentials;
  admin: TlsCredentials;
  node2: TlsCredentials;
  credentials(commonName: string, role: Role, extra?: { notBefore?: Date; notAfter?: Date }): TlsCredentials;
}

export function makeCluster(clusterName = 'alpha'): TestCluster {
  const ca = createCA({ clusterName });
  const credentials = (commonName: string, role: Role, extra: { notBefore?: Date; notAfter?: Date } = {}): TlsCredentials => {
    const issued = issueCertificate({ ca, commonName, role, clusterName, ipAddresses: ['127.0.0.1'], ...extra });
    return { ca: ca.certPem, cert: issued.certPem, key: issued.keyPem ?? '' };
  };
  return { ca, credentials, server: credentials('n1', 'node'), admin: credentials('alice', 'admin'), node2: credentials('n2', 'node') };
}

/** A private temporary directory; `cleanup` removes it and everything in it. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'corral-transport-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface ProbeResult {
  /** Everything read from the socket (decrypted, for a TLS socket). */
  received: Buffer;
  /** The error that ended the connection, if any (its code, or message). */
  error?: string;
  /** The peer closed (or reset) the connection before the probe gave up. */
  closedByPeer: boolean;
}

/** The client preface of HTTP/2 with prior knowledge, followed by an empty SETTINGS frame. */
export const H2_PREFACE = Buffer.concat([
  Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
  Buffer.from([0, 0, 0, 0x04, 0, 0, 0, 0, 0]),
]);

/**
 * Sends `payload` once `socket` is ready (connect, or secureConnect for TLS), then records what
 * comes back until the peer closes, `until` says enough, or `waitMs` pass.
 */
export function probe(
  socket: Socket,
  payload: Buffer,
  readyEvent: 'connect' | 'secureConnect',
  opts: { waitMs?: number; until?: (received: Buffer) => boolean } = {},
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    let settled = false;
    const finish = (closedByPeer: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ received: Buffer.concat(chunks), closedByPeer, ...(error === undefined ? {} : { error }) });
    };
    const timer = setTimeout(() => finish(false), opts.waitMs ?? 2_000);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (opts.until?.(Buffer.concat(chunks))) finish(false);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message;
    });
    socket.once('close', () => finish(true));
    socket.once(readyEvent, () => {
      if (payload.length > 0) socket.write(payload);
    });
  });
}

/** True when bytes look like the start of an HTTP/1 response or an HTTP/2 server preface (SETTINGS). */
export function looksLikeHttp(bytes: Buffer): boolean {
  if (bytes.subarray(0, 5).toString('latin1') === 'HTTP/') return true;
  return bytes.length >= 9 && bytes[3] === 0x04 && bytes[0] === 0;
}
