// A channel on the server: one long-lived exchange of NDJSON messages both ways, for protocols
// with many small messages (the lock channel: acquire, release, confirm over one connection).
// A new HTTP/2 stream per message costs several times the work of a line on an open one.
//
// Two framings, one behaviour:
// - an HTTP/2 stream (POST PATH): the request body is the client's lines, the response the server's;
// - on the UNIX socket, a raw connection whose first line is `CORRAL-CHANNEL/1 PATH`: the same
//   lines with no HTTP/2 underneath, so a short-lived client (corral lock) need not load node:http2.
//
// The handler reads `messages` and yields what to send; it must end its output once `signal`
// aborts (the client went away or the server is closing). When the output ends, the channel
// ends; a handler that throws ends it with a final {"error": ...} line.

import type { Duplex } from 'node:stream';
import { CorralError, type WireError } from '../api/errors.js';
import type { Logger } from '../util/log.js';
import { LineSplitter } from './ndjson.js';
import { closeIterator, drained } from './streams.js';
import type { ChannelHandler } from './routes.js';
import type { PeerIdentity } from './types.js';

export interface ChannelHost {
  /** Largest accepted message line. */
  maxBodyBytes: number;
  logger: Logger;
  /** Open exchanges and channels, so that closing the server can end them. */
  active: Set<{ shutdown(): void }>;
}

/** Client messages read ahead of the handler before the connection stops being read. */
const MAX_UNREAD = 256;

/** The client's messages: pushed as lines arrive, taken by the handler's `for await`. */
class Inbox implements AsyncIterableIterator<unknown> {
  private readonly queue: unknown[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: CorralError | undefined;

  constructor(private readonly onDrained: () => void) {}

  get size(): number {
    return this.queue.length;
  }

  push(value: unknown): void {
    if (this.ended) return;
    this.queue.push(value);
    this.wakeUp();
  }

  end(failure?: CorralError): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure;
    this.wakeUp();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<unknown>> {
    for (;;) {
      if (this.queue.length > 0) {
        const value = this.queue.shift();
        if (this.queue.length === MAX_UNREAD / 2) this.onDrained();
        return { value, done: false };
      }
      if (this.ended) {
        const failure = this.failure;
        this.failure = undefined;
        if (failure) throw failure;
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  return(): Promise<IteratorResult<unknown>> {
    this.end();
    this.queue.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

export class ChannelExchange {
  private readonly controller = new AbortController();
  private readonly inbox: Inbox;
  private iterator: AsyncIterator<unknown> | undefined;
  private closingServer = false;
  private finished = false;

  /**
   * `io`: the HTTP/2 stream or the raw connection; `finish` sends the last data (an error line, or
   * nothing) and ends it.
   */
  constructor(
    private readonly io: Duplex,
    private readonly handler: ChannelHandler,
    private readonly path: string,
    private readonly peer: PeerIdentity,
    private readonly host: ChannelHost,
    private readonly finish: (last: string | undefined) => void,
  ) {
    this.inbox = new Inbox(() => io.resume());
  }

  /** Closing the server: the handler ends its output, and the channel ends with SHUTTING_DOWN. */
  shutdown(): void {
    this.closingServer = true;
    this.abort(new CorralError('SHUTTING_DOWN', 'the agent is shutting down; retry once it is back or use another agent'));
  }

  async run(): Promise<void> {
    const { io, host } = this;
    host.active.add(this);
    io.on('error', (err) => host.logger.debug({ err }, 'rpc channel error'));
    io.once('close', () => {
      host.active.delete(this);
      this.inbox.end();
      if (!this.finished) this.abort(new CorralError('UNAVAILABLE', 'the client went away'));
    });
    const lines = new LineSplitter(host.maxBodyBytes);
    io.on('data', (chunk: Buffer) => this.receive(lines, chunk));
    io.once('end', () => this.inbox.end());

    let failure: unknown;
    try {
      this.iterator = this.handler({ path: this.path, peer: this.peer, messages: this.inbox, signal: this.controller.signal })[Symbol.asyncIterator]();
      if (this.controller.signal.aborted) void closeIterator(this.iterator);
      for (;;) {
        const step = await this.iterator.next();
        if (step.done) break;
        if (!io.write(JSON.stringify(step.value) + '\n')) await drained(io);
      }
    } catch (err) {
      failure = err;
    }
    this.finished = true;
    host.active.delete(this);
    if (io.destroyed) return;
    if (failure === undefined && this.closingServer) failure = this.controller.signal.reason;
    this.finish(failure === undefined ? undefined : JSON.stringify({ error: this.toWire(failure) }) + '\n');
  }

  private receive(lines: LineSplitter, chunk: Buffer): void {
    let parsed: string[];
    try {
      parsed = lines.push(chunk);
    } catch (err) {
      return this.refuse(err as CorralError);
    }
    for (const line of parsed) {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        if (line.trim() === '') continue;
        return this.refuse(new CorralError('BAD_REQUEST', `a message on channel ${this.path} is not valid JSON`));
      }
      this.inbox.push(value);
    }
    if (this.inbox.size >= MAX_UNREAD) this.io.pause();
  }

  /** A malformed message: the handler's next read throws it; nothing more is read. */
  private refuse(err: CorralError): void {
    this.io.pause();
    this.inbox.end(err);
  }

  private abort(reason: CorralError): void {
    if (this.controller.signal.aborted) return;
    this.inbox.end();
    this.controller.abort(reason);
    if (this.iterator) void closeIterator(this.iterator);
  }

  private toWire(err: unknown): WireError {
    if (err instanceof CorralError) return err.toWire();
    this.host.logger.error({ err, path: this.path }, 'rpc channel handler failed');
    return { code: 'INTERNAL', message: 'an unexpected error inside the agent; its log has the details' };
  }
}
