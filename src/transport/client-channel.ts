// A channel from the client side (the server side is channel.ts): NDJSON messages both ways over
// one long-lived connection or stream. On a UNIX socket it is a raw connection of its own (node:net
// only: `corral lock` never loads node:http2); over TLS, an HTTP/2 stream on the client's session.

import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { connect as connectNet, type Socket } from 'node:net';
import { CorralError } from '../api/errors.js';
import { connectError, timeoutError } from './connect-errors.js';
import { errorOfLine, LineSplitter, RAW_CHANNEL_MAGIC, RAW_CHANNEL_READY } from './ndjson.js';

export interface ChannelHandlers {
  /** Each message the server sends, in order. */
  onMessage(value: unknown): void;
  /**
   * Once, when the channel is over: why (the server's error line, a lost connection, close()).
   * `byPeer`: the server ended it without an error (its side closed cleanly).
   */
  onEnd(reason: CorralError, byPeer: boolean): void;
}

export interface RpcChannel {
  /** Queues one message (sent once connected). Ignored once the channel is over. */
  send(value: unknown): void;
  /** An active channel keeps the process alive (default); an idle one does not. */
  setActive(active: boolean): void;
  /** Ends the channel at once; onEnd follows. */
  close(): void;
}

/** RST_STREAM CANCEL (node:http2's constants, without loading node:http2). */
const NGHTTP2_CANCEL = 0x8;
const NDJSON_TYPE = 'application/x-ndjson';

/** Framing and ending shared by both kinds. */
abstract class ChannelBase implements RpcChannel {
  protected over = false;
  /** Why it ends, once known (an error line comes before the connection closes). */
  protected reason: CorralError | undefined;
  /** The server took the channel (its ready line, or its response headers). */
  protected ready = false;
  private readonly lines: LineSplitter;
  private readonly readyTimer: NodeJS.Timeout;

  /** `readyWithinMs`: a server that has not taken the channel by then is not answering (TIMEOUT). */
  constructor(
    protected readonly where: string,
    protected readonly path: string,
    private readonly handlers: ChannelHandlers,
    opts: { maxLineBytes: number; readyWithinMs: number },
  ) {
    this.lines = new LineSplitter(opts.maxLineBytes);
    this.readyTimer = setTimeout(
      () => this.fail(new CorralError('TIMEOUT', `${where} did not answer on channel ${path} within ${opts.readyWithinMs} ms`)),
      opts.readyWithinMs,
    );
    this.readyTimer.unref();
  }

  protected markReady(): void {
    this.ready = true;
    clearTimeout(this.readyTimer);
  }

  abstract send(value: unknown): void;
  abstract setActive(active: boolean): void;
  abstract close(): void;

  protected receive(chunk: Buffer): void {
    if (this.over || this.reason) return;
    let lines: string[];
    try {
      lines = this.lines.push(chunk);
    } catch (err) {
      return this.fail(err as CorralError);
    }
    for (const line of lines) {
      if (!this.ready && line === RAW_CHANNEL_READY) {
        this.markReady();
        continue;
      }
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        if (line.trim() === '') continue;
        return this.fail(new CorralError('INTERNAL', `${this.where} sent a line that is not JSON on channel ${this.path}`));
      }
      const error = errorOfLine(value);
      if (error) return this.fail(error);
      if (!this.ready) return this.fail(new CorralError('UNAVAILABLE', `${this.where} is not a corral agent's channel ${this.path} (an older agent? restart it)`));
      this.handlers.onMessage(value);
      if (this.over || this.reason) return;
    }
  }

  /** Ends the channel with `reason` (the first reason given wins). */
  protected fail(reason: CorralError): void {
    this.reason ??= reason;
    this.close();
  }

  /** `closedHere`: this client closed it (close()). */
  protected finish(closedHere: boolean): void {
    if (this.over) return;
    this.over = true;
    clearTimeout(this.readyTimer);
    if (this.reason) return this.handlers.onEnd(this.reason, false);
    if (closedHere) return this.handlers.onEnd(new CorralError('UNAVAILABLE', `the channel to ${this.where} was closed by this client`), false);
    // Closed before taking the channel: an agent too old to know channels hangs up on the first line.
    if (!this.ready) return this.handlers.onEnd(new CorralError('UNAVAILABLE', `${this.where} closed the connection before taking channel ${this.path} (an older agent? restart it); retry`), false);
    this.handlers.onEnd(new CorralError('UNAVAILABLE', `${this.where} closed channel ${this.path}; retry`), true);
  }

}

/** On a UNIX socket: a connection of its own, first line `CORRAL-CHANNEL/1 PATH`. */
export class RawChannel extends ChannelBase {
  private readonly socket: Socket;
  private connected = false;
  private closedHere = false;

  constructor(socketPath: string, where: string, path: string, handlers: ChannelHandlers, opts: { connectTimeoutMs: number; maxLineBytes: number; readyWithinMs: number }) {
    super(where, path, handlers, opts);
    const endpoint = { kind: 'unix', path: socketPath } as const;
    const socket = connectNet(socketPath);
    this.socket = socket;
    const timer = setTimeout(() => this.fail(timeoutError(where, opts.connectTimeoutMs)), opts.connectTimeoutMs);
    socket.once('connect', () => {
      this.connected = true;
      clearTimeout(timer);
    });
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (err) => {
      this.reason ??= this.connected ? new CorralError('UNAVAILABLE', `lost the connection to ${where} on channel ${path}; retry`, { cause: err }) : connectError(err, endpoint);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      this.finish(this.closedHere);
    });
    socket.write(`${RAW_CHANNEL_MAGIC}${path}\n`);
  }

  send(value: unknown): void {
    if (this.over || this.socket.destroyed) return;
    this.socket.write(JSON.stringify(value) + '\n');
  }

  setActive(active: boolean): void {
    if (active) this.socket.ref();
    else this.socket.unref();
  }

  close(): void {
    this.closedHere = this.reason === undefined;
    this.socket.destroy();
  }
}

/** What an HTTP/2 channel needs from its RpcClient. */
export interface SessionSource {
  session(): Promise<ClientHttp2Session>;
  /** Counts a user of the session: the session keeps the process alive while it has any. */
  retain(session: ClientHttp2Session): void;
  release(session: ClientHttp2Session): void;
}

/** Over TLS: POST PATH on the client's HTTP/2 session, the body and the answer both NDJSON. */
export class H2Channel extends ChannelBase {
  private req: ClientHttp2Stream | undefined;
  private session: ClientHttp2Session | undefined;
  private readonly queued: string[] = [];
  private active = true;
  private retained = false;
  private closedHere = false;

  constructor(
    private readonly source: SessionSource,
    where: string,
    path: string,
    handlers: ChannelHandlers,
    opts: { maxLineBytes: number; readyWithinMs: number },
  ) {
    super(where, path, handlers, opts);
    source.session().then(
      (session) => this.open(session),
      (err: unknown) => {
        this.reason ??= CorralError.from(err);
        this.finish(false);
      },
    );
  }

  private open(session: ClientHttp2Session): void {
    if (this.over || this.reason) return this.finish(this.closedHere);
    let req: ClientHttp2Stream;
    try {
      req = session.request({ ':method': 'POST', ':path': this.path, 'content-type': NDJSON_TYPE });
    } catch (err) {
      this.reason ??= new CorralError('UNAVAILABLE', `lost the connection to ${this.where} opening channel ${this.path}; retry`, { cause: err });
      return this.finish(false);
    }
    this.req = req;
    this.session = session;
    this.setRetained(this.active);
    let status = 0;
    const body: Buffer[] = [];
    req.on('response', (headers) => {
      status = Number(headers[':status']);
      if (status >= 200 && status <= 299) this.markReady();
    });
    req.on('data', (chunk: Buffer) => {
      if (status >= 200 && status <= 299) this.receive(chunk);
      else if (body.length < 64) body.push(chunk);
    });
    req.on('end', () => {
      if (status !== 0 && (status < 200 || status > 299)) this.reason ??= errorOfBody(Buffer.concat(body).toString('utf8'), status);
    });
    req.on('error', (err) => {
      this.reason ??= new CorralError('UNAVAILABLE', `lost the connection to ${this.where} on channel ${this.path}; retry`, { cause: err });
    });
    req.once('close', () => {
      this.setRetained(false);
      this.finish(this.closedHere);
    });
    for (const line of this.queued.splice(0)) req.write(line);
  }

  private setRetained(retain: boolean): void {
    const session = this.session;
    if (!session || retain === this.retained || (retain && this.req?.closed)) return;
    this.retained = retain;
    if (retain) this.source.retain(session);
    else this.source.release(session);
  }

  send(value: unknown): void {
    if (this.over) return;
    const line = JSON.stringify(value) + '\n';
    if (this.req) {
      if (!this.req.closed) this.req.write(line);
    } else this.queued.push(line);
  }

  setActive(active: boolean): void {
    this.active = active;
    this.setRetained(active);
  }

  close(): void {
    this.closedHere = this.reason === undefined;
    if (this.req === undefined) this.reason ??= new CorralError('UNAVAILABLE', `the channel to ${this.where} was closed by this client`);
    else if (!this.req.closed) this.req.close(NGHTTP2_CANCEL);
  }
}

function errorOfBody(body: string, status: number): CorralError {
  try {
    return CorralError.fromWire(JSON.parse(body), status);
  } catch {
    return new CorralError('INTERNAL', `the channel was refused with HTTP ${status} and a body that is not JSON`);
  }
}
