// Turning every way a connection can fail into one CorralError line that names the endpoint and
// says what to do. Import-free (the error catalogue only): the CLI's raw channel loads it.

import { CorralError } from '../api/errors.js';
import { describeEndpoint, type Endpoint } from './types.js';

export const SERVER_NAME_MISMATCH = 'ERR_CORRAL_SERVER_NAME';

export function timeoutError(where: string, ms: number): CorralError {
  return new CorralError('UNAVAILABLE', `no answer from ${where} within ${ms} ms: check that the host is up and the address is right`);
}

export function errorCode(err: unknown): string {
  return String((err as NodeJS.ErrnoException | undefined)?.code ?? (err instanceof Error ? err.message : err));
}

function isTlsFailure(code: string): boolean {
  return code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code === SERVER_NAME_MISMATCH || /CERT|SIGNATURE|ISSUER|SELF_SIGNED|LEAF/.test(code);
}

/** A failure before the session exists: reaching the endpoint or the TLS handshake. */
export function connectError(err: unknown, endpoint: Endpoint): CorralError {
  if (err instanceof CorralError) return err;
  const where = describeEndpoint(endpoint);
  const code = errorCode(err);
  const opts = { cause: err };
  if (code === SERVER_NAME_MISMATCH) return new CorralError('TLS', `${where}: ${(err as Error).message}; check the node name or address`, opts);
  if (isTlsFailure(code)) return new CorralError('TLS', `TLS handshake with ${where} failed (${code}): ${tlsHint(endpoint, code)}`, opts);
  if (endpoint.kind === 'unix') return new CorralError('UNAVAILABLE', unixHint(endpoint.path, code), opts);
  if (code === 'ECONNREFUSED') return new CorralError('UNAVAILABLE', `nothing listens on ${where} (ECONNREFUSED): is the agent running on that host and port?`, opts);
  return new CorralError('UNAVAILABLE', `cannot reach ${where} (${code}): check the address and that the agent runs there`, opts);
}

function unixHint(path: string, code: string): string {
  switch (code) {
    case 'ENOENT':
      return `no agent socket at ${path} (ENOENT): start the agent ('corral agent') or point at its socket`;
    case 'ECONNREFUSED':
      return `nothing listens on ${path} (ECONNREFUSED): the agent is not running; start it ('corral agent')`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied on ${path} (${code}): run as the agent's user`;
    default:
      return `cannot connect to ${path} (${code}): check that the agent runs and the path is its socket`;
  }
}

export function tlsHint(endpoint: Endpoint, code: string): string {
  if (endpoint.kind === 'psk') return 'the join token is wrong or expired; get a fresh one from the cluster';
  if (code.startsWith('ERR_SSL_')) return 'the server refused our certificate (expired, or not issued by this cluster\'s CA?)';
  return 'the server\'s certificate is not valid under this cluster\'s CA; check the address and the CA file';
}
