// The connections to the etcd members: one gRPC channel per endpoint, one of them *current*.
//
// Why not one channel over all addresses (grpc's pick_first / round_robin)? A balancer only
// leaves a member whose connection breaks. A member that is stopped, partitioned or without a
// leader keeps its TCP connection, and every call to it would time out until a keepalive ping
// (at most every 10 s) noticed. Here, any call that finds the current member unable to serve
// (unreachable, deadline passed, "no leader") moves the client to the next member, so the next
// call (the session's next keepalive) goes elsewhere. Calls are never retried: a write whose
// answer was lost may have been applied, and only the caller knows whether repeating it is safe.
//
// Every unary call has a deadline on the injected clock (grpc's own deadline goes along too, so
// etcd stops working on an abandoned request). Calls and streams carry etcd's "hasleader"
// metadata: a member that has lost its leader fails them at once ("etcdserver: no leader")
// instead of timing out, and cancels such streams (watches, keepalives) when it loses it.

import { Client, connectivityState, Metadata, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { CorralError } from '../../api/errors.js';
import type { Clock } from '../../util/clock.js';
import type { Logger } from '../../util/log.js';
import { CHANNEL_OPTIONS, type EtcdEndpoint } from './endpoints.js';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { closedStore, deadlineExceeded, detailsOf, fixFor, looksLikeTls, translate, type CallSite } from './errors.js';
import type { Rpc } from './proto.js';

export interface Member {
  readonly endpoint: EtcdEndpoint;
  readonly client: Client;
  /** Position in the endpoint list. */
  readonly index: number;
}

/** grpc's own deadline trails ours, so that our timer (on the injected clock) decides. */
const GRPC_DEADLINE_GRACE_MS = 1_000;
/** A member that failed this recently is the last choice when the client moves. */
const RECENT_FAILURE_MS = 5_000;
/** How often connect() retries a member that refuses connections. */
const RETRY_CONNECT_MS = 100;

export class EtcdConnection {
  readonly members: readonly Member[];
  /** 'etcd at A, B, C', for messages. */
  readonly cluster: string;
  private currentIndex = 0;
  private closed = false;
  /** When each member last failed a call (clock ms). */
  private readonly failedAt: number[];

  constructor(
    endpoints: readonly EtcdEndpoint[],
    credentials: ChannelCredentials,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {
    this.members = endpoints.map((endpoint, index) => ({ endpoint, index, client: new Client(endpoint.target, credentials, { ...CHANNEL_OPTIONS }) }));
    this.cluster = `etcd at ${endpoints.map((e) => e.label).join(', ')}`;
    this.failedAt = endpoints.map(() => -Infinity);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  current(): Member {
    return this.members[this.currentIndex] as Member;
  }

  use(member: Member): void {
    this.currentIndex = member.index;
  }

  /**
   * `member` could not serve: remember when, and if it is still the current one, move to another.
   * The next is the first member (in list order after this one) that has not failed lately and
   * whose channel is not known to be failing; else one whose channel is not failing, else the one
   * that failed longest ago. A member whose
   * connection merely dropped looks idle, not failing, to grpc: the failure record is what keeps
   * the client from going straight back to a member that was just killed. Concurrent failures on
   * one member move the client once.
   */
  failover(member: Member, why: string): void {
    const now = this.clock.now();
    this.failedAt[member.index] = now;
    if (this.closed || this.members.length < 2 || member.index !== this.currentIndex) return;
    const n = this.members.length;
    const others = Array.from({ length: n - 1 }, (_, i) => this.members[(member.index + 1 + i) % n] as Member);
    const failing = (m: Member): boolean => m.client.getChannel().getConnectivityState(false) === connectivityState.TRANSIENT_FAILURE;
    const failed = (m: Member): number => this.failedAt[m.index] ?? -Infinity;
    const healthy = others.find((m) => now - failed(m) > RECENT_FAILURE_MS && !failing(m));
    // All failed lately: one that can at least be connected to, then the one that failed longest ago.
    const next = healthy ?? [...others].sort((a, b) => Number(failing(a)) - Number(failing(b)) || failed(a) - failed(b))[0] ?? member;
    this.currentIndex = next.index;
    this.logger.warn({ from: member.endpoint.label, to: next.endpoint.label, why }, 'etcd member cannot serve; using another');
  }

  site(rpc: string, member: Member): CallSite {
    return { rpc, endpoint: member.endpoint.label, cluster: this.cluster };
  }

  closedError(): CorralError {
    return closedStore(this.cluster);
  }

  /**
   * One unary call to the current member (or `options.member`), bounded by `timeoutMs`. A failure
   * that says the member cannot serve moves the client to the next one, unless `failover: false`.
   */
  unary<Req, Res>(rpc: Rpc<Req, Res>, request: Req, timeoutMs: number, options: { member?: Member; failover?: boolean } = {}): Promise<Res> {
    if (this.closed) return Promise.reject(this.closedError());
    const member = options.member ?? this.current();
    const failover = options.failover === false ? (): void => undefined : (why: string): void => this.failover(member, why);
    return new Promise<Res>((resolve, reject) => {
      let settled = false;
      const call = member.client.makeUnaryRequest(
        rpc.path,
        rpc.serialize,
        rpc.deserialize,
        request,
        requireLeader(),
        { deadline: Date.now() + timeoutMs + GRPC_DEADLINE_GRACE_MS },
        (err: ServiceError | null, response?: Res) => {
          if (settled) return;
          settled = true;
          timer.cancel();
          if (err) {
            const error = this.closed ? this.closedError() : translate(err, this.site(rpc.name, member));
            if (error.code === 'STORE_UNAVAILABLE') failover(error.message);
            reject(error);
          } else if (response === undefined) {
            reject(new CorralError('INTERNAL', `${rpc.name} on ${member.endpoint.label} returned no message`));
          } else {
            resolve(response);
          }
        },
      );
      const timer = this.clock.setTimer(timeoutMs, () => {
        if (settled) return;
        settled = true;
        call.cancel();
        const error = deadlineExceeded(this.site(rpc.name, member), timeoutMs);
        failover(error.message);
        reject(error);
      });
    });
  }

  /** A bidirectional stream to the current member; the caller owns it (and its errors). */
  stream<Req, Res>(rpc: Rpc<Req, Res>, member: Member = this.current()): ClientDuplexStream<Req, Res> {
    if (this.closed) throw this.closedError();
    return member.client.makeBidiStreamRequest(rpc.path, rpc.serialize, rpc.deserialize, requireLeader(), {});
  }

  /**
   * Waits until some member answers `probe` (retrying each while it refuses connections, up to
   * `timeoutMs`) and makes the first that does current. Throws STORE_UNAVAILABLE (TLS when every
   * failure was a TLS one) naming every member's last failure.
   */
  async connect(probe: (member: Member, timeoutMs: number) => Promise<unknown>, timeoutMs: number): Promise<Member> {
    const deadline = this.clock.now() + timeoutMs;
    const failures = new Map<string, string>();
    const stop = new AbortController();
    const attempt = async (member: Member): Promise<Member> => {
      for (;;) {
        try {
          await probe(member, Math.max(1, deadline - this.clock.now()));
          return member;
        } catch (err) {
          const why = detailsOf(err);
          failures.set(member.endpoint.label, why);
          // A certificate problem does not go away by waiting; a refused connection may.
          if (looksLikeTls(why) || deadline - this.clock.now() <= 0 || stop.signal.aborted || this.closed) throw err;
        }
        await this.clock.sleep(Math.max(0, Math.min(RETRY_CONNECT_MS, deadline - this.clock.now())), stop.signal);
      }
    };
    try {
      const member = await Promise.any(this.members.map(attempt));
      this.use(member);
      return member;
    } catch {
      const detail = [...failures.entries()].map(([label, why]) => `${label}: ${why}`).join('; ');
      const tls = failures.size > 0 && [...failures.values()].every(looksLikeTls);
      const what = tls ? `could not connect to ${this.cluster}` : `${this.cluster} did not answer within ${timeoutMs} ms`;
      const message = `${what} (${detail}); ${fixFor(detail)}`;
      throw new CorralError(tls ? 'TLS' : 'STORE_UNAVAILABLE', message);
    } finally {
      stop.abort();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.members) m.client.close();
  }
}

/** etcd's WithRequireLeader: fail (or cancel a stream) when the member has no leader. */
function requireLeader(): Metadata {
  const md = new Metadata();
  md.set('hasleader', 'true');
  return md;
}
