// The server's route table: exact paths, one handler per method, and who may call each route.
// A channel route is a long-lived exchange of NDJSON messages both ways (channel.ts): reached by
// POST on an HTTP/2 stream, or by a raw connection to the UNIX socket that names it.

import { CorralError } from '../api/errors.js';
import type { PeerIdentity } from './types.js';

export type RpcMethod = 'GET' | 'POST';

export interface RpcRequest {
  method: RpcMethod;
  path: string;
  query: URLSearchParams;
  /** The parsed JSON body; undefined when the request had none. */
  body: unknown;
  peer: PeerIdentity;
  /**
   * Routes added with `input: true`: the request body's bytes after its first line (that line is
   * the JSON `body`). Unread input is discarded when the handler answers.
   */
  input?: NodeJS.ReadableStream & AsyncIterable<Buffer>;
  /** Aborts when the client goes away or the server closes; streaming handlers must honour it. */
  signal: AbortSignal;
}

/**
 * A Promise answers once (application/json); an AsyncIterable is a stream (application/x-ndjson);
 * a Promise of a RawResponse answers with bytes (application/octet-stream).
 */
export type RpcHandler = (req: RpcRequest) => Promise<unknown> | AsyncIterable<unknown>;

/** One channel: the client's messages as they arrive, while the handler's output goes back. */
export interface ChannelRequest {
  path: string;
  peer: PeerIdentity;
  /** Each NDJSON line the client sends, parsed; ends when the client ends its side, throws on a malformed line. */
  messages: AsyncIterable<unknown>;
  /** Aborts when the client goes away or the server closes. */
  signal: AbortSignal;
}

/** Yields the messages to send back; the channel ends when it returns (or throws: a final error line). */
export type ChannelHandler = (req: ChannelRequest) => AsyncIterable<unknown>;

/** An answer of raw bytes (a file's content), sent with backpressure; an error mid-way resets the stream. */
export class RawResponse {
  constructor(
    readonly body: AsyncIterable<Buffer | Uint8Array>,
    /** Extra response headers (lower-case names, ASCII values). */
    readonly headers: Record<string, string> = {},
  ) {}
}

export interface RouteOptions {
  /**
   * Who may call the route. The default admits local (UNIX socket) and mutual-TLS peers but not
   * PSK peers: a joining node reaches only the routes that name it explicitly.
   */
  allow?: (peer: PeerIdentity) => boolean;
  /**
   * The body is one JSON line (parsed into `body`, at most maxBodyBytes) followed by raw bytes the
   * handler reads from `input` as they arrive (a file's content, a command's stdin).
   */
  input?: boolean;
}

export type Route =
  | { kind: 'call'; handler: RpcHandler; allow: (peer: PeerIdentity) => boolean; input: boolean }
  | { kind: 'channel'; handler: ChannelHandler; allow: (peer: PeerIdentity) => boolean };

/** A channel is reached by POST over HTTP/2. */
const CHANNEL = 'CHANNEL';

/** A lookup failure, with the HTTP status to answer (405 is not in the catalogue's statuses). */
export interface RouteMiss {
  status: number;
  error: CorralError;
}

const VERSIONED_PATH = /^\/v[0-9]+\/[A-Za-z0-9._~/-]*$/;

export const defaultAllow = (peer: PeerIdentity): boolean => peer.kind !== 'psk';

export class RouteTable {
  private readonly routes = new Map<string, Map<string, Route>>();

  add(method: RpcMethod, path: string, handler: RpcHandler, opts: RouteOptions = {}): void {
    if (method !== 'GET' && method !== 'POST') throw new CorralError('INTERNAL', `unsupported method ${String(method)}`);
    this.set(method, path, { kind: 'call', handler, allow: opts.allow ?? defaultAllow, input: opts.input ?? false });
  }

  addChannel(path: string, handler: ChannelHandler, opts: RouteOptions = {}): void {
    this.set(CHANNEL, path, { kind: 'channel', handler, allow: opts.allow ?? defaultAllow });
  }

  private set(method: string, path: string, route: Route): void {
    if (!VERSIONED_PATH.test(path)) throw new CorralError('INTERNAL', `route path '${path}' must look like /v1/name`);
    const byMethod = this.routes.get(path) ?? new Map<string, Route>();
    if (byMethod.has(method) || (method !== 'GET' && byMethod.has(method === CHANNEL ? 'POST' : CHANNEL))) {
      throw new CorralError('INTERNAL', `route ${method} ${path} registered twice`);
    }
    byMethod.set(method, route);
    this.routes.set(path, byMethod);
  }

  /** The channel route at `path` (a raw channel connection names its path). */
  channel(path: string): Extract<Route, { kind: 'channel' }> | RouteMiss {
    const route = this.routes.get(path)?.get(CHANNEL);
    if (route?.kind === 'channel') return route;
    return { status: 404, error: new CorralError('NOT_FOUND', `no channel endpoint ${path.slice(0, 200)}`) };
  }

  lookup(method: string, path: string): Route | RouteMiss {
    const byMethod = this.routes.get(path);
    if (!byMethod) return { status: 404, error: new CorralError('NOT_FOUND', `no endpoint ${path.slice(0, 200)}`) };
    const route = byMethod.get(method) ?? (method === 'POST' ? byMethod.get(CHANNEL) : undefined);
    if (route) return route;
    const allowed = [...byMethod.keys()].map((m) => (m === CHANNEL ? 'POST' : m)).join(', ');
    return { status: 405, error: new CorralError('BAD_REQUEST', `${path} does not accept ${method.slice(0, 20)}; use ${allowed}`) };
  }
}

export function isRouteMiss(r: Route | RouteMiss): r is RouteMiss {
  return 'error' in r;
}
