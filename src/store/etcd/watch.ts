// A watch on etcd: one Watch stream per watch, created when watch() is called.
//
// The create request goes out at once; `created` settles when etcd confirms it (or the watch
// fails or closes). etcd's confirmation is what fixes a default watch's start: it starts after the
// revision current when etcd created it. The store holds back its own later requests until then,
// so a write it makes after watch() returned cannot land before the watch's start and be missed.
//
// Events are queued in revision order as etcd sends them. A slow consumer pauses the stream (HTTP/2
// flow control then holds etcd back) rather than growing the queue without bound. The iteration
// ends quietly on close() or the signal; a stream that breaks throws STORE_UNAVAILABLE (the caller
// watches again from its last revision + 1), a compacted start throws COMPACTED.

import type { ClientDuplexStream, ServiceError } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { CorralError } from '../../api/errors.js';
import type { Clock, Timer } from '../../util/clock.js';
import type { Revision, Watch, WatchEvent } from '../store.js';
import { big, decodeEvent, int64, prefixRange } from './codec.js';
import type { EtcdConnection, Member } from './connection.js';
import { compacted, deadlineExceeded, translate, unavailable } from './errors.js';
import type { Rpc, WatchRequest, WatchResponse } from './proto.js';

/** Pause the stream when this many events wait for the consumer; resume below a quarter of it. */
const HIGH_WATER = 4096;

export class EtcdWatch implements Watch {
  /** Settles (never rejects) once etcd has created the watch, or it failed or was closed. */
  readonly created: Promise<void>;
  private markCreated!: () => void;
  private readonly queue: WatchEvent[] = [];
  private head = 0;
  private paused = false;
  private closed = false;
  private error: CorralError | undefined;
  private wake: (() => void) | undefined;
  private iterator: AsyncGenerator<WatchEvent, void, undefined> | undefined;
  private call: ClientDuplexStream<WatchRequest, WatchResponse> | undefined;
  private member: Member | undefined;
  private readonly createTimer: Timer;

  constructor(
    private readonly conn: EtcdConnection,
    rpc: Rpc<WatchRequest, WatchResponse>,
    private readonly prefix: string,
    fromRevision: Revision | undefined,
    private readonly signal: AbortSignal | undefined,
    clock: Clock,
    createTimeoutMs: number,
    /** Called once when the watch closes or fails. */
    private readonly onEnd: (watch: EtcdWatch) => void,
  ) {
    this.created = new Promise<void>((resolve) => (this.markCreated = resolve));
    this.createTimer = clock.setTimer(createTimeoutMs, () => {
      if (this.member === undefined) return;
      const err = deadlineExceeded(this.conn.site('Watch', this.member), createTimeoutMs);
      this.conn.failover(this.member, err.message);
      this.fail(err);
    });
    if (signal?.aborted) {
      this.close();
      return;
    }
    signal?.addEventListener('abort', this.onAbort, { once: true });
    try {
      this.member = conn.current();
      this.call = conn.stream(rpc, this.member);
    } catch (err) {
      this.fail(err as CorralError);
      return;
    }
    const member = this.member;
    this.call.on('data', (res: WatchResponse) => this.receive(res));
    this.call.on('error', (err: ServiceError) => {
      if (this.closed) return;
      if (err.code === status.CANCELLED && conn.isClosed) {
        this.close(); // the store closed: end quietly
        return;
      }
      const error = translate(err, conn.site('Watch', member));
      if (error.code === 'STORE_UNAVAILABLE') conn.failover(member, error.message);
      this.fail(error);
    });
    this.call.on('end', () => {
      if (!this.closed) this.fail(unavailable(conn.site('Watch', member), 'etcd ended the watch stream'));
    });
    const start = fromRevision !== undefined && fromRevision > 0n ? { start_revision: int64(fromRevision) } : {};
    this.call.write({ create_request: { ...prefixRange(prefix), ...start } });
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return (this.iterator ??= this.iterate());
  }

  /** True once the watch was closed or failed: it will deliver nothing new. */
  get ended(): boolean {
    return this.closed || this.error !== undefined;
  }

  close(): void {
    if (this.closed) return;
    const wasEnded = this.ended;
    this.closed = true;
    if (!wasEnded) this.onEnd(this);
    this.settleCreation();
    this.signal?.removeEventListener('abort', this.onAbort);
    this.call?.cancel();
    this.notify();
  }

  private readonly onAbort = (): void => this.close();

  private receive(res: WatchResponse): void {
    if (this.closed || this.error) return;
    if (res.created) this.settleCreation();
    if (res.canceled) {
      // etcd cancels a watch whose start revision was compacted (compact_revision: the oldest kept
      // revision), or for a reason it states (e.g. permission denied).
      const oldest = big(res.compact_revision);
      const where = this.member ? this.conn.site('Watch', this.member) : { rpc: 'Watch', endpoint: '?', cluster: this.conn.cluster };
      this.fail(
        oldest > 0n
          ? compacted(`the watch on ${JSON.stringify(this.prefix)}`, oldest)
          : unavailable(where, `etcd cancelled the watch${res.cancel_reason ? `: ${res.cancel_reason}` : ''}`),
      );
      return;
    }
    for (const ev of res.events) this.queue.push(decodeEvent(ev));
    if (res.events.length > 0) {
      if (!this.paused && this.queue.length - this.head >= HIGH_WATER) {
        this.paused = true;
        this.call?.pause();
      }
      this.notify();
    }
  }

  private fail(err: CorralError): void {
    if (this.closed || this.error) return;
    this.error = err;
    this.onEnd(this);
    this.settleCreation();
    this.call?.cancel();
    this.notify();
  }

  private settleCreation(): void {
    this.createTimer.cancel();
    this.markCreated();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private next(): WatchEvent | undefined {
    if (this.head >= this.queue.length) return undefined;
    const ev = this.queue[this.head] as WatchEvent;
    this.head++;
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (this.paused && this.queue.length - this.head < HIGH_WATER / 4) {
      this.paused = false;
      this.call?.resume();
    }
    return ev;
  }

  private async *iterate(): AsyncGenerator<WatchEvent, void, undefined> {
    try {
      while (!this.closed) {
        const ev = this.next();
        if (ev !== undefined) {
          yield ev;
          continue;
        }
        // Events that arrived before a failure are delivered first; then the failure.
        if (this.error !== undefined) throw this.error;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      this.close();
    }
  }
}
