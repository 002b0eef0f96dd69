// The agent's membership loop: open a session on the store, publish the member key, campaign for
// master; when the session is lost (store unreachable past the TTL, or lease gone), start over.
//
//   connecting ──session + member key──► member ──elected──► master
//        ▲                                 ▲  ◄──step down / campaign key deleted──┘
//        └──────── session lost ───────────┴───────────────────────────────────────┘
//
// While a session lives, the member key is guarded (re-published if someone deletes it), and the
// master watches its own campaign key: if it vanishes, the master steps down at once rather than
// go on believing it leads. The master also logs every node going UP or DOWN.

import { CorralError, isCorralError } from '../api/errors.js';
import { formatHostPort } from '../config/cluster-config.js';
import { Election, type Leader } from '../coord/election.js';
import { joinMembership, KEYS, type MemberInfo } from '../coord/membership.js';
import { Session } from '../coord/session.js';
import type { Revision, Store, WatchEvent } from '../store/store.js';
import type { Agent } from './agent.js';

export type MembershipPhase = 'connecting' | 'member' | 'master' | 'stopped';

/** Why a master stopped leading (other than its session ending). */
type TermEnd = 'step-down' | 'key-deleted';

export class Membership {
  private phaseValue: MembershipPhase = 'connecting';
  private termValue: Revision | undefined;
  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;
  private stepDownController: AbortController | undefined;
  private phaseWaiters: (() => void)[] = [];

  constructor(
    private readonly agent: Agent,
    private readonly store: Store,
  ) {}

  get phase(): MembershipPhase {
    return this.phaseValue;
  }

  get term(): Revision | undefined {
    return this.termValue;
  }

  start(): void {
    this.loop = this.run();
  }

  private get logger(): Agent['logger'] {
    return this.agent.logger;
  }

  private setPhase(next: MembershipPhase, term?: Revision): void {
    if (next === this.phaseValue && term === this.termValue) return;
    this.logger.debug({ from: this.phaseValue, to: next, term: term?.toString() }, 'membership phase');
    this.phaseValue = next;
    this.termValue = term;
    const waiters = this.phaseWaiters;
    this.phaseWaiters = [];
    for (const wake of waiters) wake();
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    let failures = 0;
    let lastError: string | undefined;
    while (!signal.aborted) {
      try {
        await this.serveOneSession(signal);
        failures = 0;
        lastError = undefined;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const message = (err as Error).message;
        if (isCorralError(err, 'SESSION_LOST')) {
          this.logger.warn({ err: message }, 'session lost; rejoining the cluster');
        } else if (message !== lastError) {
          this.logger.warn({ err: message, code: isCorralError(err) ? err.code : undefined }, 'cannot join the cluster yet; retrying');
        }
        lastError = message;
      }
      this.setPhase('connecting');
      if (signal.aborted) break;
      // Back off a little on repeated failures, but never longer than a keepalive interval, so a
      // returning coordinator sees this node again quickly.
      const delay = Math.min(this.agent.config.timings.keepaliveIntervalMs, 50 * 2 ** Math.min(failures, 4));
      await this.agent.clock.sleep(delay, signal).catch(() => undefined);
    }
    this.setPhase('stopped');
  }

  private memberInfo(): MemberInfo {
    return {
      address: formatHostPort(this.agent.self.address),
      pid: process.pid,
      startedAt: this.agent.startedAtWall.toISOString(),
      version: this.agent.version,
    };
  }

  private async serveOneSession(signal: AbortSignal): Promise<void> {
    const { timings } = this.agent.config;
    const session = await Session.open(this.store, {
      ttlSeconds: timings.sessionTtlSeconds,
      keepaliveIntervalMs: timings.keepaliveIntervalMs,
      clock: this.agent.clock,
      logger: this.logger,
    });
    const stop = AbortSignal.any([signal, session.signal]);
    try {
      await this.retirePreviousIncarnation(session);
      const joinedAt = await joinMembership(this.store, session, this.agent.name, this.memberInfo());
      this.setPhase('member');
      this.logger.info({ lease: session.lease.toString(16) }, 'joined the cluster');
      const guardStop = new AbortController();
      const guard = this.guardMemberKey(session, AbortSignal.any([stop, guardStop.signal]), joinedAt + 1n);
      const election = new Election(this.store, KEYS.masterElection, session);
      try {
        while (!stop.aborted) {
          const leader = await this.campaign(election, stop);
          this.setPhase('master', leader.term);
          this.logger.info({ term: leader.term.toString() }, `${this.agent.name} acting as current cluster master`);
          const end = await this.lead(leader, stop);
          if (stop.aborted) break;
          if (end === 'step-down') {
            await election.resign();
            this.logger.info({ term: leader.term.toString() }, 'stepped down as master');
          } else {
            this.logger.warn({ term: leader.term.toString(), key: leader.key }, 'the campaign key was deleted: no longer master; campaigning again');
          }
          this.setPhase('member');
        }
      } finally {
        guardStop.abort();
        await guard;
      }
      if (session.state === 'lost') throw session.signal.reason as Error;
    } finally {
      await session.close({ revoke: signal.aborted });
    }
  }

  /**
   * A member key left by this node's previous agent (killed, or cut off from the store) still
   * holds that agent's lease until it expires; that lease can only belong to a dead process, so
   * revoke it now rather than show a stale master or member for up to a TTL.
   */
  private async retirePreviousIncarnation(session: Session): Promise<void> {
    const { kv } = await this.store.get(KEYS.members + this.agent.name);
    if (!kv || kv.lease === 0n || kv.lease === session.lease) return;
    this.logger.info({ lease: kv.lease.toString(16) }, "revoking the session of this node's previous agent");
    await this.store.revokeLease(kv.lease);
  }

  /** Re-publishes the member key if it is deleted while the session lives. */
  private async guardMemberKey(session: Session, stop: AbortSignal, fromRevision: Revision): Promise<void> {
    const key = KEYS.members + this.agent.name;
    await this.watchUntilStopped(key, stop, async (event) => {
      if (event.kv.key !== key || event.type !== 'delete' || stop.aborted) return;
      this.logger.warn({ key }, 'the member key was deleted while this node is up; publishing it again');
      await joinMembership(this.store, session, this.agent.name, this.memberInfo());
    }, fromRevision);
  }

  /** Campaigns until elected; a store hiccup retries with the same session (same place in line). */
  private async campaign(election: Election, stop: AbortSignal): Promise<Leader> {
    for (;;) {
      try {
        return await election.campaign(this.agent.name, stop);
      } catch (err) {
        if (stop.aborted) throw err;
        this.logger.debug({ err: (err as Error).message }, 'campaign interrupted; retrying');
        await this.agent.clock.sleep(this.agent.config.timings.keepaliveIntervalMs, stop);
      }
    }
  }

  /** Leads until asked to step down, the campaign key vanishes, or `stop` aborts. */
  private async lead(leader: Leader, stop: AbortSignal): Promise<TermEnd | undefined> {
    const stepDown = new AbortController();
    this.stepDownController = stepDown;
    const termEnded = new AbortController();
    let end: TermEnd | undefined;
    const during = AbortSignal.any([stop, stepDown.signal, termEnded.signal]);
    try {
      await Promise.all([
        this.watchUntilStopped(leader.key, during, (event) => {
          if (event.kv.key === leader.key && event.type === 'delete') {
            end = 'key-deleted';
            termEnded.abort();
          }
        }, leader.term + 1n),
        this.watchUntilStopped(KEYS.members, during, (event) => {
          const node = event.kv.key.slice(KEYS.members.length);
          if (event.type === 'delete') this.logger.warn({ peer: node }, `node ${node} is DOWN`);
          else if (event.kv.version === 1n) this.logger.info({ peer: node }, `node ${node} is UP`);
        }, leader.term),
      ]);
    } finally {
      this.stepDownController = undefined;
    }
    if (stepDown.signal.aborted) return 'step-down';
    return end;
  }

  /**
   * Watches `prefix` and hands every event to `onEvent` until `stop` aborts; a broken watch is
   * resumed after its last event (or from the current revision when history was compacted).
   */
  private async watchUntilStopped(prefix: string, stop: AbortSignal, onEvent: (event: WatchEvent) => void | Promise<void>, fromRevision?: Revision): Promise<void> {
    let from = fromRevision ?? (await this.store.revision().catch(() => 0n)) + 1n;
    while (!stop.aborted) {
      const watch = this.store.watch(prefix, { fromRevision: from, signal: stop });
      try {
        for await (const event of watch) {
          from = event.revision + 1n;
          await onEvent(event);
        }
      } catch (err) {
        if (stop.aborted) return;
        if (isCorralError(err, 'COMPACTED')) from = (await this.store.revision().catch(() => from - 1n)) + 1n;
        this.logger.debug({ err: (err as Error).message, prefix }, 'watch interrupted; resuming');
      } finally {
        watch.close();
      }
      await this.agent.clock.sleep(this.agent.config.timings.keepaliveIntervalMs, stop).catch(() => undefined);
    }
  }

  /**
   * Hands mastership to the next candidate (a switchover, for maintenance or tests); this node
   * campaigns again behind the others. Resolves once this node has given up the term.
   */
  async stepDown(): Promise<void> {
    const controller = this.stepDownController;
    if (this.phaseValue !== 'master' || !controller) {
      throw new CorralError('NOT_RUNNING', `${this.agent.name} is not the master; ask the master to step down`);
    }
    const left = new Promise<void>((resolve) => this.phaseWaiters.push(resolve));
    controller.abort();
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<void>((resolve) => (timer = this.agent.clock.setTimer(this.agent.config.timings.requestTimeoutMs, resolve)));
    await Promise.race([left, timeout]);
    timer?.cancel();
  }

  /** Leaves the cluster: revokes the session so this node shows DOWN and master moves at once. */
  async stop(): Promise<void> {
    this.controller.abort();
    await this.loop;
  }
}
