// The lock channel (src/api/lock-wire.ts): every lock request of one client over one channel,
// each command doing what its endpoint does (acquire stream, release, confirm), through the
// lock service's own API. One line per command and per event instead of an HTTP/2 exchange each:
// the agent's cost per acquire + release cycle is then mostly the store's.

import { setMaxListeners } from 'node:events';
import { CorralError } from '../api/errors.js';
import type { LockChannelEvent, LockCommand, LockEvent } from '../api/lock-wire.js';
import type { ChannelRequest } from '../transport/server.js';
import type { LockService } from './lock-service.js';

/** Open requests (waiting or held) one channel may have; more need another connection. */
export const MAX_CHANNEL_REQUESTS = 1024;

interface OpenRequest {
  ref: number;
  /** The lock service's stream of the request; return() on it = its client is gone (a cancel). */
  ticket: AsyncIterator<LockEvent>;
  /** The lock service's ticket id, once the first event told it. */
  id: string | undefined;
}

type Op = LockCommand['op'];

/** Serves one lock channel; its output is what goes back to the client. */
export function serveLockChannel(locks: LockService, req: ChannelRequest): AsyncIterable<LockChannelEvent> {
  const channel = new LockChannel(locks, req);
  void channel.read();
  return channel;
}

class LockChannel implements AsyncIterableIterator<LockChannelEvent> {
  private readonly requests = new Map<number, OpenRequest>();
  private readonly out: LockChannelEvent[] = [];
  private wake: (() => void) | undefined;
  private closed = false;
  private failure: Error | undefined;

  constructor(
    private readonly locks: LockService,
    private readonly req: ChannelRequest,
  ) {
    // Every request of the channel listens to its signal (the client gone, the server closing).
    setMaxListeners(0, req.signal);
    if (req.signal.aborted) this.close();
    else req.signal.addEventListener('abort', () => this.close(), { once: true });
  }

  /** Takes the client's commands until it ends its side (which cancels what it left open). */
  async read(): Promise<void> {
    try {
      for await (const message of this.req.messages) {
        if (this.closed) return;
        this.handle(message);
      }
      this.close();
    } catch (err) {
      this.close(err);
    }
  }

  private handle(message: unknown): void {
    if (message === null || typeof message !== 'object' || Array.isArray(message)) throw new CorralError('BAD_REQUEST', 'a lock channel message must be a JSON object');
    const m = message as Record<string, unknown>;
    const ref = m.ref;
    if (typeof ref !== 'number' || !Number.isSafeInteger(ref)) throw new CorralError('BAD_REQUEST', 'a lock channel message needs a ref (an integer naming its request)');
    const seq = typeof m.seq === 'number' ? m.seq : undefined;
    switch (m.op) {
      case 'acquire':
        return this.acquire(ref, m);
      case 'release':
        return this.release(ref, seq, m.rollback === true);
      case 'confirm':
        return this.confirm(ref, seq);
      case 'confirm-group':
        return this.confirmGroup(ref, seq, m.pgid, m.secret);
      case 'cancel':
        this.cancel(this.requests.get(ref));
        return;
      default:
        throw new CorralError('BAD_REQUEST', `unknown lock channel op ${JSON.stringify(m.op)?.slice(0, 40)}: acquire, release, confirm, confirm-group or cancel`);
    }
  }

  private acquire(ref: number, body: Record<string, unknown>): void {
    if (this.requests.has(ref)) return this.failed(ref, 'acquire', undefined, new CorralError('BAD_REQUEST', `lock request ${ref} is already open on this channel`));
    if (this.requests.size >= MAX_CHANNEL_REQUESTS) {
      return this.failed(ref, 'acquire', undefined, new CorralError('BAD_REQUEST', `this connection already has ${MAX_CHANNEL_REQUESTS} open lock requests; use another connection`));
    }
    let ticket: AsyncIterator<LockEvent>;
    try {
      // No signal: close() cancels every open request (return()), as its client going away.
      ticket = this.locks.acquire(body, this.req.peer, undefined)[Symbol.asyncIterator]();
    } catch (err) {
      return this.failed(ref, 'acquire', undefined, err);
    }
    const request: OpenRequest = { ref, ticket, id: undefined };
    this.requests.set(ref, request);
    void this.follow(request);
  }

  /** As the request's client going away: it leaves the line, or its lock is released (rolled back). */
  private cancel(request: OpenRequest | undefined): void {
    if (request === undefined) return;
    if (this.requests.get(request.ref) === request) this.requests.delete(request.ref);
    request.ticket.return?.().catch(() => undefined);
  }

  /** Forwards a request's events until its ticket ends. */
  private async follow(request: OpenRequest): Promise<void> {
    try {
      for (;;) {
        const step = await request.ticket.next();
        if (step.done) break;
        const event = step.value;
        if (event.event === 'queued' || event.event === 'granted') request.id = event.id;
        // The release command answers for itself (below), once, with its seq.
        if (event.event !== 'released') this.push({ ...event, ref: request.ref });
      }
    } catch (err) {
      this.failed(request.ref, 'acquire', undefined, err);
    } finally {
      if (this.requests.get(request.ref) === request) this.requests.delete(request.ref);
    }
  }

  private release(ref: number, seq: number | undefined, rollback: boolean): void {
    const request = this.requests.get(ref);
    if (request?.id === undefined) return this.failed(ref, 'release', seq, this.unknown(ref, request));
    this.locks.release(request.id, rollback, this.req.peer).then(
      () => this.push({ ref, event: 'released', id: request.id as string, ...(seq === undefined ? {} : { seq }) }),
      (err: unknown) => {
        this.failed(ref, 'release', seq, err);
        // As a client closing its stream after a failed release: the agent releases it (rolled back).
        this.cancel(request);
      },
    );
  }

  private confirm(ref: number, seq: number | undefined): void {
    const request = this.requests.get(ref);
    try {
      if (request?.id === undefined) throw this.unknown(ref, request);
      const { validForMs } = this.locks.confirm(request.id, this.req.peer);
      this.push({ ref, event: 'confirmed', seq: seq ?? 0, validForMs });
    } catch (err) {
      this.failed(ref, 'confirm', seq, err);
    }
  }

  /** A gate asks for its group's lock (LockService.confirmGroup); `ref` only echoes back. */
  private confirmGroup(ref: number, seq: number | undefined, pgid: unknown, secret: unknown): void {
    try {
      const { validForMs } = this.locks.confirmGroup(pgid, secret, this.req.peer);
      this.push({ ref, event: 'confirmed', seq: seq ?? 0, validForMs });
    } catch (err) {
      this.failed(ref, 'confirm-group', seq, err);
    }
  }

  private unknown(ref: number, request: OpenRequest | undefined): CorralError {
    return request
      ? new CorralError('BAD_REQUEST', `lock request ${ref} is still waiting; cancel it to give up`)
      : new CorralError('NOT_FOUND', `no lock request ${ref} on this channel (released or lost?)`);
  }

  private failed(ref: number, op: Op, seq: number | undefined, err: unknown): void {
    let error: CorralError;
    if (err instanceof CorralError) error = err;
    else {
      // Unexpected errors are bugs: the details go to the log, never to the peer.
      this.locks.logger.error({ err, op }, 'lock channel command failed');
      error = new CorralError('INTERNAL', 'an unexpected error inside the agent; its log has the details');
    }
    this.push({ ref, event: 'failed', op, ...(seq === undefined ? {} : { seq }), error: error.toWire() });
  }

  // --- the output ---------------------------------------------------------------------------

  private push(event: LockChannelEvent): void {
    if (this.closed) return;
    this.out.push(event);
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** The channel is over: every request on it is cancelled, as if its client had gone. */
  private close(failure?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.failure = failure === undefined ? undefined : failure instanceof Error ? failure : CorralError.from(failure);
    for (const request of [...this.requests.values()]) this.cancel(request);
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<LockChannelEvent>> {
    for (;;) {
      const event = this.out.shift();
      if (event !== undefined) return { value: event, done: false };
      if (this.closed) {
        const failure = this.failure;
        this.failure = undefined;
        if (failure !== undefined) throw failure;
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  return(): Promise<IteratorResult<LockChannelEvent>> {
    this.close();
    this.out.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }
}
