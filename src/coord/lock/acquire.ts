// The lock recipe (etcd's concurrency.Mutex, generalised to FLoM's kinds and modes).
//
// A request puts a waiter key under the resource's prefix, attached to the session's lease, and
// reads every key that may conflict, in one transaction: the key's create revision is its place in
// line. It is granted when it gets along with every key ahead of it (grant-rule.ts); otherwise it
// watches only what blocks it and checks again when that goes. Set, sequence and timestamp grants
// then write the value issued into the waiter key and the resource's state key in one more
// transaction, compared on the state key's mod revision.
//
// The fencing token is the revision of the write that records the grant: the joining transaction
// for a request granted at once, else a second write of the waiter key (marked granted, or holding
// the value issued). Tokens therefore rise in the order grants happen, across the whole store: a
// request that passes a waiting one (a CR passing a waiting PW) gets a lower token than the PW,
// which is granted later. The place in line could not give that.
//
// Hot path (simple resource, granted at once): one transaction to acquire, one delete to release.

import { CorralError } from '../../api/errors.js';
import type { KeyValue, Store, TxnOp, TxnResult } from '../../store/store.js';
import { systemClock, type Clock } from '../../util/clock.js';
import { nullLogger, type Logger } from '../../util/log.js';
import { LockGrant, type LockSession } from './grant.js';
import { decide, keysAhead, type Decision } from './grant-rule.js';
import { nextRequestId, waiterKey } from './keys.js';
import { decodeIdleMarker, encodeWaiter, waiterEntries, type WaiterEntry, type WaiterRecord } from './records.js';
import { planRequest, type LockPlan, type LockRequest } from './request.js';
import { hasState } from './resource.js';
import { decodeState, encodeState, freshState, issue } from './resource-state.js';
import { WaitScope } from './wait-scope.js';
import { anyPut, keyDeleted, roomMade } from './watches.js';

export interface AcquireOptions {
  /** Decides timeouts (monotonic now, timers); its wallNow() dates requests and makes timestamps. */
  clock?: Clock;
  logger?: Logger;
  /** Called once, when the request is in line and must wait (it was not granted at once). */
  onQueued?: () => void;
  /**
   * Called with the waiter key before it is put. A caller whose session outlives the request (an
   * agent serving many requests on one session) deletes it after a failure that may have left it
   * behind (the store failing mid-request): otherwise it would block the resource until the
   * session ends.
   */
  onWaiterKey?: (key: string) => void;
  /**
   * The request's signal (instead of request.signal), made only if the request must wait: an agent
   * serving thousands of requests a second, most granted at once, saves an AbortSignal on each.
   */
  waitSignal?: () => AbortSignal;
}

/** The keys that may conflict with a request, read at one revision. */
interface Snapshot {
  revision: bigint;
  entries: WaiterEntry[];
  /** The state key (set, sequence and timestamp resources). */
  state: KeyValue | undefined;
}

/**
 * Waits for the lock and returns it held. Rejects with LOCK_BUSY (timeout 0 and busy),
 * LOCK_TIMEOUT, RESOURCE_NOT_FOUND (create: false), LOCK_IMPOSSIBLE, BAD_RESOURCE,
 * BAD_LOCK_MODE, BAD_LOCK_REQUEST, SESSION_LOST, or the signal's reason; on any failure the
 * waiter key is deleted.
 */
export async function acquire(store: Store, session: LockSession, request: LockRequest, options: AcquireOptions = {}): Promise<LockGrant> {
  const plan = planRequest(request);
  return await new LockAcquisition(store, session, plan, options.clock ?? systemClock, options.logger ?? nullLogger, options).run();
}

class LockAcquisition {
  private readonly key: string;
  private readonly record: WaiterRecord;
  private readonly startedAt: number;
  private inLine = false;
  /** Create revision of the waiter key: its place in line. */
  private revision = 0n;
  /** Revision of the write that recorded the grant. */
  private token = 0n;
  /** The resource existed when the key was put: its state carries over (idle.ts). */
  private existedAtJoin = false;
  private idleLifespanMs: number;
  private scope: WaitScope | undefined;

  constructor(
    private readonly store: Store,
    private readonly session: LockSession,
    private readonly plan: LockPlan,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly hooks: Pick<AcquireOptions, 'onQueued' | 'onWaiterKey' | 'waitSignal'>,
  ) {
    this.startedAt = clock.now();
    this.key = waiterKey(plan.keys, session.lease, nextRequestId());
    this.idleLifespanMs = plan.idleLifespanMs;
    this.record = {
      mode: plan.ask.mode,
      quantity: plan.ask.quantity,
      owner: plan.owner,
      since: new Date(clock.wallNow()).toISOString(),
      idleLifespanMs: plan.idleLifespanMs,
      ...(plan.group ? { group: plan.group } : {}),
    };
  }

  async run(): Promise<LockGrant> {
    this.session.signal.throwIfAborted();
    this.plan.signal?.throwIfAborted();
    this.hooks.onWaiterKey?.(this.key);
    try {
      let snapshot: Snapshot | undefined = await this.joinLine();
      const decision = this.decide(snapshot);
      if (!decision.granted) {
        if (this.plan.timeoutMs === 0) throw this.busy();
        this.logger.debug({ key: this.key, blocked: decision.by }, 'lock request waiting');
        this.hooks.onQueued?.();
        snapshot = await this.waitTurn(snapshot, decision);
      }
      const grant = hasState(this.plan.resource) ? await this.issueValue(snapshot) : await this.finishPlain(!decision.granted);
      this.session.signal.throwIfAborted();
      this.inLine = false; // the grant owns the key now
      this.logger.debug({ key: this.key, token: this.token.toString() }, 'lock granted');
      return grant;
    } catch (err) {
      await this.leaveLine();
      throw this.session.signal.aborted ? (this.session.signal.reason as Error) : err;
    } finally {
      this.scope?.close();
    }
  }

  // --- joining the line ---------------------------------------------------------------------

  private async joinLine(): Promise<Snapshot> {
    const { keys } = this.plan;
    const stateful = hasState(this.plan.resource);
    for (;;) {
      if (!this.plan.create) await this.awaitExistence();
      const ops: TxnOp[] = [
        { type: 'put', key: this.key, value: encodeWaiter(this.record), lease: this.session.lease },
        { type: 'range', prefix: keys.scanPrefix },
        { type: 'range', prefix: keys.idlePrefix, limit: 1 },
      ];
      if (stateful) ops.push({ type: 'get', key: keys.stateKey });
      this.inLine = true;
      const res = await this.store.txn({ compare: [], success: ops });
      const entries = waiterEntries(rangeAt(res, 1), { key: this.key, record: this.record });
      this.revision = entries.find((e) => e.key === this.key)?.createRevision ?? res.revision;
      const marker = rangeAt(res, 2)[0];
      const oldestOther = entries.find((e) => e.key !== this.key);
      this.existedAtJoin = oldestOther !== undefined || marker !== undefined;
      if (!this.plan.create && !this.existedAtJoin) {
        // It vanished between the existence check and the put: do not create it after all.
        await this.leaveLine();
        continue;
      }
      this.idleLifespanMs = marker ? decodeIdleMarker(marker.value).idleLifespanMs : (oldestOther?.record.idleLifespanMs ?? this.plan.idleLifespanMs);
      return { revision: res.revision, entries, state: stateful ? getAt(res, 3) : undefined };
    }
  }

  /** create: false — returns once the resource exists; RESOURCE_NOT_FOUND with timeout 0. */
  private async awaitExistence(): Promise<void> {
    const { keys } = this.plan;
    for (;;) {
      const res = await this.store.txn({
        compare: [],
        success: [
          { type: 'range', prefix: keys.scanPrefix, limit: 1 },
          { type: 'range', prefix: keys.idlePrefix, limit: 1 },
        ],
      });
      if (rangeAt(res, 0).length > 0 || rangeAt(res, 1).length > 0) return;
      if (this.plan.timeoutMs === 0) {
        throw new CorralError('RESOURCE_NOT_FOUND', `resource ${this.plan.resource.name} does not exist and the request may not create it or wait for it`);
      }
      await anyPut(this.store, [keys.scanPrefix, keys.idlePrefix], res.revision + 1n, this.waitScope().signal);
    }
  }

  private async leaveLine(): Promise<void> {
    if (!this.inLine) return;
    this.inLine = false;
    try {
      await this.store.delete(this.key);
    } catch (err) {
      // The key stays until the session ends; it blocks those behind it until then.
      this.logger.warn({ key: this.key, err: (err as Error).message }, 'could not withdraw a lock request; it ends with its session');
    }
  }

  // --- waiting ------------------------------------------------------------------------------

  private decide(snapshot: Snapshot): Decision {
    return decide(this.plan.ask, keysAhead(this.plan.ask, this.plan.resource.name, snapshot.entries, this.revision));
  }

  /** Returns once granted: a snapshot that shows it, or undefined when none was read since. */
  private async waitTurn(first: Snapshot, firstDecision: Decision): Promise<Snapshot | undefined> {
    const signal = this.waitScope().signal;
    let snapshot = first;
    let decision = firstDecision;
    while (!decision.granted) {
      if (decision.by === 'mode') {
        // Every blocker must go; wait on the newest (the last to be granted, if they queue) and
        // look again: one waiter wakes per release, not all.
        const newest = decision.blockers[decision.blockers.length - 1] as WaiterEntry;
        await keyDeleted(this.store, newest.key, snapshot.revision + 1n, signal);
      } else {
        // Any key ahead may free the room needed; its deletion alone decides, without a read.
        const outcome = await roomMade({
          store: this.store,
          prefix: this.plan.keys.scanPrefix,
          fromRevision: snapshot.revision + 1n,
          ahead: decision.ahead,
          ownKey: this.key,
          fits: (ahead) => decide(this.plan.ask, ahead).granted,
          onOwnKeyGone: () => this.keyGone(),
          signal,
        });
        if (outcome === 'room') return undefined;
      }
      snapshot = await this.read();
      if (!snapshot.entries.some((e) => e.key === this.key)) throw this.keyGone();
      decision = this.decide(snapshot);
    }
    return snapshot;
  }

  private async read(): Promise<Snapshot> {
    const { keys } = this.plan;
    if (!hasState(this.plan.resource)) {
      const { kvs, revision } = await this.store.range(keys.scanPrefix);
      return { revision, entries: waiterEntries(kvs), state: undefined };
    }
    const res = await this.store.txn({
      compare: [],
      success: [
        { type: 'range', prefix: keys.scanPrefix },
        { type: 'get', key: keys.stateKey },
      ],
    });
    return { revision: res.revision, entries: waiterEntries(rangeAt(res, 0)), state: getAt(res, 1) };
  }

  // --- granting -----------------------------------------------------------------------------

  /**
   * Simple, hierarchical and numeric resources: the key in line is the lock. Granted at once, the
   * joining transaction recorded the grant; after a wait, the key is written again, marked granted,
   * and that write's revision is the token. The same write inherits the creator's idle lifespan,
   * so that it outlives the creator (idle.ts).
   */
  private async finishPlain(waited: boolean): Promise<LockGrant> {
    if (!waited && this.idleLifespanMs === this.record.idleLifespanMs) {
      this.token = this.revision;
      return this.grant(undefined);
    }
    const record: WaiterRecord = { ...this.record, idleLifespanMs: this.idleLifespanMs, granted: true };
    const res = await this.store.txn({
      compare: [{ key: this.key, target: 'createRevision', op: '=', value: this.revision }],
      success: [{ type: 'put', key: this.key, value: encodeWaiter(record), lease: this.session.lease }],
    });
    if (!res.succeeded) throw this.keyGone();
    this.token = res.revision;
    return this.grant(undefined);
  }

  /** Set, sequence and timestamp resources: issue a value from the state, compare-and-swap. */
  private async issueValue(known: Snapshot | undefined): Promise<LockGrant> {
    const resource = this.plan.resource;
    if (!hasState(resource)) throw new CorralError('INTERNAL', `${resource.name} has no state`);
    const { keys } = this.plan;
    let snapshot = known ?? (await this.read());
    for (;;) {
      if (!snapshot.entries.some((e) => e.key === this.key)) throw this.keyGone();
      const stateKv = snapshot.state;
      const carriesOver = resource.kind === 'timestamp' || this.existedAtJoin || (stateKv !== undefined && stateKv.modRevision > this.revision);
      const state = carriesOver ? decodeState(resource, stateKv?.value) : freshState(resource);
      const wallNow = this.clock.wallNow();
      const issued = issue(resource, state, snapshot.entries, this.key, wallNow);
      if ('waitUntilWallMs' in issued) {
        if (this.plan.timeoutMs === 0) throw this.busy();
        await this.clock.sleep(Math.max(1, Math.ceil(issued.waitUntilWallMs - wallNow)), this.waitScope().signal);
        continue; // same snapshot: the compare below catches any grant made meanwhile
      }
      const record: WaiterRecord = { ...this.record, idleLifespanMs: this.idleLifespanMs, value: issued.value, granted: true };
      if (issued.elementIndex !== undefined) record.elementIndex = issued.elementIndex;
      const res = await this.store.txn({
        compare: [
          { key: keys.stateKey, target: 'modRevision', op: '=', value: stateKv?.modRevision ?? 0n },
          { key: this.key, target: 'createRevision', op: '=', value: this.revision },
        ],
        success: [
          { type: 'put', key: this.key, value: encodeWaiter(record), lease: this.session.lease },
          { type: 'put', key: keys.stateKey, value: encodeState(issued.state) },
        ],
        failure: [
          { type: 'range', prefix: keys.scanPrefix },
          { type: 'get', key: keys.stateKey },
        ],
      });
      if (res.succeeded) {
        this.token = res.revision;
        return this.grant(issued.value);
      }
      snapshot = { revision: res.revision, entries: waiterEntries(rangeAt(res, 0)), state: getAt(res, 1) };
    }
  }

  private grant(value: string | undefined): LockGrant {
    const { plan } = this;
    return new LockGrant({
      store: this.store,
      session: this.session,
      resource: plan.resource,
      keys: plan.keys,
      key: this.key,
      createRevision: this.revision,
      fencingToken: this.token,
      mode: plan.ask.mode,
      quantity: plan.ask.quantity,
      value,
      idleLifespanMs: this.idleLifespanMs,
      logger: this.logger,
    });
  }

  // --- errors and the deadline --------------------------------------------------------------

  private waitScope(): WaitScope {
    const { timeoutMs, resource } = this.plan;
    this.scope ??= new WaitScope(
      this.clock,
      timeoutMs < 0 ? Number.POSITIVE_INFINITY : this.startedAt + timeoutMs,
      [this.session.signal, this.plan.signal ?? this.hooks.waitSignal?.()],
      () => new CorralError('LOCK_TIMEOUT', `the lock on ${resource.name} was not obtained because the timeout (${timeoutMs} milliseconds) expired`),
    );
    return this.scope;
  }

  private busy(): CorralError {
    return new CorralError('LOCK_BUSY', `resource ${this.plan.resource.name} is already locked, the lock cannot be obtained`);
  }

  private keyGone(): CorralError {
    return new CorralError('SESSION_LOST', `lock request ${this.key} vanished: its session lease expired`);
  }
}

function rangeAt(res: TxnResult, index: number): KeyValue[] {
  const r = res.results[index];
  return r?.type === 'range' ? r.kvs : [];
}

function getAt(res: TxnResult, index: number): KeyValue | undefined {
  const r = res.results[index];
  return r?.type === 'get' ? r.kv : undefined;
}
