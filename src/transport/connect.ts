// Opening a client HTTP/2 session to an endpoint, and turning every way that can fail into one
// CorralError line that names the endpoint and says what to do. Import-light: the CLI loads it.

import { connect as connectH2, type ClientHttp2Session } from 'node:http2';
import { connect as connectNet, type Socket } from 'node:net';
import { connect as connectTls, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import { CorralError } from '../api/errors.js';
import { connectError, errorCode, SERVER_NAME_MISMATCH, timeoutError, tlsHint } from './connect-errors.js';
import { describeEndpoint, SESSION_WINDOW, STREAM_WINDOW, type Endpoint } from './types.js';

export { connectError } from './connect-errors.js';

const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;
const PSK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';

/**
 * Connects, completes the (TLS) handshake and waits for the server's HTTP/2 SETTINGS: under TLS
 * 1.3 the server judges our certificate only after our side has finished the handshake, so a
 * server that drops us before its SETTINGS has refused our credentials.
 */
export async function openSession(endpoint: Endpoint, timeoutMs: number): Promise<ClientHttp2Session> {
  const where = describeEndpoint(endpoint);
  const socket = endpoint.kind === 'unix' ? connectNet(endpoint.path) : tlsSocket(endpoint);
  const deadline = setTimeout(() => socket.destroy(timeoutError(where, timeoutMs)), timeoutMs);
  try {
    await settle(socket, endpoint.kind === 'unix' ? 'connect' : 'secureConnect');
  } catch (err) {
    clearTimeout(deadline);
    socket.destroy();
    throw connectError(err, endpoint);
  }
  const authority = endpoint.kind === 'unix' ? 'http://localhost' : `https://${where.replace(/^[a-z]+:\/\//, '')}`;
  const session = connectH2(authority, { createConnection: () => socket, settings: { enablePush: false, initialWindowSize: STREAM_WINDOW } });
  try {
    await settle(session, 'remoteSettings');
    session.setLocalWindowSize(SESSION_WINDOW);
    return session;
  } catch (err) {
    session.destroy();
    throw err instanceof CorralError ? err : refusedAfterHandshake(err, endpoint);
  } finally {
    clearTimeout(deadline);
  }
}

function tlsSocket(endpoint: Exclude<Endpoint, { kind: 'unix' }>): Socket {
  try {
    return connectTls(tlsOptions(endpoint));
  } catch (err) {
    // tls.connect throws at once on unusable PEM input.
    const detail = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new CorralError('TLS', `the TLS credentials for ${describeEndpoint(endpoint)} cannot be used (${detail}): check the CA, certificate and key files`, {
      cause: err,
    });
  }
}

function tlsOptions(endpoint: Exclude<Endpoint, { kind: 'unix' }>): ConnectionOptions {
  // noDelay: small frames (a request, a window update) must not wait for Nagle and delayed ACKs.
  const base = { host: endpoint.host, port: endpoint.port, ALPNProtocols: ['h2'], noDelay: true, ...TLS13 };
  if (endpoint.kind === 'psk') {
    const { identity, key } = endpoint;
    // No certificate in a PSK handshake: knowing the key is what authenticates the server.
    return { ...base, ciphers: PSK_CIPHERS, pskCallback: () => ({ psk: key, identity }), checkServerIdentity: () => undefined };
  }
  const { ca, cert, key } = endpoint.credentials;
  const expected = endpoint.serverName;
  return {
    ...base,
    ca,
    cert,
    key,
    rejectUnauthorized: true,
    // The chain to the cluster CA is checked by OpenSSL; addresses are usually IPs absent from the
    // certificate, so the identity that matters is the node name in the CN.
    checkServerIdentity: (_host, peerCert) => (expected === undefined ? undefined : checkNodeName(peerCert, expected)),
  };
}

function checkNodeName(cert: PeerCertificate, expected: string): Error | undefined {
  const { CN, OU } = cert.subject ?? {};
  if (CN === expected && OU === 'node') return undefined;
  const err = new Error(`the server's certificate is for ${OU === 'node' ? 'node' : `'${String(OU)}'`} ${String(CN)}, expected node ${expected}`);
  (err as NodeJS.ErrnoException).code = SERVER_NAME_MISMATCH;
  return err;
}

/** Resolves on `event`; rejects on 'error', or on 'close' before it. */
function settle(emitter: Socket | ClientHttp2Session, event: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      emitter.off(event, onEvent).off('error', onError).off('close', onClose);
    };
    const onEvent = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => {
      cleanup();
      reject(Object.assign(new Error('connection closed'), { code: 'ECONNRESET' }));
    };
    emitter.once(event, onEvent).once('error', onError).once('close', onClose);
  });
}

/** The server closed the connection after our handshake but before speaking HTTP/2. */
function refusedAfterHandshake(err: unknown, endpoint: Endpoint): CorralError {
  const where = describeEndpoint(endpoint);
  const code = errorCode(err);
  if (endpoint.kind === 'unix') return new CorralError('UNAVAILABLE', `${where} closed the connection (${code}): is it a corral agent's socket?`, { cause: err });
  const hint = tlsHint(endpoint, 'ERR_SSL_');
  return new CorralError('TLS', `${where} dropped the connection after the TLS handshake (${code}): ${hint}`, { cause: err });
}
