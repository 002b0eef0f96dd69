// Lease keepalives: one round trip per keepAlive() call over one long-lived LeaseKeepAlive stream.
//
// etcd answers each request on the stream with one response carrying the lease id, in order, so a
// call waits for the next response for its id. A call that misses its deadline tears the stream
// down (its answer may still come and must not be taken for a later call's) and moves the client
// to another member: a member that cannot renew a lease in time should not be asked again. The
// next call opens a fresh stream. Nothing is renewed behind the caller's back: the session decides
// when to keep alive and counts its own deadline.

import type { ClientDuplexStream, ServiceError } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { CorralError } from '../../api/errors.js';
import type { Clock, Timer } from '../../util/clock.js';
import type { EtcdConnection, Member } from './connection.js';
import { deadlineExceeded, leaseNotFound, translate, unavailable } from './errors.js';
import type { LeaseKeepAliveRequest, LeaseKeepAliveResponse, Rpc } from './proto.js';

interface Waiter {
  resolve(ttlSeconds: number): void;
  reject(err: CorralError): void;
  timer: Timer;
}

interface OpenStream {
  call: ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse>;
  member: Member;
  /** Callers waiting for an answer, per lease id (decimal), oldest first. */
  waiters: Map<string, Waiter[]>;
}

export class KeepAlives {
  private stream: OpenStream | undefined;

  constructor(
    private readonly conn: EtcdConnection,
    private readonly rpc: Rpc<LeaseKeepAliveRequest, LeaseKeepAliveResponse>,
    private readonly clock: Clock,
  ) {}

  /** Renews lease `id` once; resolves with the TTL etcd renewed it to. */
  keepAlive(id: bigint, timeoutMs: number): Promise<number> {
    if (this.conn.isClosed) return Promise.reject(this.conn.closedError());
    const s = this.stream ?? this.open();
    const key = id.toString();
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: this.clock.setTimer(timeoutMs, () => {
          const err = deadlineExceeded(this.conn.site('LeaseKeepAlive', s.member), timeoutMs);
          this.conn.failover(s.member, err.message);
          this.teardown(s, err, waiter);
          reject(err);
        }),
      };
      const queue = s.waiters.get(key);
      if (queue) queue.push(waiter);
      else s.waiters.set(key, [waiter]);
      s.call.write({ ID: key });
    });
  }

  /** Ends the stream; pending calls fail with `err`. */
  close(err: CorralError): void {
    if (this.stream) this.teardown(this.stream, err);
  }

  private open(): OpenStream {
    const member = this.conn.current();
    const call = this.conn.stream(this.rpc, member);
    const s: OpenStream = { call, member, waiters: new Map() };
    this.stream = s;
    call.on('data', (res: LeaseKeepAliveResponse) => this.answer(s, res));
    call.on('error', (err: ServiceError) => {
      if (this.stream !== s) return; // torn down by us: the cancel's error is expected
      const error = err.code === status.CANCELLED && this.conn.isClosed ? this.conn.closedError() : translate(err, this.conn.site('LeaseKeepAlive', member));
      if (error.code === 'STORE_UNAVAILABLE') this.conn.failover(member, error.message);
      this.teardown(s, error);
    });
    call.on('end', () => {
      if (this.stream === s) this.teardown(s, unavailable(this.conn.site('LeaseKeepAlive', member), 'etcd ended the keepalive stream'));
    });
    return s;
  }

  private answer(s: OpenStream, res: LeaseKeepAliveResponse): void {
    const queue = s.waiters.get(res.ID);
    const waiter = queue?.shift();
    if (queue?.length === 0) s.waiters.delete(res.ID);
    if (!waiter) return;
    waiter.timer.cancel();
    const ttl = Number(res.TTL);
    // etcd answers TTL 0 for a lease it does not have (expired or revoked).
    if (ttl <= 0) waiter.reject(leaseNotFound(BigInt(res.ID)));
    else waiter.resolve(ttl);
  }

  /** Drops the stream and fails its waiters (all but `except`, which its caller settles). */
  private teardown(s: OpenStream, err: CorralError, except?: Waiter): void {
    if (this.stream === s) this.stream = undefined;
    for (const queue of s.waiters.values()) {
      for (const w of queue) {
        if (w === except) continue;
        w.timer.cancel();
        w.reject(err);
      }
    }
    s.waiters.clear();
    s.call.cancel();
  }
}
