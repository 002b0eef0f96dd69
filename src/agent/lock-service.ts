// The agent's lock service: `corral lock` and library clients ask it for locks; it holds them with
// the lock recipe (src/coord/lock) on one session of its own, and tells each client over an NDJSON
// stream that stays open while the lock is held.
//
// One lock session per agent, not the membership session and not one per request:
// - requests cost no lease grant: the hot path is one transaction to acquire, one delete to release;
// - a restarted agent revokes its previous *membership* lease at once (membership-keeper.ts); lock
//   keys must not vanish with it, because the commands of the dead agent's clients may still be
//   running: they are stopped within the lock session's TTL, and the keys last that long;
// - its loss ends only locks, not membership or mastership, and vice versa.
//
// A ticket is one request's life:
//
//   waiting ──granted──► held ──release / client gone──► done
//      │                  │ └──client gone, its command still runs──► orphaned ──group ends──► done
//      └──error, timeout, client gone──► done          └──session lost──► done ("lost" sent)
//
// A client that dies with its lock held: who keeps the lock until its command has stopped.
// - attached (a local client whose request names CMD's process group, verified: checkAttach in
//   util/process-group.ts): the lock is kept while that group runs. The group is recorded with the
//   lock in the store, so an agent that crashes and restarts takes the lock back (recover()) and
//   keeps it on while the group still runs;
// - guarded (a client that cannot attach: remote, or another user's on a shared socket): the lock
//   is kept `stopWithinMs` more, the time the client's gate (CMD's parent, cli/lock-gate.cts) has to
//   stop CMD once the client is gone; then released;
// - neither (a library client): released at once, as flom does.
//
// While waiting, a lost session or an unavailable store is retried on a new session until the
// request's deadline (the request loses its place in line, never a lock). A held lock is never
// moved to another session: its loss is final, and the client stops its command.

import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { CorralError, isCorralError } from '../api/errors.js';
import type {
  LockConfirmAnswer,
  LockEntryWire,
  LockEvent,
  LockGrantedEvent,
  LockListingWire,
} from '../api/lock-wire.js';
import { acquire, grantOf, groupLocksOf, listLocks, parseLockMode, type LockEntryInfo, type LockGrant, type LockOwner, type LockRequest, type WaiterEntry } from '../coord/lock/index.js';
import { Session } from '../coord/session.js';
import type { Store } from '../store/store.js';
import type { PeerIdentity } from '../transport/types.js';
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { bootId, checkAttach, sameGroupRuns, signalSameGroup, type ProcessGroupIdentity } from '../util/process-group.js';

export interface LockServiceOptions {
  store: Store;
  /** This agent's node name, recorded as the owner's node. */
  node: string;
  /** The lock session's lease TTL and keepalive interval. */
  ttlSeconds: number;
  keepaliveIntervalMs: number;
  clock: Clock;
  logger: Logger;
  /** Called whenever the number of open tickets changes (a private daemon's idle exit). */
  onActivity?: () => void;
  /**
   * Whether the lock session's lease keeps counting while this agent is down (etcd, or a
   * coordinator on another node), so that an orphaned command's gate must watch this agent itself
   * (confirmGroup). False for a store of its own (a private daemon's, the coordinator's embedded
   * store): a restart gives its leases a fresh TTL. Default true.
   */
  leaseOutlivesAgent?: boolean;
}

type TicketState = 'waiting' | 'held' | 'orphaned' | 'done';

/** What keeps a lock once its client is gone (the header). */
interface Keeping {
  /** Attached: the verified process group. */
  group?: ProcessGroupIdentity;
  /** Kept stopWithinMs more, for the client's gate to stop the command. */
  guard: boolean;
  /** Why an attach asked for was not made (the guard applies). */
  refused?: string;
}

/**
 * The lock session's TTL is at least this (the membership session's when longer): it bounds how
 * long a dead agent's locks block others, and it must leave a holder that loses its lock a real
 * grace period to stop its command (half of TTL − margin − keepalive interval: 2 s at 5 s).
 */
export const LOCK_SESSION_MIN_TTL_SECONDS = 5;

/** How often an orphaned lock checks whether its process group still runs. */
const ORPHAN_POLL_MS = 100;
/** Bound on a release or cleanup retry's backoff. */
const RETRY_MAX_MS = 2000;
/**
 * How long close() waits for acquires in flight to settle before deciding the session's fate. One
 * that has not settled by then (a hung store) is never handed out: held() refuses once closing.
 */
const CLOSE_SETTLE_MS = 5000;

const sameIdentity = (a: PeerIdentity, b: PeerIdentity): boolean =>
  a.kind === b.kind && (a.kind !== 'tls' || (b.kind === 'tls' && a.commonName === b.commonName && a.role === b.role));

export class LockService {
  private sessionValue: Session | undefined;
  private opening: Promise<Session> | undefined;
  private readonly tickets = new Map<string, LockTicket>();
  /** Leases of a previous incarnation kept alive for the locks taken back (recover()). */
  private readonly adopted = new Set<Session>();
  private readonly timers = new Set<Timer>();
  private closing = false;
  /** Background work (retried releases, cleanups) that close() waits for, bounded. */
  private readonly background = new Set<Promise<void>>();
  /** recover() has run: a group with no ticket has no lock here (until then, not known). */
  private recovered = false;

  constructor(readonly opts: LockServiceOptions) {}

  /** Open tickets: waiting, held or orphaned. */
  get active(): number {
    return this.tickets.size;
  }

  /** The margin the session keeps before its TTL (session.ts). */
  private get marginMs(): number {
    return Math.max(100, this.opts.ttlSeconds * 100);
  }

  /**
   * How a holder paces itself: confirm every quarter, and stop its work when less than half of the
   * validity it can count on in the worst case (TTL − margin − a keepalive interval) remains.
   */
  pacing(): { confirmEveryMs: number; stopWithinMs: number } {
    const base = Math.max(100, this.opts.ttlSeconds * 1000 - this.marginMs - this.opts.keepaliveIntervalMs);
    return { confirmEveryMs: Math.max(20, Math.floor(base / 4)), stopWithinMs: Math.floor(base / 2) };
  }

  /** The agent's lock session if it is open and alive. */
  liveSession(): Session | undefined {
    const current = this.sessionValue;
    return current?.state === 'alive' ? current : undefined;
  }

  /** The agent's lock session, opened on first use and again after a loss. */
  async session(signal: AbortSignal): Promise<Session> {
    const current = this.sessionValue;
    if (current?.state === 'alive') return current;
    if (this.closing) throw new CorralError('SHUTTING_DOWN', 'the agent is stopping; retry once it is back');
    this.opening ??= this.openSession().finally(() => (this.opening = undefined));
    return await raceSignal(this.opening, signal);
  }

  private async openSession(): Promise<Session> {
    const { store, ttlSeconds, keepaliveIntervalMs, clock, logger } = this.opts;
    const session = await Session.open(store, { ttlSeconds, keepaliveIntervalMs, clock, logger: logger.child({ component: 'lock-session' }) });
    if (this.closing) {
      await session.close();
      throw new CorralError('SHUTTING_DOWN', 'the agent is stopping; retry once it is back');
    }
    // Every held lock and every wait listens to the session's loss.
    setMaxListeners(0, session.signal);
    this.sessionValue = session;
    logger.debug({ lease: session.lease.toString(16) }, 'lock session opened');
    return session;
  }

  /** POST /v1/locks/acquire: a stream of LockEvent, open while the lock is held. */
  acquire(body: unknown, peer: PeerIdentity, signal: AbortSignal | undefined): AsyncIterable<LockEvent> {
    if (this.closing) throw new CorralError('SHUTTING_DOWN', 'the agent is stopping; retry once it is back');
    const request = this.decode(body, peer);
    const keeping = this.keeping(body as Record<string, unknown>, peer);
    if (keeping.group) request.group = { node: this.opts.node, ...keeping.group };
    const ticket = new LockTicket(this, request, peer, keeping);
    this.tickets.set(ticket.id, ticket);
    this.opts.onActivity?.();
    ticket.start(signal);
    return ticket;
  }

  /** POST /v1/locks/release. */
  async release(id: unknown, rollback: unknown, peer: PeerIdentity): Promise<{ released: true }> {
    const ticket = this.find(id, peer);
    await ticket.release(rollback === true);
    return { released: true };
  }

  /** POST /v1/locks/confirm: how long the lock is certainly still held. */
  confirm(id: unknown, peer: PeerIdentity): LockConfirmAnswer {
    const ticket = this.find(id, peer);
    return { validForMs: ticket.validForMs() };
  }

  /**
   * confirm-group on the lock channel, asked by a gate whose client is gone: how long the lock kept
   * for its process group is certainly still held (the shortest if several). Only the group's own
   * leader can ask (the same check as attach: the secret in its environment), and the answer is a
   * duration or NOT_FOUND, nothing about any other lock. Until recover() has run (a restart whose
   * store answers late), a group without a ticket is UNAVAILABLE: the gate asks again.
   */
  confirmGroup(pgid: unknown, secret: unknown, peer: PeerIdentity): LockConfirmAnswer {
    if (peer.kind !== 'local') throw new CorralError('FORBIDDEN', 'only a local client can confirm the lock of a process group');
    if (typeof pgid !== 'number' || typeof secret !== 'string') throw new CorralError('BAD_REQUEST', 'confirm-group needs {pgid: a process group id, secret: the hex secret in its leader’s environment}');
    const check = checkAttach(pgid, secret);
    if (!check.ok) throw new CorralError('FORBIDDEN', `cannot confirm the lock of process group ${pgid}: ${check.reason}`);
    let least: number | undefined;
    for (const t of this.tickets.values()) {
      if (!t.keptFor(check.identity)) continue;
      try {
        const ms = t.validForMs();
        least = least === undefined ? ms : Math.min(least, ms);
      } catch {
        // lost meanwhile: it does not count
      }
    }
    if (least !== undefined) return { validForMs: least };
    if (!this.recovered) throw new CorralError('UNAVAILABLE', 'the agent is still taking back the locks of its previous run; ask again');
    throw new CorralError('NOT_FOUND', `this agent keeps no lock for process group ${pgid}`);
  }

  /**
   * What keeps a lock once its client is gone (the header): `attach` {pgid, secret} from a local
   * client, verified; else `guard`. A group that cannot be verified because it is another user's
   * falls back to the guard when the client asked for it; any other failed check refuses the
   * request (a genuine client never sends one).
   */
  private keeping(b: Record<string, unknown>, peer: PeerIdentity): Keeping {
    const guard = b.guard === true;
    const attach = b.attach;
    if (attach === undefined || attach === null) return { guard };
    if (typeof attach !== 'object') throw new CorralError('BAD_REQUEST', 'attach must be {pgid, secret}');
    const { pgid, secret } = attach as Record<string, unknown>;
    if (typeof pgid !== 'number' || typeof secret !== 'string') throw new CorralError('BAD_REQUEST', 'attach must be {pgid: a process group id, secret: the hex secret in its leader’s environment}');
    if (peer.kind !== 'local') {
      // Its group runs on another machine: this agent can neither watch nor signal it.
      const refused = 'a client on another machine cannot attach its process group; its gate stops the command if the client dies';
      if (guard) return { guard, refused };
      throw new CorralError('FORBIDDEN', refused);
    }
    const check = checkAttach(pgid, secret);
    if (check.ok) return { guard, group: check.identity };
    if (check.otherUser && guard) return { guard, refused: check.reason };
    throw new CorralError('FORBIDDEN', `cannot attach process group ${pgid}: ${check.reason}`);
  }

  /**
   * At start, before serving: takes back the locks that a previous incarnation of this agent kept
   * for process groups, when those groups still run (their commands outlived both their clients
   * and that agent). Their lease is kept alive from now on; each lock is released when its group
   * ends; the other keys under that lease (holders whose clients are stopping their commands, and
   * waiters whose requests ended with the crash) are removed one TTL from now, when the lease would
   * have expired. Returns how many locks it took back.
   */
  async recover(): Promise<number> {
    const { store, node, keepaliveIntervalMs, clock, logger } = this.opts;
    let taken = 0;
    for (const l of await groupLocksOf(store, node, bootId())) {
      const identity = (e: (typeof l.groupHolds)[number]): ProcessGroupIdentity => ({ pgid: e.record.group.pgid, start: e.record.group.start, boot: e.record.group.boot });
      const running = l.groupHolds.filter((e) => sameGroupRuns(identity(e)));
      if (running.length === 0) continue; // nothing to keep: the lease expires as it would have
      let session: Session;
      try {
        session = await Session.resume(store, l.lease, { keepaliveIntervalMs, clock, logger: logger.child({ component: 'lock-session', adopted: true }) });
      } catch (err) {
        if (isCorralError(err, 'LEASE_NOT_FOUND')) continue; // expired meanwhile
        throw err;
      }
      setMaxListeners(0, session.signal);
      this.adopted.add(session);
      for (const e of running) {
        const ticket = LockTicket.adopt(this, grantOf(store, session, e, logger), session, identity(e), e);
        this.tickets.set(ticket.id, ticket);
        taken++;
        logger.warn({ resource: e.resourceName, pgid: e.record.group.pgid }, 'took back a lock whose command still runs after a restart; keeping it until the command ends');
      }
      const ended = l.groupHolds.filter((e) => !running.includes(e));
      for (const e of ended) void this.retry(`releasing ${e.resourceName}`, () => grantOf(store, session, e, logger).release({ rollback: true }), () => session.state === 'alive');
      const others: WaiterEntry[] = l.others;
      if (others.length > 0) {
        this.timers.add(clock.setTimer(session.ttlSeconds * 1000, () => {
          for (const e of others) {
            void this.retry(
              `removing ${e.key}`,
              async () => void (await store.txn({ compare: [{ key: e.key, target: 'createRevision', op: '=', value: e.createRevision }], success: [{ type: 'delete', key: e.key }] })),
              () => session.state === 'alive',
            );
          }
        }));
      }
    }
    this.recovered = true;
    if (taken > 0) this.opts.onActivity?.();
    return taken;
  }

  /** An adopted session with no lock left to keep stops being renewed: what remains expires with it. */
  private releaseAdopted(session: Session): void {
    if (!this.adopted.has(session)) return;
    for (const t of this.tickets.values()) if (t.heldUnder === session) return;
    this.adopted.delete(session);
    void session.close({ revoke: false });
  }

  /** GET /v1/locks. */
  async list(): Promise<LockListingWire> {
    const listing = await listLocks(this.opts.store);
    const orphanedKeys = new Set<string>();
    for (const t of this.tickets.values()) if (t.state === 'orphaned' && t.grant) orphanedKeys.add(t.grant.key);
    const entry = (e: LockEntryInfo): LockEntryWire => ({
      resource: e.resource,
      mode: e.mode,
      quantity: e.quantity,
      value: e.value ?? null,
      node: e.owner.node ?? null,
      pid: e.owner.pid ?? null,
      command: e.owner.command ?? null,
      since: e.since,
      fencingToken: e.fencingToken === undefined ? null : e.fencingToken.toString(),
      ...(orphanedKeys.has(e.key) ? { orphaned: true } : {}),
    });
    return {
      revision: listing.revision.toString(),
      node: this.opts.node,
      resources: listing.resources.map((r) => ({ name: r.name, kind: r.kind, kept: r.kept, holders: r.holders.map(entry), waiters: r.waiters.map(entry) })),
    };
  }

  private find(id: unknown, peer: PeerIdentity): LockTicket {
    if (typeof id !== 'string') throw new CorralError('BAD_REQUEST', 'id must be the id of a lock request (from its stream)');
    const ticket = this.tickets.get(id);
    if (!ticket || !sameIdentity(ticket.peer, peer)) throw new CorralError('NOT_FOUND', `no lock request ${id.slice(0, 64)} on this agent (released or lost?)`);
    return ticket;
  }

  private decode(body: unknown, peer: PeerIdentity): LockRequest {
    if (body === null || typeof body !== 'object') throw new CorralError('BAD_REQUEST', 'the request body must be a JSON object');
    const b = body as Record<string, unknown>;
    const field = <T>(name: string, check: (v: unknown) => v is T, what: string): T | undefined => {
      const v = b[name];
      if (v === undefined || v === null) return undefined;
      if (!check(v)) throw new CorralError('BAD_REQUEST', `${name} must be ${what}`);
      return v;
    };
    const isString = (v: unknown): v is string => typeof v === 'string';
    const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
    const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
    const resource = field('resource', isString, 'a resource name');
    if (resource === undefined) throw new CorralError('BAD_RESOURCE', 'a lock request needs a resource name');
    if (resource.length > 4096) throw new CorralError('BAD_RESOURCE', 'a resource name may be at most 4096 characters');
    const mode = field('mode', isString, 'a lock mode');
    const pid = field('pid', isNumber, 'a process id');
    const command = field('command', isString, 'a string');
    const host = field('host', isString, 'a host name');
    const owner: LockOwner = { node: host && peer.kind === 'tls' ? `${host.slice(0, 255)} via ${this.opts.node}` : this.opts.node };
    if (pid !== undefined) owner.pid = pid;
    if (command !== undefined) owner.command = command.slice(0, 1024);
    const request: LockRequest = { resource, owner };
    if (mode !== undefined) request.mode = parseLockMode(mode);
    const quantity = field('quantity', isNumber, 'a number of units');
    if (quantity !== undefined) request.quantity = quantity;
    const timeoutMs = field('timeoutMs', isNumber, 'milliseconds (-1 to wait forever)');
    if (timeoutMs !== undefined) request.timeoutMs = timeoutMs;
    const create = field('create', isBoolean, 'true or false');
    if (create !== undefined) request.create = create;
    const idle = field('idleLifespanMs', isNumber, 'milliseconds');
    if (idle !== undefined) request.idleLifespanMs = idle;
    return request;
  }

  /** A ticket is finished: forget it. */
  forget(ticket: LockTicket): void {
    if (this.tickets.get(ticket.id) === ticket) {
      this.tickets.delete(ticket.id);
      const under = ticket.heldUnder;
      if (under !== undefined && this.adopted.has(under)) this.releaseAdopted(under);
      this.opts.onActivity?.();
    }
  }

  /**
   * Runs `work` until it succeeds, backing off, while `alive()` holds: releases and cleanups must
   * happen even if the store hiccups, or a key would block its resource until the session ends.
   */
  retry(what: string, work: () => Promise<void>, alive: () => boolean): Promise<void> {
    const { clock, logger } = this.opts;
    const run = async (): Promise<void> => {
      for (let attempt = 0; ; attempt++) {
        try {
          await work();
          return;
        } catch (err) {
          if (!alive()) return;
          if (attempt === 0 || attempt % 20 === 0) logger.warn({ err: (err as Error).message, attempt }, `${what} failed; retrying`);
          await clock.sleep(Math.min(RETRY_MAX_MS, 50 * 2 ** Math.min(attempt, 6)));
        }
      }
    };
    const p = run();
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
    return p;
  }

  /**
   * Stops serving: waiting requests end, held locks are reported lost (their clients stop their
   * commands). The session is revoked only when no lock is held: otherwise its keys must outlive
   * the commands still running, and expire with its TTL (after a restart, on the embedded store).
   */
  async close(): Promise<void> {
    this.closing = true;
    // Whether any lock is held is known only once every acquire in flight has settled: a grant the
    // store made just now must not be handed out after the decision (its key revoked under a
    // client that believes it holds the lock), nor outlive it unnoticed. Waits end at once; a
    // request whose grant lands meanwhile gives it back without handing it out (held() below).
    for (const t of this.tickets.values()) t.stopWaiting();
    await withinMs(Promise.all([...this.tickets.values()].map((t) => t.settled)), CLOSE_SETTLE_MS);
    const tickets = [...this.tickets.values()];
    const held = tickets.some((t) => t.state === 'held' || t.state === 'orphaned');
    await Promise.all(tickets.map((t) => t.shutdown()));
    const session = this.sessionValue ?? (await this.opening?.catch(() => undefined));
    await withinMs(Promise.all([...this.background]), 2000);
    await session?.close({ revoke: !held });
    // Locks taken back were held (their commands are being stopped): their keys expire.
    for (const timer of this.timers) timer.cancel();
    for (const adopted of this.adopted) await adopted.close({ revoke: false });
    this.adopted.clear();
  }

  get store(): Store {
    return this.opts.store;
  }

  get clock(): Clock {
    return this.opts.clock;
  }

  get logger(): Logger {
    return this.opts.logger;
  }

  get isClosing(): boolean {
    return this.closing;
  }
}

/** One acquire stream: its request, its events, and the lock once granted. */
class LockTicket implements AsyncIterableIterator<LockEvent> {
  readonly id = randomUUID();
  state: TicketState = 'waiting';
  grant: LockGrant | undefined;
  private session: Session | undefined;
  private readonly events: LockEvent[] = [];
  private wake: (() => void) | undefined;
  /** No event follows the queued ones. */
  private finished = false;
  private failure: unknown;
  /**
   * Stops the wait when the client goes away or the agent stops. Its signal is made only for a
   * request that must wait (AbortController makes it on first use); `stopped` is the reason.
   */
  private readonly stop = new AbortController();
  private stopped: Error | undefined;
  /** Resolves when run() is over: granted, failed or given up. */
  private running: Promise<void> = Promise.resolve();
  private clientGone = false;
  private releasing: Promise<void> | undefined;
  private orphanTimer: Timer | undefined;
  private detachClient: (() => void) | undefined;
  private detachLost: (() => void) | undefined;

  constructor(
    private readonly service: LockService,
    private readonly request: LockRequest,
    readonly peer: PeerIdentity,
    private readonly keeping: Keeping = { guard: false },
  ) {}

  /** A lock taken back after a restart (LockService.recover()): held for a group, its client long gone. */
  static adopt(service: LockService, grant: LockGrant, session: Session, group: ProcessGroupIdentity, entry: WaiterEntry): LockTicket {
    const t = new LockTicket(service, { resource: entry.resourceName, owner: entry.record.owner }, { kind: 'local' }, { group, guard: false });
    t.grant = grant;
    t.session = session;
    t.state = 'orphaned';
    t.clientGone = true;
    t.finished = true;
    const onLost = (): void => t.onLost(grant.lost.reason);
    grant.lost.addEventListener('abort', onLost, { once: true });
    t.detachLost = () => grant.lost.removeEventListener('abort', onLost);
    t.watchOrphan();
    return t;
  }

  /** Whether this ticket holds (or keeps, its client gone) a lock for the process group `id`. */
  keptFor(id: ProcessGroupIdentity): boolean {
    const group = this.keeping.group;
    return (this.state === 'held' || this.state === 'orphaned') && group !== undefined && group.pgid === id.pgid && group.start === id.start && group.boot === id.boot;
  }

  /** The session its lock is held under (once granted). */
  get heldUnder(): Session | undefined {
    return this.session;
  }

  /** `clientSignal`: aborted when the client goes away; without it the caller calls return() then (a lock channel does). */
  start(clientSignal: AbortSignal | undefined): void {
    const onGone = (): void => this.onClientGone();
    if (clientSignal === undefined) {
      // The caller says when the client goes (return()).
    } else if (clientSignal.aborted) {
      queueMicrotask(onGone);
    } else {
      clientSignal.addEventListener('abort', onGone, { once: true });
      this.detachClient = () => clientSignal.removeEventListener('abort', onGone);
    }
    this.running = this.run().catch((err: unknown) => {
      this.service.logger.error({ err: (err as Error).message }, 'lock request failed unexpectedly');
      this.end(err);
      if (this.state === 'waiting') this.done();
    });
  }

  /** Resolves once the request has been granted, failed or given up (never rejects). */
  get settled(): Promise<void> {
    return this.running;
  }

  /** The agent stops: a waiting request gives up (a grant already in flight is refused in held()). */
  stopWaiting(): void {
    if (this.state === 'waiting') this.abortWait(new CorralError('SHUTTING_DOWN', 'the agent is stopping'));
  }

  private abortWait(reason: Error): void {
    if (this.stopped !== undefined) return;
    this.stopped = reason;
    this.stop.abort(reason);
  }

  // --- the stream ---------------------------------------------------------------------------

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<LockEvent>> {
    for (;;) {
      const event = this.events.shift();
      if (event !== undefined) return { value: event, done: false };
      if (this.finished) {
        if (this.failure !== undefined) {
          const failure = this.failure;
          this.failure = undefined;
          throw CorralError.from(failure);
        }
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** The server stops reading: the client went away or the server is closing. */
  return(): Promise<IteratorResult<LockEvent>> {
    this.onClientGone();
    return Promise.resolve({ value: undefined, done: true });
  }

  private push(event: LockEvent): void {
    if (this.finished) return;
    this.events.push(event);
    this.wakeReader();
  }

  private end(failure?: unknown): void {
    if (this.finished) return;
    this.finished = true;
    this.failure = failure;
    this.wakeReader();
  }

  private wakeReader(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  // --- waiting ------------------------------------------------------------------------------

  private async run(): Promise<void> {
    const { clock } = this.service;
    const timeoutMs = this.request.timeoutMs ?? -1;
    const deadline = timeoutMs > 0 ? clock.now() + timeoutMs : Number.POSITIVE_INFINITY;
    let queued = false;
    for (let attempt = 0; ; attempt++) {
      let waiterKey: string | undefined;
      let session: Session | undefined;
      try {
        if (this.stopped !== undefined) throw this.stopped;
        session = this.service.liveSession() ?? (await this.service.session(this.stop.signal));
        const remaining = timeoutMs > 0 ? Math.max(1, Math.ceil(deadline - clock.now())) : timeoutMs;
        const grant = await acquire(
          this.service.store,
          session,
          { ...this.request, timeoutMs: remaining },
          {
            waitSignal: () => this.stop.signal,
            clock,
            logger: this.service.logger,
            onWaiterKey: (key) => (waiterKey = key),
            onQueued: () => {
              if (!queued) this.push({ event: 'queued', id: this.id });
              queued = true;
            },
          },
        );
        this.held(grant, session);
        return;
      } catch (err) {
        if (this.stopped !== undefined) {
          // Given up: the client went away (nobody to tell) or the agent is stopping (tell it).
          if (!this.clientGone) this.end(this.stopped);
          return this.done();
        }
        const retry = this.retryable(err) && (timeoutMs < 0 || clock.now() < deadline - 1) && timeoutMs !== 0;
        // A failure in the middle of a store request may have left the key behind, on a session
        // that lives on: remove it, or it would block the resource until the agent stops.
        if (waiterKey !== undefined && session?.state === 'alive' && !isCorralError(err, 'LOCK_BUSY') && !isCorralError(err, 'LOCK_TIMEOUT')) {
          this.cleanUp(waiterKey, session);
        }
        if (!retry) {
          this.end(err);
          return this.done();
        }
        this.service.logger.debug({ err: (err as Error).message, attempt }, 'lock request interrupted; trying again');
        try {
          await clock.sleep(Math.min(1000, 50 * 2 ** Math.min(attempt, 5)), this.stop.signal);
        } catch {
          return this.done();
        }
      }
    }
  }

  private retryable(err: unknown): boolean {
    return (
      isCorralError(err, 'SESSION_LOST') ||
      isCorralError(err, 'STORE_UNAVAILABLE') ||
      isCorralError(err, 'UNAVAILABLE') ||
      isCorralError(err, 'TIMEOUT') ||
      isCorralError(err, 'LEASE_NOT_FOUND')
    );
  }

  private cleanUp(key: string, session: Session): void {
    void this.service.retry(
      `removing lock request ${key}`,
      async () => {
        await this.service.store.delete(key);
      },
      () => session.state === 'alive',
    );
  }

  // --- holding ------------------------------------------------------------------------------

  private held(grant: LockGrant, session: Session): void {
    this.grant = grant;
    this.session = session;
    this.state = 'held';
    if (this.clientGone || this.service.isClosing) {
      // The client left, or the agent began to stop, while the grant was in flight: give it back
      // without handing it out (rolled back: the command never ran).
      this.state = 'done';
      void this.releaseGrant(true).catch(() => undefined);
      this.end(this.clientGone ? undefined : new CorralError('SHUTTING_DOWN', 'the agent is stopping; retry once it is back'));
      return;
    }
    const event: LockGrantedEvent = {
      event: 'granted',
      id: this.id,
      resource: grant.resource,
      kind: grant.kind,
      mode: grant.mode,
      quantity: grant.quantity,
      value: grant.value ?? null,
      fencingToken: grant.fencingToken.toString(),
      validForMs: this.validForMs(),
      ...this.service.pacing(),
      attached: this.keeping.group !== undefined,
      ...(this.keeping.group !== undefined && this.service.opts.leaseOutlivesAgent !== false ? { leaseOutlivesAgent: true } : {}),
      ...(this.keeping.group === undefined && this.keeping.guard ? { guardedForMs: this.service.pacing().stopWithinMs } : {}),
      ...(this.keeping.refused !== undefined ? { attachRefused: this.keeping.refused } : {}),
    };
    this.push(event);
    const onLost = (): void => this.onLost(grant.lost.reason);
    grant.lost.addEventListener('abort', onLost, { once: true });
    this.detachLost = () => grant.lost.removeEventListener('abort', onLost);
  }

  /** How long the lock is certainly held from now on. */
  validForMs(): number {
    const session = this.session;
    if ((this.state !== 'held' && this.state !== 'orphaned') || session?.state !== 'alive') {
      throw new CorralError('SESSION_LOST', `lock request ${this.id} holds no lock: it was released or lost`);
    }
    return Math.max(0, Math.floor(session.deadline - this.service.clock.now()));
  }

  async release(rollback: boolean): Promise<void> {
    if (this.state === 'waiting') throw new CorralError('BAD_REQUEST', `lock request ${this.id} is still waiting; close its stream to give up`);
    if (this.state === 'held') {
      this.state = 'done';
      this.releasing = this.releaseGrant(rollback);
    }
    await this.releasing;
    this.push({ event: 'released', id: this.id });
    this.end();
  }

  /** Releases the grant; if the store fails, keeps trying in the background while the session lives. */
  private releaseGrant(rollback: boolean): Promise<void> {
    const grant = this.grant;
    const session = this.session;
    if (!grant || !session) return Promise.resolve();
    const attempt = grant.release({ rollback });
    const done = attempt.then(
      () => undefined,
      (err: unknown) => {
        void this.service.retry(`releasing ${grant.resource}`, () => grant.release({ rollback }), () => session.state === 'alive');
        throw err;
      },
    );
    void done.catch(() => undefined).finally(() => this.done());
    return done;
  }

  private onLost(reason: unknown): void {
    if (this.state === 'orphaned') this.stopOrphan();
    if (this.state !== 'held' && this.state !== 'orphaned') return;
    this.state = 'done';
    const err = reason instanceof CorralError ? reason : new CorralError('SESSION_LOST', String(reason));
    this.service.logger.warn({ resource: this.grant?.resource, err: err.message }, 'lock lost');
    this.push({ event: 'lost', id: this.id, code: err.code, reason: err.message });
    this.end();
    this.done();
  }

  // --- the client going away ------------------------------------------------------------------

  private onClientGone(): void {
    if (this.clientGone) return;
    this.clientGone = true;
    this.detachClient?.();
    this.end();
    switch (this.state) {
      case 'waiting':
        this.abortWait(new CorralError('UNAVAILABLE', 'the client went away'));
        return;
      case 'held': {
        const group = this.keeping.group;
        if (group !== undefined && sameGroupRuns(group)) {
          // The client died but the command it protects still runs: keep the lock until it ends.
          this.state = 'orphaned';
          this.service.logger.warn({ resource: this.grant?.resource, pgid: group.pgid }, 'lock client gone while its command runs; keeping the lock until the command ends');
          this.watchOrphan();
          return;
        }
        if (group === undefined && this.keeping.guard) {
          // Its gate stops the command now that the client is gone; the lock lasts until it has.
          const graceMs = this.service.pacing().stopWithinMs;
          this.state = 'orphaned';
          this.service.logger.warn({ resource: this.grant?.resource, graceMs }, 'lock client gone; keeping the lock while its gate stops the command');
          this.orphanTimer = this.service.clock.setTimer(graceMs, () => {
            if (this.state !== 'orphaned') return;
            this.state = 'done';
            void this.releaseGrant(true).catch(() => undefined);
          });
          return;
        }
        // FLoM rolls a transactional value back when its holder disconnects without unlocking.
        this.state = 'done';
        void this.releaseGrant(true).catch(() => undefined);
        return;
      }
      case 'orphaned':
      case 'done':
        return;
    }
  }

  private watchOrphan(): void {
    this.orphanTimer = this.service.clock.setTimer(ORPHAN_POLL_MS, () => {
      if (this.state !== 'orphaned') return;
      const group = this.keeping.group;
      if (group !== undefined && sameGroupRuns(group)) return this.watchOrphan();
      this.service.logger.info({ resource: this.grant?.resource, pgid: group?.pgid }, 'the orphaned command ended; releasing its lock');
      this.state = 'done';
      void this.releaseGrant(true).catch(() => undefined);
    });
  }

  /**
   * The session of an orphaned lock is lost (or the agent stops): nobody else will stop the
   * command, so the agent does, before the lease can expire on the store: SIGTERM now, SIGKILL
   * halfway to the deadline.
   */
  private stopOrphan(): void {
    this.orphanTimer?.cancel();
    const group = this.keeping.group;
    if (group === undefined) return; // guarded: its gate has stopped it already
    this.service.logger.warn({ pgid: group.pgid, resource: this.grant?.resource }, 'lock lost while its client is gone: stopping the command it protected');
    signalSameGroup(group, 'SIGTERM');
    const session = this.session;
    const left = session ? session.deadline - this.service.clock.now() : 0;
    const graceMs = Math.max(0, Math.min(5000, left / 2, Math.max(100, this.service.opts.ttlSeconds * 100) / 2));
    this.service.clock.setTimer(graceMs, () => void signalSameGroup(group, 'SIGKILL'));
  }

  /** The agent stops. */
  async shutdown(): Promise<void> {
    switch (this.state) {
      case 'waiting':
        this.abortWait(new CorralError('SHUTTING_DOWN', 'the agent is stopping'));
        return;
      case 'held':
      case 'orphaned':
        this.onLost(new CorralError('SHUTTING_DOWN', 'the agent is stopping: the lock ends with it; stop the protected work'));
        return;
      case 'done':
        await this.releasing?.catch(() => undefined);
    }
  }

  private done(): void {
    this.detachClient?.();
    if (this.state === 'done') this.detachLost?.();
    if (this.state === 'waiting') this.state = 'done';
    if (this.state === 'done') this.service.forget(this);
  }
}

function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

async function withinMs(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
