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
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { CorralError } from '../api/errors.js';
import { nullLogger, type Logger } from '../util/log.js';
import { ChannelExchange } from './channel.js';
import { Exchange, type ExchangeHost } from './exchange.js';
import { RAW_CHANNEL_MAGIC, RAW_CHANNEL_READY } from './ndjson.js';
import { peerIdentity } from './pki.js';
import { isRouteMiss, RouteTable, type ChannelHandler, type RouteOptions, type RpcHandler, type RpcMethod } from './routes.js';
import { SESSION_WINDOW, STREAM_WINDOW, type PeerIdentity, type TlsCredentials } from './types.js';
import { clearStaleSocket, listenUnixSocket, removeSocketFile } from './unix-socket.js';

export type { ChannelHandler, ChannelRequest, RouteOptions, RpcHandler, RpcMethod, RpcRequest } from './routes.js';
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
  /** What listens: the HTTP/2 server itself, or (UNIX socket) a plain server that hands HTTP/2 connections to `h2`. */
  server: Server;
  h2: H2Server;
  sessions: Set<Http2Session>;
  /** Raw channel connections (UNIX socket only). */
  channels: Set<Socket>;
  /** Raw connections, including those still in the TLS handshake, so close() can end them. */
  sockets: Set<Socket>;
  socketFile?: { path: string; ino: number };
}

const LOCAL: PeerIdentity = { kind: 'local' };
/** The HTTP/2 client preface starts with "PRI * HTTP/2.0"; a raw channel with RAW_CHANNEL_MAGIC. */
const H2_FIRST_BYTE = 0x50;
/** A raw channel's first line (magic and path) is at most this long. */
const MAX_CHANNEL_LINE = 1024;
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
    for (const l of this.listeners) n += l.sessions.size + l.channels.size;
    return n;
  }

  route(method: RpcMethod, path: string, handler: RpcHandler, opts?: RouteOptions): void {
    this.routes.add(method, path, handler, opts);
  }

  /** A channel route (channel.ts): POST on HTTP/2, or a raw connection on the UNIX socket. */
  channel(path: string, handler: ChannelHandler, opts?: RouteOptions): void {
    this.routes.addChannel(path, handler, opts);
  }

  /** Plain h2c on a UNIX socket; every peer is {kind:'local'}: the file mode is the access control. */
  async listenUnix(path: string, opts: { mode?: number } = {}): Promise<void> {
    this.assertOpen();
    const mode = opts.mode ?? 0o600;
    await clearStaleSocket(path);
    const listener = this.adopt(createNetServer(), createServer(this.h2Options()), () => LOCAL);
    listener.server.on('connection', (socket: Socket) => this.sniff(listener, socket));
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
    this.adopt(server, server, tlsPeer);
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
    this.adopt(server, server, () => peer);
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
    const channels = this.listeners.flatMap((l) => [...l.channels]);
    // close() sends GOAWAY and closes each session once its streams end (the SHUTTING_DOWN lines);
    // a raw channel closes itself after its SHUTTING_DOWN line.
    for (const session of sessions) if (!session.closed) session.close();
    await withinGrace(Promise.all([...sessions.map(sessionClosed), ...channels.map(socketClosed)]), this.opts.closeGraceMs);
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

  /**
   * Wires a listener into the shared routes: `server` accepts connections, `h2` serves their HTTP/2
   * sessions (the same object, except on the UNIX socket); `peerOf` says who each session is.
   */
  private adopt(server: Server, h2: H2Server, peerOf: (session: Http2Session) => PeerIdentity): Listener {
    const listener: Listener = { server, h2, sessions: new Set(), channels: new Set(), sockets: new Set() };
    this.listeners.push(listener);
    server.maxConnections = this.opts.maxConnections;
    server.on('connection', (socket: Socket) => {
      // TCP: small HTTP/2 frames must not wait for Nagle and the peer's delayed ACK (40 ms stalls).
      if (typeof socket.setNoDelay === 'function' && socket.remoteAddress !== undefined) socket.setNoDelay(true);
      listener.sockets.add(socket);
      socket.once('close', () => listener.sockets.delete(socket));
    });
    h2.on('session', (session: Http2Session) => this.onSession(listener, session, peerOf));
    h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.onStream(stream, headers));
    h2.on('sessionError', (err: Error) => this.logger.debug({ err }, 'rpc session error'));
    h2.on('tlsClientError', (err: Error) => this.logger.debug({ err }, 'rpc TLS handshake failed'));
    // No HTTP/1 fallback: a TLS peer without ALPN h2 is dropped at once.
    h2.on('unknownProtocol', (socket: TLSSocket) => socket.destroy());
    server.on('error', (err: Error) => this.logger.warn({ err }, 'rpc listener error'));
    return listener;
  }

  /**
   * A new connection on the UNIX socket: HTTP/2 (its preface) goes to the HTTP/2 server; a first
   * line `CORRAL-CHANNEL/1 PATH` opens a raw channel; anything else, or silence, is dropped.
   */
  private sniff(listener: Listener, socket: Socket): void {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      clearTimeout(timer);
      socket.off('data', onData).off('error', onError);
      socket.pause();
    };
    const onError = (): void => {
      stop();
      socket.destroy();
    };
    const onData = (chunk: Buffer): void => {
      if (size === 0 && chunk[0] === H2_FIRST_BYTE) {
        stop();
        socket.unshift(chunk);
        if (this.closing) return void socket.destroy();
        listener.h2.emit('connection', socket);
        return;
      }
      chunks.push(chunk);
      size += chunk.length;
      const head = chunks.length === 1 ? chunk : Buffer.concat(chunks, size);
      const nl = head.indexOf(0x0a);
      if (nl < 0) {
        if (size > MAX_CHANNEL_LINE) onError();
        return;
      }
      stop();
      const line = head.toString('latin1', 0, nl);
      if (nl > MAX_CHANNEL_LINE || !line.startsWith(RAW_CHANNEL_MAGIC) || this.closing) return void socket.destroy();
      if (nl + 1 < head.length) socket.unshift(head.subarray(nl + 1));
      this.openRawChannel(listener, socket, line.slice(RAW_CHANNEL_MAGIC.length).trim());
    };
    // A peer that connects and says nothing must not hold a connection forever.
    const timer = setTimeout(onError, this.opts.prefaceTimeoutMs);
    timer.unref();
    socket.on('data', onData).on('error', onError);
  }

  private openRawChannel(listener: Listener, socket: Socket, path: string): void {
    const refuse = (err: CorralError): void => {
      socket.on('error', () => undefined);
      socket.end(JSON.stringify({ error: err.toWire() }) + '\n', () => socket.destroy());
    };
    const route = this.routes.channel(path);
    if (isRouteMiss(route)) return refuse(route.error);
    if (!route.allow(LOCAL)) return refuse(new CorralError('FORBIDDEN', `a local client may not open channel ${path}`));
    listener.channels.add(socket);
    this.onSessionsChange?.(this.sessionCount);
    socket.once('close', () => {
      listener.channels.delete(socket);
      this.onSessionsChange?.(this.sessionCount);
    });
    socket.write(`${RAW_CHANNEL_READY}\n`);
    const channel = new ChannelExchange(socket, route.handler, path, LOCAL, this.host, (last) => {
      const close = (): void => void socket.destroy();
      if (last === undefined) socket.end(close);
      else socket.end(last, close);
    });
    channel.run().catch((err: unknown) => this.logger.warn({ err }, 'rpc channel failed'));
    socket.resume();
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

function socketClosed(socket: Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** Waits for `work`, but no longer than `ms`. */
async function withinGrace(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
