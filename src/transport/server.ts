// The RPC server: HTTP/2 with JSON bodies on up to three kinds of listener sharing one route
// table. UNIX socket (h2c; file permissions authenticate the local CLI), TCP with mutual TLS 1.3
// under the cluster CA, and TCP with a TLS 1.3 external PSK for joining nodes. On TCP, no route
// answers a peer that has not completed the authenticated handshake.

import {
  constants,
  createSecureServer,
  createServer,
  type Http2SecureServer,
  type Http2Server,
  type Http2Session,
  type SecureServerOptions,
  type ServerHttp2Stream,
  type ServerOptions,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { CorralError } from '../api/errors.js';
import { nullLogger, type Logger } from '../util/log.js';
import { Exchange, type ExchangeHost } from './exchange.js';
import { peerIdentity } from './pki.js';
import { RouteTable, type RouteOptions, type RpcHandler, type RpcMethod } from './routes.js';
import { SESSION_WINDOW, STREAM_WINDOW, type PeerIdentity, type TlsCredentials } from './types.js';
import { clearStaleSocket, listenUnixSocket, removeSocketFile } from './unix-socket.js';

export type { RouteOptions, RpcHandler, RpcMethod, RpcRequest } from './routes.js';
export type { PeerIdentity } from './types.js';

export interface RpcServerOptions {
  logger?: Logger;
  /** Largest accepted request body (default 1 MiB). */
  maxBodyBytes?: number;
  /** Concurrent streams one session may open (default 128). */
  maxConcurrentStreams?: number;
  /** A session must send its HTTP/2 preface within this (default 10 s). */
  prefaceTimeoutMs?: number;
  /** A TLS handshake must finish within this (default 10 s). */
  handshakeTimeoutMs?: number;
  /** A request body must arrive within this (default 30 s). */
  bodyTimeoutMs?: number;
  /** close() lets sessions finish for this long, then destroys them (default 2 s). */
  closeGraceMs?: number;
  /** Connections per listener (default 1024). */
  maxConnections?: number;
  /** Called when an HTTP/2 session opens or closes (a private daemon's idle exit counts them). */
  onSessionsChange?: (open: number) => void;
}

type H2Server = Http2Server | Http2SecureServer;

interface Listener {
  server: H2Server;
  sessions: Set<Http2Session>;
  /** Raw connections, including those still in the TLS handshake, so close() can end them. */
  sockets: Set<Socket>;
  socketFile?: { path: string; ino: number };
}

const LOCAL: PeerIdentity = { kind: 'local' };
const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;
/** PSK through node's callback API only works with SHA-256 suites under TLS 1.3. */
const PSK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';

export class RpcServer {
  private readonly routes = new RouteTable();
  private readonly listeners: Listener[] = [];
  private readonly peers = new WeakMap<Http2Session, PeerIdentity>();
  private readonly host: ExchangeHost;
  private readonly logger: Logger;
  private readonly opts: Required<Omit<RpcServerOptions, 'logger' | 'onSessionsChange'>>;
  private readonly onSessionsChange: ((open: number) => void) | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: RpcServerOptions = {}) {
    this.logger = options.logger ?? nullLogger;
    this.onSessionsChange = options.onSessionsChange;
    this.opts = {
      maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024,
      maxConcurrentStreams: options.maxConcurrentStreams ?? 128,
      prefaceTimeoutMs: options.prefaceTimeoutMs ?? 10_000,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
      bodyTimeoutMs: options.bodyTimeoutMs ?? 30_000,
      closeGraceMs: options.closeGraceMs ?? 2_000,
      maxConnections: options.maxConnections ?? 1024,
    };
    this.host = {
      routes: this.routes,
      maxBodyBytes: this.opts.maxBodyBytes,
      bodyTimeoutMs: this.opts.bodyTimeoutMs,
      logger: this.logger,
      active: new Set(),
    };
  }

  /** Open HTTP/2 sessions over every listener. */
  get sessionCount(): number {
    let n = 0;
    for (const l of this.listeners) n += l.sessions.size;
    return n;
  }

  route(method: RpcMethod, path: string, handler: RpcHandler, opts?: RouteOptions): void {
    this.routes.add(method, path, handler, opts);
  }

  /** Plain h2c on a UNIX socket; every peer is {kind:'local'}: the file mode is the access control. */
  async listenUnix(path: string, opts: { mode?: number } = {}): Promise<void> {
    this.assertOpen();
    const mode = opts.mode ?? 0o600;
    await clearStaleSocket(path);
    const listener = this.adopt(createServer(this.h2Options()), () => LOCAL);
    try {
      listener.socketFile = { path, ino: await listenUnixSocket(listener.server, path, mode) };
    } catch (err) {
      throw listenError(err, `unix:${path}`);
    }
  }

  /** Mutual TLS 1.3 under the cluster CA; returns the bound port. */
  async listenTls(opts: { host: string; port: number; credentials: TlsCredentials }): Promise<number> {
    this.assertOpen();
    const { ca, cert, key } = opts.credentials;
    const server = secureServer({
      ...this.h2Options(),
      ...TLS13,
      ca,
      cert,
      key,
      requestCert: true,
      rejectUnauthorized: true,
      allowHTTP1: false,
      handshakeTimeout: this.opts.handshakeTimeoutMs,
    } satisfies SecureServerOptions);
    this.adopt(server, tlsPeer);
    return listenTcp(server, opts.host, opts.port);
  }

  /** TLS 1.3 with an external pre-shared key (the join endpoint); returns the bound port. */
  async listenPsk(opts: { host: string; port: number; identity: string; key: Buffer }): Promise<number> {
    this.assertOpen();
    const { identity, key } = opts;
    if (Buffer.byteLength(identity) > 128 || identity === '') throw new CorralError('USAGE', 'PSK identity must be 1 to 128 bytes');
    if (key.length < 16 || key.length > 256) throw new CorralError('USAGE', 'PSK must be 16 to 256 bytes');
    const server = secureServer({
      ...this.h2Options(),
      ...TLS13,
      ciphers: PSK_CIPHERS,
      // Synchronous by node's contract; a wrong key fails the handshake's binder check.
      pskCallback: (_socket, offered) => (offered === identity ? key : null),
      allowHTTP1: false,
      handshakeTimeout: this.opts.handshakeTimeoutMs,
    } satisfies SecureServerOptions);
    const peer: PeerIdentity = { kind: 'psk', identity };
    this.adopt(server, () => peer);
    return listenTcp(server, opts.host, opts.port);
  }

  /** Stops accepting, ends open streams, closes sessions (destroying them after a grace), removes the socket file. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const stopped = this.listeners.map((l) => new Promise<void>((resolve) => l.server.close(() => resolve())));
    for (const exchange of [...this.host.active]) exchange.shutdown();
    const sessions = this.listeners.flatMap((l) => [...l.sessions]);
    // close() sends GOAWAY and closes each session once its streams end (the SHUTTING_DOWN lines).
    for (const session of sessions) if (!session.closed) session.close();
    await withinGrace(Promise.all(sessions.map(sessionClosed)), this.opts.closeGraceMs);
    for (const l of this.listeners) {
      for (const session of l.sessions) session.destroy();
      for (const socket of l.sockets) socket.destroy();
    }
    await Promise.all(stopped);
    for (const { socketFile } of this.listeners) if (socketFile) await removeSocketFile(socketFile.path, socketFile.ino);
  }

  private h2Options(): ServerOptions {
    return {
      settings: { maxConcurrentStreams: this.opts.maxConcurrentStreams, initialWindowSize: STREAM_WINDOW },
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: 100,
      maxHeaderListPairs: 64,
      unknownProtocolTimeout: 1_000,
    };
  }

  /** Wires a new HTTP/2 server into the shared routes; `peerOf` says who each session is. */
  private adopt(server: H2Server, peerOf: (session: Http2Session) => PeerIdentity): Listener {
    const listener: Listener = { server, sessions: new Set(), sockets: new Set() };
    this.listeners.push(listener);
    server.maxConnections = this.opts.maxConnections;
    server.on('connection', (socket: Socket) => {
      // TCP: small HTTP/2 frames must not wait for Nagle and the peer's delayed ACK (40 ms stalls).
      if (typeof socket.setNoDelay === 'function' && socket.remoteAddress !== undefined) socket.setNoDelay(true);
      listener.sockets.add(socket);
      socket.once('close', () => listener.sockets.delete(socket));
    });
    server.on('session', (session: Http2Session) => this.onSession(listener, session, peerOf));
    server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.onStream(stream, headers));
    server.on('sessionError', (err: Error) => this.logger.debug({ err }, 'rpc session error'));
    server.on('tlsClientError', (err: Error) => this.logger.debug({ err }, 'rpc TLS handshake failed'));
    // No HTTP/1 fallback: a TLS peer without ALPN h2 is dropped at once.
    server.on('unknownProtocol', (socket: TLSSocket) => socket.destroy());
    server.on('error', (err: Error) => this.logger.warn({ err }, 'rpc listener error'));
    return listener;
  }

  private onSession(listener: Listener, session: Http2Session, peerOf: (session: Http2Session) => PeerIdentity): void {
    let peer: PeerIdentity;
    try {
      peer = peerOf(session);
    } catch (err) {
      this.logger.warn({ err }, 'rpc peer rejected');
      session.destroy();
      return;
    }
    this.peers.set(session, peer);
    session.setLocalWindowSize(SESSION_WINDOW);
    listener.sessions.add(session);
    this.onSessionsChange?.(this.sessionCount);
    // A peer that connects and never speaks HTTP/2 must not hold a connection forever.
    const preface = setTimeout(() => {
      this.logger.debug('rpc session sent no HTTP/2 preface in time');
      session.destroy();
    }, this.opts.prefaceTimeoutMs);
    preface.unref();
    session.once('remoteSettings', () => clearTimeout(preface));
    session.once('close', () => {
      clearTimeout(preface);
      listener.sessions.delete(session);
      this.onSessionsChange?.(this.sessionCount);
    });
    if (this.closing) session.close();
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const peer = stream.session ? this.peers.get(stream.session) : undefined;
    if (!peer || this.closing) {
      stream.close(constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    new Exchange(stream, this.host, peer).run(headers).catch((err: unknown) => this.logger.warn({ err }, 'rpc exchange failed'));
  }

  private assertOpen(): void {
    if (this.closing) throw new CorralError('SHUTTING_DOWN', 'the RPC server is closed');
  }
}

/** createSecureServer, with unusable credentials reported as TLS rather than an OpenSSL error. */
function secureServer(options: SecureServerOptions): Http2SecureServer {
  try {
    return createSecureServer(options);
  } catch (err) {
    const detail = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new CorralError('TLS', `the TLS credentials cannot be used (${detail}): check the CA, certificate and key files`, { cause: err });
  }
}

function tlsPeer(session: Http2Session): PeerIdentity {
  const socket = session.socket as TLSSocket;
  // rejectUnauthorized already dropped such peers; checked again because this is the security boundary.
  if (!socket.authorized) throw new CorralError('TLS', `unauthorized peer (${String(socket.authorizationError)})`);
  return { kind: 'tls', ...peerIdentity(socket.getPeerCertificate()) };
}

function listenTcp(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(listenError(err, `${host}:${port}`));
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function listenError(err: unknown, where: string): CorralError {
  if (err instanceof CorralError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return new CorralError('ALREADY_RUNNING', `${where} is already in use; stop what listens there or choose another address`);
  return new CorralError('CONFIG_INVALID', `cannot listen on ${where} (${code ?? String(err)}); check the address and permissions`, { cause: err });
}

function sessionClosed(session: Http2Session): Promise<void> {
  if (session.destroyed) return Promise.resolve();
  return new Promise((resolve) => session.once('close', () => resolve()));
}

/** Waits for `work`, but no longer than `ms`. */
async function withinGrace(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
