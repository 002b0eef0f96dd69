// Types shared by the transport's server, client and PKI. No imports, so this file costs nothing
// on the CLI's start-up path, where the client sits.

export type Role = 'node' | 'admin';

/**
 * HTTP/2 flow-control windows, both ends: how much a peer may send on one stream, and on the
 * whole connection, before the reader's acknowledgement. The protocol's 64 KiB made every
 * large transfer wait for a round trip through the receiving process per 64 KiB (on a busy
 * machine, milliseconds each: a 200 MB push to 8 agents took 9 s instead of 5). The connection
 * window also bounds what an unread connection can hold in memory.
 */
export const STREAM_WINDOW = 1024 * 1024;
export const SESSION_WINDOW = 8 * 1024 * 1024;

/** Who is calling, as the server established it from the connection (never from the request). */
export type PeerIdentity =
  | { kind: 'local' }
  | { kind: 'tls'; commonName: string; role: Role; clusterName: string }
  | { kind: 'psk'; identity: string };

/** PEM-encoded credentials for mutual TLS under the cluster CA. */
export interface TlsCredentials {
  /** The cluster CA certificate: the only trust anchor. */
  ca: string;
  /** This node's (or admin's) certificate, issued by the CA. */
  cert: string;
  key: string;
}

export type Endpoint =
  | { kind: 'unix'; path: string }
  | {
      kind: 'tls';
      host: string;
      port: number;
      credentials: TlsCredentials;
      /** Expected CN of the server's node certificate; unset accepts any node of the cluster. */
      serverName?: string;
    }
  | { kind: 'psk'; host: string; port: number; identity: string; key: Buffer };

/** A one-line description of an endpoint for error messages. */
export function describeEndpoint(endpoint: Endpoint): string {
  switch (endpoint.kind) {
    case 'unix':
      return `unix:${endpoint.path}`;
    case 'tls':
    case 'psk': {
      const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
      return `${endpoint.kind === 'tls' ? 'https' : 'psk'}://${host}:${endpoint.port}`;
    }
  }
}

/**
 * The keepalive of a connection with requests in flight, from a cluster's timings: a PING once per
 * session TTL, to be answered within the request timeout (at least 5 s, so that a loaded machine
 * is not taken for a dead one). A peer that vanished without closing its connections then fails
 * its streams within a TTL plus that timeout, like a stopped agent's session.
 */
export function keepaliveOf(timings: { sessionTtlSeconds: number; requestTimeoutMs: number }): { keepaliveMs: number; keepaliveTimeoutMs: number } {
  return { keepaliveMs: timings.sessionTtlSeconds * 1000, keepaliveTimeoutMs: Math.max(5000, timings.requestTimeoutMs) };
}
