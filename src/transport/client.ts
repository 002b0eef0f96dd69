// The RPC client: one HTTP/2 session per endpoint, shared by concurrent calls and streams, opened
// lazily and reopened after it dies; and channels (client-channel.ts). Import-light: node:http2
// and node:tls load with the first HTTP/2 session, so a client that only opens a channel on a UNIX
// socket (corral lock) never loads them.

import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from 'node:http2';
import { CorralError } from '../api/errors.js';
import { H2Channel, RawChannel, type ChannelHandlers, type RpcChannel } from './client-channel.js';
import { drained } from './streams.js';
import { describeEndpoint, type Endpoint } from './types.js';

export type { ChannelHandlers, RpcChannel } from './client-channel.js';
export type { Endpoint, TlsCredentials } from './types.js';

/** node:http2's constants, without loading node:http2. */
const constants = { NGHTTP2_NO_ERROR: 0x0, NGHTTP2_CANCEL: 0x8 } as const;

export interface RpcClientOptions {
  /** Connecting, including the TLS handshake (default 5 s). */
  connectTimeoutMs?: number;
  /** Default deadline of a call, and of a stream's response headers (default 30 s). */
  requestTimeoutMs?: number;
  /** Largest accepted response body or stream line (default 64 MiB). */
  maxResponseBytes?: number;
  /**
   * While requests are in flight, an HTTP/2 PING every `keepaliveMs` (default 0: none), as gRPC's
   * keepalive does. A session that does not answer one within `keepaliveTimeoutMs` (default the
   * request timeout) is dropped and its requests fail with UNAVAILABLE. Without it a long stream
   * to a peer that vanished without a FIN or an RST (power lost, a network black hole; on Node 20
   * also a reset that arrives while a write waits for room, which nobody then reads) waits forever.
   */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
}

export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface RpcStream<T> extends AsyncIterable<T> {
  /** Stops the stream: the server's handler sees its signal abort; iteration ends quietly. */
  close(): void;
}

type Method = 'GET' | 'POST';

/** The answer to open(): its status was 2xx; read it as NDJSON lines, raw bytes or one JSON value. */
export interface OpenResponse {
  contentType: string;
  headers: Record<string, unknown>;
  /** NDJSON lines; an {"error":...} line throws its CorralError. */
  lines<T>(): AsyncGenerator<T>;
  /** The raw body; a reset stream throws UNAVAILABLE. */
  bytes(): AsyncGenerator<Buffer>;
  json<T>(): Promise<T>;
  /** Stops reading and cancels the request (and the input still being sent). */
  cancel(): void;
}

interface Response {
  status: number;
  req: ClientHttp2Stream;
}

export class RpcClient {
  readonly where: string;
  private readonly connectTimeoutMs: number;
  /** Default deadline of a call (and, for channel protocols, of one answer). */
  readonly requestTimeoutMs: number;
  private readonly maxResponseBytes: number;
  private session: ClientHttp2Session | undefined;
  private connecting: Promise<ClientHttp2Session> | undefined;
  /** Requests in flight per session, to ref the session only while it has work. */
  private readonly inFlight = new WeakMap<ClientHttp2Session, number>();
  private closed = false;
  private readonly probing = new WeakSet<ClientHttp2Session>();
  private readonly keepaliveMs: number;
  private readonly keepaliveTimeoutMs: number;
  private readonly keepalives = new WeakMap<ClientHttp2Session, NodeJS.Timeout>();
  private readonly channels = new Set<RpcChannel>();

  constructor(
    private readonly endpoint: Endpoint,
    opts: RpcClientOptions = {},
  ) {
    this.where = describeEndpoint(endpoint);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.maxResponseBytes = opts.maxResponseBytes ?? 64 * 1024 * 1024;
    this.keepaliveMs = opts.keepaliveMs ?? 0;
    this.keepaliveTimeoutMs = opts.keepaliveTimeoutMs ?? this.requestTimeoutMs;
  }

  /** One request, one JSON answer; non-2xx answers reject with the server's CorralError. */
  async call<T>(method: Method, path: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
    const { signal } = opts;
    signal?.throwIfAborted();
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const session = this.liveSession() ?? (await this.sessionWithin(opts.timeoutMs));
    const req = this.send(session, method, path, payload);
    // The hot path: one promise, listeners attached once, no AbortController per call.
    return new Promise<T>((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? this.requestTimeoutMs;
      const chunks: Buffer[] = [];
      let size = 0;
      let status = 0;
      let settled = false;
      const settle = (err: Error | undefined, text?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) {
          if (!req.closed) req.close(constants.NGHTTP2_CANCEL);
          reject(err);
          return;
        }
        try {
          resolve(this.decode<T>(status, text ?? '', method, path));
        } catch (decodeError) {
          reject(CorralError.from(decodeError));
        }
      };
      const timer = setTimeout(() => {
        settle(this.timeout(method, path, timeoutMs));
        this.probe(session, 1000, `did not answer a PING within 1000 ms after ${method} ${path} timed out`);
      }, timeoutMs);
      const onAbort = (): void => settle(reasonOf(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('response', (headers) => (status = Number(headers[':status'])));
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > this.maxResponseBytes) settle(this.tooLarge(`${method} ${path}`));
        else chunks.push(chunk);
      });
      req.on('end', () => {
        // An end without response headers is a stream the dying session ended for us.
        if (status === 0) settle(this.lost(undefined, `${method} ${path}`));
        else settle(undefined, Buffer.concat(chunks, size).toString('utf8'));
      });
      req.on('error', (err) => settle(this.lost(err, `${method} ${path}`)));
      // 'close' follows every 'end'; build the error (and its stack) only when it is one.
      req.on('close', () => settled || settle(this.lost(undefined, `${method} ${path}`)));
    });
  }

  /**
   * A streaming request, sent when iteration starts: yields each NDJSON line; an {"error":...}
   * line throws its CorralError. close() (or the signal) ends the iteration quietly.
   */
  stream<T>(method: Method, path: string, body?: unknown, opts: { signal?: AbortSignal } = {}): RpcStream<T> {
    const controller = new AbortController();
    const { signal } = opts;
    const onAbort = (): void => controller.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const unlink = (): void => signal?.removeEventListener('abort', onAbort);
    // A long-lived caller signal must not collect one listener per finished stream.
    const lines = this.finallyDo(this.lines<T>(method, path, body, controller.signal), unlink);
    return {
      [Symbol.asyncIterator]: () => lines,
      close: () => {
        unlink();
        controller.abort();
      },
    };
  }

  /**
   * Opens a channel (NDJSON both ways, on a channel route of the server): on a UNIX socket a raw
   * connection of its own, otherwise a stream on this client's HTTP/2 session.
   */
  channel(path: string, handlers: ChannelHandlers): RpcChannel {
    const opts = { connectTimeoutMs: this.connectTimeoutMs, maxLineBytes: this.maxResponseBytes, readyWithinMs: Math.max(this.connectTimeoutMs, this.requestTimeoutMs) };
    if (this.closed) {
      queueMicrotask(() => handlers.onEnd(new CorralError('UNAVAILABLE', `the client for ${this.where} is closed`), false));
      return { send: () => undefined, setActive: () => undefined, close: () => undefined };
    }
    const tracked: ChannelHandlers = {
      onMessage: (value) => handlers.onMessage(value),
      onEnd: (reason, byPeer) => {
        this.channels.delete(channel);
        handlers.onEnd(reason, byPeer);
      },
    };
    const channel: RpcChannel =
      this.endpoint.kind === 'unix'
        ? new RawChannel(this.endpoint.path, this.where, path, tracked, opts)
        : new H2Channel(
            {
              session: () => this.getSession(),
              retain: (session) => this.retain(session),
              release: (session) => this.release(session),
            },
            this.where,
            path,
            tracked,
            opts,
          );
    this.channels.add(channel);
    return channel;
  }

  /**
   * A request for an `input` route: the body is `args` as one JSON line, then `input`'s bytes, sent
   * with backpressure while the answer may already stream back (a command's stdin and output).
   * Resolves at the response headers; a non-2xx answer rejects with the server's CorralError.
   */
  async open(path: string, args: unknown, opts: { input?: AsyncIterable<Buffer | Uint8Array>; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<OpenResponse> {
    const what = `POST ${path}`;
    const { signal } = opts;
    signal?.throwIfAborted();
    const session = this.liveSession() ?? (await this.sessionWithin(opts.timeoutMs));
    let req: ClientHttp2Stream;
    try {
      req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/x-corral-input' }, { endStream: false });
    } catch (err) {
      throw this.lost(err, what);
    }
    this.hold(session, req);
    const cancel = (): void => {
      if (!req.closed) req.close(constants.NGHTTP2_CANCEL);
    };
    signal?.addEventListener('abort', cancel, { once: true });
    req.once('close', () => signal?.removeEventListener('abort', cancel));
    req.write(JSON.stringify(args ?? null) + '\n');
    void this.sendInput(req, opts.input);
    const timeoutMs = opts.timeoutMs ?? this.requestTimeoutMs;
    const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const done = (err: Error | undefined, h?: Record<string, unknown>): void => {
        clearTimeout(timer);
        req.off('response', onResponse).off('error', onError).off('close', onClose);
        if (err) {
          cancel();
          reject(err);
        } else resolve(h as Record<string, unknown>);
      };
      const onResponse = (h: Record<string, unknown>): void => done(undefined, h);
      const onError = (err: Error): void => done(signal?.aborted ? reasonOf(signal) : this.lost(err, what));
      const onClose = (): void => done(signal?.aborted ? reasonOf(signal) : this.lost(new Error(`stream closed (code ${req.rstCode})`), what));
      const timer = setTimeout(() => done(this.timeout('POST', path, timeoutMs)), timeoutMs);
      req.once('response', onResponse).once('error', onError).once('close', onClose);
    });
    const status = Number(headers[':status']);
    const never = new AbortController().signal;
    if (status < 200 || status > 299) this.decode(status, await this.readAll(req, signal ?? never, what), 'POST', path);
    const contentType = typeof headers['content-type'] === 'string' ? headers['content-type'] : '';
    return {
      contentType,
      headers,
      lines: <T>() => this.parseLines<T>(req, signal ?? never, what),
      bytes: () => this.rawBytes(req, what),
      json: async <T>() => this.decode<T>(status, await this.readAll(req, signal ?? never, what), 'POST', path),
      cancel,
    };
  }

  /** Writes `input` into the request with backpressure, then ends it; stops quietly if the stream closes. */
  private async sendInput(req: ClientHttp2Stream, input: AsyncIterable<Buffer | Uint8Array> | undefined): Promise<void> {
    try {
      if (input) {
        for await (const chunk of input) {
          if (req.closed || req.destroyed) return;
          if (!req.write(chunk)) await drained(req);
        }
      }
      if (!req.closed && !req.destroyed) req.end();
    } catch {
      if (!req.closed) req.close(constants.NGHTTP2_CANCEL);
    }
  }

  private async *rawBytes(req: ClientHttp2Stream, what: string): AsyncGenerator<Buffer> {
    let ended = false;
    req.once('end', () => (ended = true));
    try {
      for await (const chunk of req) yield chunk as Buffer;
    } catch (err) {
      throw this.lost(err, what);
    } finally {
      if (!req.closed && !req.readableEnded) req.close(constants.NGHTTP2_CANCEL);
    }
    if (!ended || (req.rstCode !== undefined && req.rstCode !== constants.NGHTTP2_NO_ERROR)) {
      throw this.lost(new Error(`the stream was reset (code ${req.rstCode ?? '?'})`), what);
    }
  }

  /** Ends the session and every channel at once; calls and streams in flight fail with UNAVAILABLE. */
  async close(): Promise<void> {
    this.closed = true;
    for (const channel of [...this.channels]) channel.close();
    this.channels.clear();
    const session = this.session ?? (await this.connecting?.catch(() => undefined));
    this.session = undefined;
    if (!session || session.destroyed) return;
    await new Promise<void>((resolve) => {
      session.once('close', () => resolve());
      session.destroy();
    });
  }

  private async *lines<T>(method: Method, path: string, body: unknown, signal: AbortSignal): AsyncGenerator<T> {
    if (signal.aborted) return;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(this.timeout(method, path, this.requestTimeoutMs)), this.requestTimeoutMs);
    const onAbort = (): void => controller.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    let response: Response;
    try {
      response = await this.request(method, path, body, controller.signal);
      if (response.status < 200 || response.status > 299) {
        const text = await this.readAll(response.req, controller.signal, `${method} ${path}`);
        this.decode(response.status, text, method, path);
      }
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    }
    yield* this.parseLines<T>(response.req, signal, `${method} ${path}`);
  }

  private async *finallyDo<T>(inner: AsyncGenerator<T>, cleanup: () => void): AsyncGenerator<T> {
    try {
      yield* inner;
    } finally {
      cleanup();
    }
  }

  private async *parseLines<T>(req: ClientHttp2Stream, signal: AbortSignal, what: string): AsyncGenerator<T> {
    const onAbort = (): void => void req.close(constants.NGHTTP2_CANCEL);
    signal.addEventListener('abort', onAbort, { once: true });
    req.setEncoding('utf8');
    let pending = '';
    try {
      for await (const chunk of req) {
        if (typeof chunk !== 'string') continue; // setEncoding above makes every chunk a string
        pending += chunk;
        let newline: number;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (line.trim() !== '') yield this.parseLine<T>(line, what);
        }
        if (pending.length > this.maxResponseBytes) throw new CorralError('INTERNAL', `${this.where} sent a stream line over ${this.maxResponseBytes} bytes for ${what}`);
      }
    } catch (err) {
      if (signal.aborted) return;
      throw err instanceof CorralError ? err : this.lost(err, what);
    } finally {
      signal.removeEventListener('abort', onAbort);
      // Cancel a stream we stop reading early; one the server ended closes by itself.
      if (!req.closed && !req.readableEnded) req.close(constants.NGHTTP2_CANCEL);
    }
    if (signal.aborted) return;
    // A stream reset (RST_STREAM with an error code) also ends the loop normally: it is no answer.
    if (req.rstCode !== undefined && req.rstCode !== constants.NGHTTP2_NO_ERROR) throw this.lost(new Error(`the stream was reset (code ${req.rstCode})`), what);
    if (pending.trim() !== '') yield this.parseLine<T>(pending, what);
  }

  private parseLine<T>(line: string, what: string): T {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new CorralError('INTERNAL', `${this.where} sent a stream line that is not JSON for ${what}`);
    }
    if (value !== null && typeof value === 'object' && 'error' in value && Object.keys(value).length === 1) {
      throw CorralError.fromWire(value.error);
    }
    return value as T;
  }

  /** Sends the request and waits for the response headers (or the signal). */
  private async request(method: Method, path: string, body: unknown, signal: AbortSignal): Promise<Response> {
    // A live session is used without yielding, so requests go out in the order they were made.
    const session = this.liveSession() ?? (await this.getSession());
    signal.throwIfAborted();
    const req = this.send(session, method, path, body === undefined ? undefined : JSON.stringify(body));
    return new Promise<Response>((resolve, reject) => {
      const cleanup = (): void => {
        signal.removeEventListener('abort', onAbort);
        req.off('response', onResponse).off('error', onError).off('close', onClose);
      };
      const onResponse = (h: Record<string, unknown>): void => {
        cleanup();
        resolve({ status: Number(h[':status']), req });
      };
      const onError = (err: Error): void => {
        cleanup();
        reject(this.lost(err, `${method} ${path}`));
      };
      const onClose = (): void => onError(new Error(`stream closed (code ${req.rstCode})`));
      const onAbort = (): void => {
        cleanup();
        req.close(constants.NGHTTP2_CANCEL);
        reject(reasonOf(signal));
      };
      req.once('response', onResponse).once('error', onError).once('close', onClose);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private readAll(req: ClientHttp2Stream, signal: AbortSignal, what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const finish = (err: Error | undefined, text?: string): void => {
        signal.removeEventListener('abort', onAbort);
        req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
        if (err !== undefined) {
          if (!req.closed) req.close(constants.NGHTTP2_CANCEL);
          reject(err);
        } else resolve(text ?? '');
      };
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > this.maxResponseBytes) finish(this.tooLarge(what));
        else chunks.push(chunk);
      };
      const onEnd = (): void => finish(undefined, Buffer.concat(chunks, size).toString('utf8'));
      const onError = (err: Error): void => finish(this.lost(err, what));
      const onClose = (): void => finish(this.lost(undefined, what));
      const onAbort = (): void => finish(reasonOf(signal));
      req.on('data', onData).once('end', onEnd).once('error', onError).once('close', onClose);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private decode<T>(status: number, text: string, method: string, path: string): T {
    let value: unknown;
    try {
      value = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new CorralError('INTERNAL', `${this.where} answered ${method} ${path} with HTTP ${status} and a body that is not JSON`);
    }
    if (status >= 200 && status <= 299) return value as T;
    throw CorralError.fromWire(value, status);
  }

  private send(session: ClientHttp2Session, method: Method, path: string, payload: string | undefined): ClientHttp2Stream {
    const headers: OutgoingHttpHeaders = { ':method': method, ':path': path };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    let req: ClientHttp2Stream;
    try {
      req = session.request(headers, { endStream: payload === undefined });
    } catch (err) {
      throw this.lost(err, `${method} ${path}`);
    }
    this.hold(session, req);
    if (payload !== undefined) req.end(payload);
    return req;
  }

  private liveSession(): ClientHttp2Session | undefined {
    const current = this.session;
    return current && !current.closed && !current.destroyed && !this.closed ? current : undefined;
  }

  private async getSession(): Promise<ClientHttp2Session> {
    if (this.closed) throw new CorralError('UNAVAILABLE', `the client for ${this.where} is closed`);
    const current = this.liveSession();
    if (current) return current;
    this.connecting ??= this.connect().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** getSession(), but a caller with a deadline shorter than the connect timeout gives up at it. */
  private async sessionWithin(timeoutMs: number | undefined): Promise<ClientHttp2Session> {
    if (timeoutMs === undefined || timeoutMs >= this.connectTimeoutMs) return this.getSession();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new CorralError('UNAVAILABLE', `no answer from ${this.where} within ${timeoutMs} ms: check that the host is up and the address is right`)), timeoutMs);
    });
    try {
      return await Promise.race([this.getSession(), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * After a request timed out, and as the keepalive: a connection that does not answer an HTTP/2
   * PING within `timeoutMs` is dropped, failing its requests with UNAVAILABLE, so that the next
   * call reconnects instead of queueing behind a dead (black-holed, or half-open) connection until
   * the kernel notices.
   */
  private probe(session: ClientHttp2Session, timeoutMs: number, why: string): void {
    if (session.destroyed || session.closed || this.probing.has(session)) return;
    this.probing.add(session);
    const done = (alive: boolean): void => {
      clearTimeout(timer);
      this.probing.delete(session);
      if (!alive && !session.destroyed) session.destroy(new CorralError('UNAVAILABLE', `${this.where} ${why}: dropped the connection; check that the host is up`));
    };
    const timer = setTimeout(() => done(false), timeoutMs).unref();
    try {
      session.ping((err) => done(!err));
    } catch {
      done(false);
    }
  }

  private async connect(): Promise<ClientHttp2Session> {
    const { openSession } = await import('./connect.js');
    const session = await openSession(this.endpoint, this.connectTimeoutMs);
    if (this.closed) {
      session.destroy();
      throw new CorralError('UNAVAILABLE', `the client for ${this.where} is closed`);
    }
    // Failures reach callers through their streams; the session's own error needs no listener of
    // its own beyond this one, which keeps it from being an uncaught 'error' event.
    session.on('error', () => undefined);
    session.once('close', () => {
      if (this.session === session) this.session = undefined;
    });
    // An idle client must not keep the process alive; a request in flight must.
    session.unref();
    this.session = session;
    return session;
  }

  /** Keeps the session referenced while any request on it is in flight. */
  private hold(session: ClientHttp2Session, req: ClientHttp2Stream): void {
    this.retain(session);
    req.once('close', () => this.release(session));
  }

  private retain(session: ClientHttp2Session): void {
    const count = this.inFlight.get(session) ?? 0;
    this.inFlight.set(session, count + 1);
    if (count > 0) return;
    session.ref();
    if (this.keepaliveMs > 0 && !this.keepalives.has(session)) {
      const timer = setInterval(() => {
        if (session.destroyed) this.stopKeepalive(session);
        else this.probe(session, this.keepaliveTimeoutMs, `did not answer a keepalive PING within ${this.keepaliveTimeoutMs} ms`);
      }, this.keepaliveMs).unref();
      this.keepalives.set(session, timer);
    }
  }

  private stopKeepalive(session: ClientHttp2Session): void {
    clearInterval(this.keepalives.get(session));
    this.keepalives.delete(session);
  }

  private release(session: ClientHttp2Session): void {
    const left = (this.inFlight.get(session) ?? 1) - 1;
    this.inFlight.set(session, left);
    if (left > 0) return;
    this.stopKeepalive(session);
    if (!session.destroyed) session.unref();
  }

  private tooLarge(what: string): CorralError {
    return new CorralError('INTERNAL', `${this.where} answered ${what} with over ${this.maxResponseBytes} bytes`);
  }

  private timeout(method: string, path: string, ms: number): CorralError {
    return new CorralError('TIMEOUT', `${this.where} did not answer ${method} ${path} within ${ms} ms`);
  }

  private lost(err: unknown, what: string): CorralError {
    if (err instanceof CorralError) return err;
    if (this.closed) return new CorralError('UNAVAILABLE', `the client for ${this.where} was closed during ${what}`);
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    return new CorralError('UNAVAILABLE', `lost the connection to ${this.where} during ${what}${code ? ` (${code})` : ''}; retry`, { cause: err });
  }
}

function reasonOf(signal: AbortSignal | undefined): Error {
  return signal?.reason instanceof Error ? signal.reason : new CorralError('INTERNAL', `aborted: ${String(signal?.reason)}`);
}
