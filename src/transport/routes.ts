// The server's route table: exact paths, one handler per method, and who may call each route.

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

export interface Route {
  handler: RpcHandler;
  allow: (peer: PeerIdentity) => boolean;
  input: boolean;
}

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
    if (!VERSIONED_PATH.test(path)) throw new CorralError('INTERNAL', `route path '${path}' must look like /v1/name`);
    const byMethod = this.routes.get(path) ?? new Map<string, Route>();
    if (byMethod.has(method)) throw new CorralError('INTERNAL', `route ${method} ${path} registered twice`);
    byMethod.set(method, { handler, allow: opts.allow ?? defaultAllow, input: opts.input ?? false });
    this.routes.set(path, byMethod);
  }

  lookup(method: string, path: string): Route | RouteMiss {
    const byMethod = this.routes.get(path);
    if (!byMethod) return { status: 404, error: new CorralError('NOT_FOUND', `no endpoint ${path.slice(0, 200)}`) };
    const route = byMethod.get(method);
    if (route) return route;
    const allowed = [...byMethod.keys()].join(', ');
    return { status: 405, error: new CorralError('BAD_REQUEST', `${path} does not accept ${method.slice(0, 20)}; use ${allowed}`) };
  }
}

export function isRouteMiss(r: Route | RouteMiss): r is RouteMiss {
  return 'error' in r;
}
