// The agent's membership loop: open a session on the store, publish the member key, campaign for
// master; when the session is lost (store unreachable past the TTL, or lease gone), start over.
// The master also watches members and logs nodes going UP and DOWN.

import { CorralError, isCorralError } from '../api/errors.js';
import { formatHostPort } from '../config/cluster-config.js';
import { Election, type Leader } from '../coord/election.js';
import { joinMembership, KEYS, type MemberInfo } from '../coord/membership.js';
import { Session } from '../coord/session.js';
import type { Revision, Store } from '../store/store.js';
import type { Agent } from './agent.js';

export type MembershipPhase = 'connecting' | 'member' | 'master' | 'stopped';

export class Membership {
  private phaseValue: MembershipPhase = 'connecting';
  private session: Session | undefined;
  private termValue: Revision | undefined;
  private lastError: string | undefined;
  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;
  private stepDownController: AbortController | undefined;

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

  /** Why the agent is not (yet) a member, when it is not. */
  get error(): string | undefined {
    return this.lastError;
  }

  get lease(): bigint | undefined {
    return this.session?.state === 'alive' ? this.session.lease : undefined;
  }

  start(): void {
    this.loop = this.run();
  }

  private get logger(): Agent['logger'] {
    return this.agent.logger;
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    let failures = 0;
    while (!signal.aborted) {
      try {
        await this.serveOneSession(signal);
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const message = (err as Error).message;
        if (message !== this.lastError) {
          this.logger.warn({ err: message, code: isCorralError(err) ? err.code : undefined }, 'cannot join the cluster yet; retrying');
        }
        this.lastError = message;
      }
      this.phaseValue = 'connecting';
      this.termValue = undefined;
      if (signal.aborted) break;
      // Back off a little on repeated failures, but never longer than a keepalive interval, so a
      // returning coordinator sees this node again quickly.
      const delay = Math.min(this.agent.config.timings.keepaliveIntervalMs, 50 * 2 ** Math.min(failures, 4));
      await this.agent.clock.sleep(delay, signal).catch(() => undefined);
    }
    this.phaseValue = 'stopped';
  }

  private async serveOneSession(signal: AbortSignal): Promise<void> {
    const { timings } = this.agent.config;
    const session = await Session.open(this.store, {
      ttlSeconds: timings.sessionTtlSeconds,
      keepaliveIntervalMs: timings.keepaliveIntervalMs,
      clock: this.agent.clock,
      logger: this.logger,
    });
    this.session = session;
    try {
      const info: MemberInfo = {
        address: formatHostPort(this.agent.self.address),
        pid: process.pid,
        startedAt: this.agent.startedAtWall.toISOString(),
        version: this.agent.version,
      };
      await joinMembership(this.store, session, this.agent.name, info);
      this.phaseValue = 'member';
      this.lastError = undefined;
      this.logger.info({ lease: session.lease.toString(16) }, 'joined the cluster');
      const stop = AbortSignal.any([signal, session.signal]);
      const election = new Election(this.store, KEYS.masterElection, session);
      while (!stop.aborted) {
        const leader = await this.campaign(election, stop);
        this.phaseValue = 'master';
        this.termValue = leader.term;
        this.logger.info({ term: leader.term.toString() }, `${this.agent.name} acting as current cluster master`);
        const stepDown = new AbortController();
        this.stepDownController = stepDown;
        await this.watchMembers(leader.term, AbortSignal.any([stop, stepDown.signal]));
        this.stepDownController = undefined;
        if (stop.aborted) break;
        // Asked to step down: give up the term and queue again behind the other candidates.
        await election.resign();
        this.phaseValue = 'member';
        this.termValue = undefined;
        this.logger.info({ term: leader.term.toString() }, 'stepped down as master');
      }
    } finally {
      if (session.state === 'lost') this.logger.warn({ reason: session.reason }, 'membership lost with the session; rejoining');
      await session.close({ revoke: signal.aborted });
    }
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

  /** While master: log every node that comes UP or goes DOWN. */
  private async watchMembers(fromTerm: Revision, stop: AbortSignal): Promise<void> {
    let from = fromTerm;
    while (!stop.aborted) {
      const watch = this.store.watch(KEYS.members, { fromRevision: from, signal: stop });
      try {
        for await (const event of watch) {
          from = event.revision + 1n;
          const node = event.kv.key.slice(KEYS.members.length);
          if (event.type === 'delete') this.logger.warn({ peer: node }, `node ${node} is DOWN`);
          else if (event.kv.version === 1n) this.logger.info({ peer: node }, `node ${node} is UP`);
        }
      } catch (err) {
        if (stop.aborted) return;
        if (isCorralError(err, 'COMPACTED')) from = (await this.store.revision()) + 1n;
        await this.agent.clock.sleep(this.agent.config.timings.keepaliveIntervalMs, stop).catch(() => undefined);
      } finally {
        watch.close();
      }
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
    controller.abort();
    const deadline = this.agent.clock.now() + this.agent.config.timings.requestTimeoutMs;
    while (this.phaseValue === 'master' && this.agent.clock.now() < deadline) await this.agent.clock.sleep(5);
  }

  /** Leaves the cluster: revokes the session so this node shows DOWN and master moves at once. */
  async stop(): Promise<void> {
    this.controller.abort();
    await this.loop;
  }
}
