// One request/response on the server: route, authorize, read and parse the body, run the handler,
// then answer with one JSON document or an NDJSON stream. Every failure becomes {code, message}.

import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { CorralError, type WireError } from '../api/errors.js';
import type { Logger } from '../util/log.js';
import { ChannelExchange } from './channel.js';
import { isRouteMiss, RawResponse, type Route, type RouteTable, type RpcMethod, type RpcRequest } from './routes.js';
import { closeIterator, drained } from './streams.js';
import type { PeerIdentity } from './types.js';

export interface ExchangeHost {
  routes: RouteTable;
  maxBodyBytes: number;
  bodyTimeoutMs: number;
  logger: Logger;
  /** Open exchanges and channels, so that closing the server can end them. */
  active: Set<{ shutdown(): void }>;
}

const ABORTED = Symbol('aborted');
const JSON_TYPE = 'application/json';
const NDJSON_TYPE = 'application/x-ndjson';
const noop = (): void => undefined;

function shuttingDown(): CorralError {
  return new CorralError('SHUTTING_DOWN', 'the agent is shutting down; retry once it is back or use another agent');
}

export class Exchange {
  /** Created on first use of the request's signal: most handlers never look at it. */
  private controller: AbortController | undefined;
  private abortReason: CorralError | undefined;
  /** The response is complete; a later stream close is not the client going away. */
  private answered = false;
  private closingServer = false;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly host: ExchangeHost,
    private readonly peer: PeerIdentity,
  ) {}

  /** Closing the server: abort the handler; a stream in flight ends with a SHUTTING_DOWN line. */
  shutdown(): void {
    this.closingServer = true;
    this.abort(shuttingDown());
  }

  private get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  private abort(reason: CorralError): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }

  async run(headers: IncomingHttpHeaders): Promise<void> {
    const { stream, host } = this;
    host.active.add(this);
    stream.on('error', (err) => host.logger.debug({ err }, 'rpc stream error'));
    stream.once('close', () => {
      host.active.delete(this);
      if (!this.answered) this.abort(new CorralError('UNAVAILABLE', 'the client went away'));
    });
    try {
      const method = headers[':method'] ?? '';
      const rawPath = headers[':path'] ?? '';
      const q = rawPath.indexOf('?');
      const path = q < 0 ? rawPath : rawPath.slice(0, q);
      const route = host.routes.lookup(method, path);
      if (isRouteMiss(route)) return this.fail(route.error, route.status);
      if (!route.allow(this.peer)) {
        return this.fail(new CorralError('FORBIDDEN', `${describePeer(this.peer)} may not call ${method} ${path}`));
      }
      if (route.kind === 'channel') return await this.channel(route, path);
      const body = route.input ? await this.readHead() : await this.readBody(headers);
      const query = new URLSearchParams(q < 0 ? '' : rawPath.slice(q + 1));
      const signal = (): AbortSignal => this.signal;
      await this.answer(route, {
        method: method as RpcMethod,
        path,
        query,
        body,
        peer: this.peer,
        ...(route.input ? { input: this.stream } : {}),
        get signal() {
          return signal();
        },
      });
    } catch (err) {
      this.fail(err);
    }
  }

  /** A channel route: the stream carries NDJSON both ways until either side ends it (channel.ts). */
  private async channel(route: Extract<Route, { kind: 'channel' }>, path: string): Promise<void> {
    const { stream, host } = this;
    host.active.delete(this);
    this.answered = true;
    if (!this.open()) return;
    stream.respond({ ':status': 200, 'content-type': NDJSON_TYPE });
    await new ChannelExchange(stream, route.handler, path, this.peer, host, (last) => {
      stream.end(last);
      // A client that keeps its side open is told to stop (as reply() does).
      if (!stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR);
    }).run();
  }

  private async answer(route: Extract<Route, { kind: 'call' }>, req: RpcRequest): Promise<void> {
    const out = route.handler(req);
    const value: unknown = isAsyncIterable(out) ? out : await out;
    if (value instanceof RawResponse) return this.pumpRaw(value);
    if (isAsyncIterable(value)) return this.pump(value);
    this.reply(200, JSON.stringify(value ?? null));
  }

  /**
   * The first line of an `input` route's body: its JSON arguments. The bytes after the newline are
   * pushed back, so the handler reads exactly the input that follows.
   */
  private async readHead(): Promise<unknown> {
    const { stream } = this;
    const limit = this.host.maxBodyBytes;
    if (stream.endAfterHeaders) return undefined;
    const head = await new Promise<Buffer | undefined>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const finish = (err: CorralError | undefined, line?: Buffer, rest?: Buffer): void => {
        clearTimeout(timer);
        stream.off('data', onData).off('end', onEnd).off('close', onClose);
        stream.pause();
        if (err) return reject(err);
        if (rest && rest.length > 0) stream.unshift(rest);
        resolve(line);
      };
      const onData = (chunk: Buffer): void => {
        const newline = chunk.indexOf(10);
        if (newline < 0) {
          size += chunk.length;
          if (size > limit) finish(tooLarge(limit));
          else chunks.push(chunk);
          return;
        }
        chunks.push(chunk.subarray(0, newline));
        finish(undefined, Buffer.concat(chunks), chunk.subarray(newline + 1));
      };
      const onEnd = (): void => finish(undefined, size === 0 ? undefined : Buffer.concat(chunks));
      const onClose = (): void => finish(new CorralError('UNAVAILABLE', 'the client went away'));
      const timer = setTimeout(
        () => finish(new CorralError('TIMEOUT', `request arguments not received within ${this.host.bodyTimeoutMs} ms`)),
        this.host.bodyTimeoutMs,
      );
      stream.on('data', onData).once('end', onEnd).once('close', onClose);
    });
    if (head === undefined || head.length === 0) return undefined;
    try {
      return JSON.parse(head.toString('utf8')) as unknown;
    } catch (err) {
      throw new CorralError('BAD_REQUEST', `request arguments are not valid JSON (${(err as Error).message})`);
    }
  }

  /** Answers with raw bytes; a failure after the headers resets the stream, so the client sees it. */
  private async pumpRaw(raw: RawResponse): Promise<void> {
    const { stream } = this;
    const iterator = raw.body[Symbol.asyncIterator]();
    if (!this.open()) return void closeIterator(iterator);
    stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', ...raw.headers });
    const aborted = abortPromise(this.signal);
    try {
      for (;;) {
        const next = iterator.next();
        next.catch(noop);
        const step = await Promise.race([next, aborted]);
        if (step === ABORTED) {
          void closeIterator(iterator);
          if (this.open()) stream.close(constants.NGHTTP2_CANCEL);
          return;
        }
        if (step.done) break;
        if (!stream.write(step.value) && (await Promise.race([drained(stream), aborted])) === ABORTED) {
          void closeIterator(iterator);
          if (this.open()) stream.close(constants.NGHTTP2_CANCEL);
          return;
        }
      }
    } catch (err) {
      this.host.logger.debug({ err }, 'raw response failed mid-way');
      if (this.open()) stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    this.answered = true;
    if (this.open()) stream.end();
    this.discardInput();
  }

  /** A handler that answered without reading all its input: tell the client to stop sending. */
  private discardInput(): void {
    const { stream } = this;
    if (!stream.endAfterHeaders && !stream.readableEnded && this.open()) stream.close(constants.NGHTTP2_NO_ERROR);
  }

  private async readBody(headers: IncomingHttpHeaders): Promise<unknown> {
    const { stream } = this;
    const limit = this.host.maxBodyBytes;
    if (stream.endAfterHeaders) return undefined;
    if (Number(headers['content-length']) > limit) throw tooLarge(limit);
    const raw = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const finish = (err: CorralError | undefined): void => {
        clearTimeout(timer);
        stream.off('data', onData).off('end', onEnd).off('close', onClose);
        if (err) {
          stream.pause();
          reject(err);
        } else resolve(Buffer.concat(chunks, size));
      };
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > limit) finish(tooLarge(limit));
        else chunks.push(chunk);
      };
      const onEnd = (): void => finish(undefined);
      const onClose = (): void => finish(new CorralError('UNAVAILABLE', 'the client went away'));
      const timer = setTimeout(
        () => finish(new CorralError('TIMEOUT', `request body not received within ${this.host.bodyTimeoutMs} ms`)),
        this.host.bodyTimeoutMs,
      );
      stream.on('data', onData).once('end', onEnd).once('close', onClose);
    });
    if (raw.length === 0) return undefined;
    try {
      return JSON.parse(raw.toString('utf8')) as unknown;
    } catch (err) {
      throw new CorralError('BAD_REQUEST', `request body is not valid JSON (${(err as Error).message})`);
    }
  }

  /** Streams an AsyncIterable as NDJSON until it ends, throws, the client leaves or the server closes. */
  private async pump(iterable: AsyncIterable<unknown>): Promise<void> {
    const { stream } = this;
    const iterator = iterable[Symbol.asyncIterator]();
    if (!this.open()) return void closeIterator(iterator);
    stream.respond({ ':status': 200, 'content-type': NDJSON_TYPE });
    const aborted = abortPromise(this.signal);
    let failure: unknown;
    let done = false;
    try {
      for (;;) {
        const next = iterator.next();
        next.catch(noop); // it may settle after we stop waiting for it
        const step = await Promise.race([next, aborted]);
        if (step === ABORTED) break;
        if (step.done) {
          done = true;
          break;
        }
        if (!stream.write(JSON.stringify(step.value) + '\n') && (await Promise.race([drained(stream), aborted])) === ABORTED) break;
      }
    } catch (err) {
      failure = err;
      done = true; // an iterator that threw is finished
    }
    if (!done) void closeIterator(iterator);
    if (!this.open()) return;
    if (failure === undefined && !done && this.closingServer) failure = shuttingDown();
    this.answered = true;
    stream.end(failure === undefined ? undefined : JSON.stringify({ error: this.toWire(failure) }) + '\n');
    this.discardInput();
  }

  private fail(err: unknown, status?: number): void {
    if (!this.open()) return;
    if (this.stream.headersSent) {
      this.stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const wire = this.toWire(err);
    this.reply(status ?? (err instanceof CorralError ? err.status : 500), JSON.stringify(wire));
  }

  private reply(status: number, json: string): void {
    const { stream } = this;
    if (!this.open()) return;
    stream.respond({ ':status': status, 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(json) });
    this.answered = true;
    stream.end(json);
    // A client still sending a body we will not read is told to stop (RST_STREAM NO_ERROR, which
    // node sends only after the response has been written).
    if (!stream.endAfterHeaders && !stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR);
  }

  private toWire(err: unknown): WireError {
    if (err instanceof CorralError) return err.toWire();
    // Unexpected errors are bugs: the details go to the log, never to the peer.
    this.host.logger.error({ err, peer: describePeer(this.peer) }, 'rpc handler failed');
    return { code: 'INTERNAL', message: 'an unexpected error inside the agent; its log has the details' };
  }

  private open(): boolean {
    return !this.stream.destroyed && !this.stream.closed;
  }
}

function tooLarge(limit: number): CorralError {
  return new CorralError('TOO_LARGE', `request body exceeds ${limit} bytes`);
}

function describePeer(peer: PeerIdentity): string {
  switch (peer.kind) {
    case 'local':
      return 'a local client';
    case 'tls':
      return `${peer.role} ${peer.commonName}`;
    case 'psk':
      return `PSK peer ${peer.identity}`;
  }
}

export function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === 'function'
  );
}

function abortPromise(signal: AbortSignal): Promise<typeof ABORTED> {
  if (signal.aborted) return Promise.resolve(ABORTED);
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(ABORTED), { once: true }));
}
