// Endpoint lists and TLS settings, checked before anything connects: a typo in corral.yaml should
// fail with a message that names it, not as a connection timeout later.

import { credentials as grpcCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import { CorralError } from '../../api/errors.js';

export interface EtcdTlsOptions {
  /** PEM: the CA that signed the etcd members' server certificates. */
  ca: string;
  /** PEM client certificate and key, for an etcd that requires client certificates. */
  cert?: string;
  key?: string;
}

export interface EtcdEndpoint {
  /** As the user wrote it (for messages). */
  readonly label: string;
  /** The gRPC target: host:port (a DNS name or an IP literal, IPv6 in brackets). */
  readonly target: string;
  readonly secure: boolean;
}

const ENDPOINT = /^(?:(https?):\/\/)?(\[[0-9a-fA-F:.]+\]|[^\s/:[\]]+):(\d{1,5})\/?$/;

/** Parses "host:port", "http://host:port" or "https://host:port". */
export function parseEndpoint(text: string, tlsConfigured: boolean): EtcdEndpoint {
  const m = typeof text === 'string' ? ENDPOINT.exec(text.trim()) : null;
  const port = Number(m?.[3]);
  if (!m || !(port > 0 && port < 65536)) {
    throw new CorralError('CONFIG_INVALID', `etcd endpoint ${JSON.stringify(text)} is not HOST:PORT or https://HOST:PORT`);
  }
  const scheme = m[1];
  if (scheme === 'http' && tlsConfigured) {
    throw new CorralError('CONFIG_INVALID', `etcd endpoint ${JSON.stringify(text)} is plain http:// but TLS settings are given; write https://${m[2]}:${m[3]} or drop the TLS settings`);
  }
  return { label: text.trim(), target: `${m[2]}:${m[3]}`, secure: scheme === 'https' || tlsConfigured };
}

export function parseEndpoints(endpoints: readonly string[], tls: EtcdTlsOptions | undefined): EtcdEndpoint[] {
  if (endpoints.length === 0) {
    throw new CorralError('CONFIG_INVALID', 'no etcd endpoints: list at least one HOST:PORT (every member of the etcd cluster)');
  }
  const parsed = endpoints.map((e) => parseEndpoint(e, tls !== undefined));
  if (parsed.some((e) => e.secure) && parsed.some((e) => !e.secure)) {
    throw new CorralError('CONFIG_INVALID', `etcd endpoints ${endpoints.join(', ')} mix TLS (https://) and plain ones; every member must be reached the same way`);
  }
  return parsed;
}

/** Credentials for every endpoint: insecure, TLS with the system CAs (https:// only), or with `tls`. */
export function channelCredentials(secure: boolean, tls: EtcdTlsOptions | undefined): ChannelCredentials {
  if (!secure) return grpcCredentials.createInsecure();
  if (tls === undefined) return grpcCredentials.createSsl();
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new CorralError('CONFIG_INVALID', 'etcd TLS: a client certificate needs its key and a key needs its certificate; give both or neither');
  }
  if (!tls.ca.includes('-----BEGIN CERTIFICATE-----')) {
    throw new CorralError('CONFIG_INVALID', 'etcd TLS: the CA is not a PEM certificate');
  }
  return grpcCredentials.createSsl(
    Buffer.from(tls.ca),
    tls.key === undefined ? null : Buffer.from(tls.key),
    tls.cert === undefined ? null : Buffer.from(tls.cert),
  );
}

/**
 * Channel options. Keepalive pings detect a dead connection under a long-lived watch, but etcd
 * answers pings more frequent than its --grpc-keepalive-min-time (5 s by default) with GOAWAY
 * "too_many_pings", so they go at most every 10 s and only while a call is open. Reconnects back
 * off to at most 2 s (grpc's default is 120 s), so a member that returns is used again quickly.
 */
export const CHANNEL_OPTIONS = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 0,
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 2_000,
  // A big range answer (etcd's own limit on what it sends is 2 GiB) must not fail at grpc's 4 MiB.
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  // This client's connections are its own: closing it, or a test killing its member, does not
  // touch other clients in the process.
  'grpc.use_local_subchannel_pool': 1,
} as const;
