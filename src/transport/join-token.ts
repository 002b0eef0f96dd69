// Join tokens: one string that lets a new machine join the cluster, as kubeadm's and k3s's do.
// It carries the CA's public-key hash (so the joiner can pin the CA it is handed) and a secret
// (so the cluster can tell a legitimate joiner). The secret itself never crosses the wire: both
// sides derive a TLS 1.3 PSK identity and key from it.

import { hkdfSync, randomBytes } from 'node:crypto';
import { CorralError } from '../api/errors.js';
import { caFingerprint } from './pki.js';

const PREFIX = 'corral1';
const TOKEN_SHAPE = /^corral1\.([0-9a-f]{64})\.([A-Za-z0-9_-]+)$/;
const MIN_SECRET_BYTES = 16;
const MAX_SECRET_BYTES = 64;
const SALT = Buffer.from('corral join v1');

export interface JoinToken {
  /** 'sha256:<hex>' of the CA's SubjectPublicKeyInfo; compare with caFingerprint() of the CA received. */
  caFingerprint: string;
  secret: Buffer;
}

/** A fresh random join secret. */
export function newJoinSecret(): Buffer {
  return randomBytes(32);
}

/** `corral1.<sha256 hex of the CA's SPKI>.<base64url secret>` */
export function makeJoinToken(caCertPem: string, secret: Buffer): string {
  if (secret.length < MIN_SECRET_BYTES || secret.length > MAX_SECRET_BYTES) {
    throw new CorralError('USAGE', `a join secret must be ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES} bytes`);
  }
  const hash = caFingerprint(caCertPem).slice('sha256:'.length);
  return `${PREFIX}.${hash}.${secret.toString('base64url')}`;
}

export function parseJoinToken(token: string): JoinToken {
  const match = TOKEN_SHAPE.exec(token.trim());
  const secret = match?.[2] === undefined ? undefined : Buffer.from(match[2], 'base64url');
  if (!match?.[1] || !secret || secret.length < MIN_SECRET_BYTES || secret.length > MAX_SECRET_BYTES) {
    throw new CorralError(
      'USAGE',
      `malformed join token: expected ${PREFIX}.<64 hex digits>.<secret>; copy the whole token again from the cluster`,
    );
  }
  return { caFingerprint: `sha256:${match[1]}`, secret };
}

/**
 * The PSK identity and key for a join secret. HKDF makes them one-way: the identity travels in
 * clear in the ClientHello, and neither it nor the handshake reveals the secret.
 */
export function joinPsk(secret: Buffer): { identity: string; key: Buffer } {
  const derive = (info: string, length: number): Buffer => Buffer.from(hkdfSync('sha256', secret, SALT, info, length));
  return { identity: `corral-join-${derive('psk identity', 12).toString('hex')}`, key: derive('psk key', 32) };
}
