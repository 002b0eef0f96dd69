// A granted lock: what it is, its fencing token, the session's loss signal, and its release.

import type { Store } from '../../store/store.js';
import type { Logger } from '../../util/log.js';
import { prepareIdleMarker, type IdleMarkerWrite } from './idle.js';
import type { ResourceKeys } from './keys.js';
import type { LockMode } from './modes.js';
import type { Resource, ResourceKind } from './resource.js';
import { decodeState, encodeState, settleNumber, type SequenceState } from './resource-state.js';

/** What a lock is held under: a session's lease and its loss signal (a Session fits). */
export interface LockSession {
  readonly lease: bigint;
  /** Aborted when the session is lost (or closed): its keys may be gone from then on. */
  readonly signal: AbortSignal;
}

export interface LockGrantParts {
  store: Store;
  session: LockSession;
  resource: Resource;
  keys: ResourceKeys;
  key: string;
  /** The waiter key's create revision: the key is still ours while it has this one. */
  createRevision: bigint;
  fencingToken: bigint;
  mode: LockMode;
  quantity: number;
  value: string | undefined;
  idleLifespanMs: number;
  logger: Logger;
}

export interface ReleaseOptions {
  /** The protected work failed: a transactional sequence (`_S_`) value returns for reuse. */
  rollback?: boolean;
}

export class LockGrant {
  private releasing: Promise<void> | undefined;
  private releasedValue = false;

  constructor(private readonly parts: LockGrantParts) {}

  get resource(): string {
    return this.parts.resource.name;
  }

  get kind(): ResourceKind {
    return this.parts.resource.kind;
  }

  /** The mode granted (EX for kinds that do not honour modes). */
  get mode(): LockMode {
    return this.parts.mode;
  }

  get quantity(): number {
    return this.parts.quantity;
  }

  /**
   * The revision of the write that recorded the grant: unique per grant and strictly increasing
   * in the order grants happen across the store, so a fenced service can refuse a write carrying
   * an older token than one it has seen.
   */
  get fencingToken(): bigint {
    return this.parts.fencingToken;
  }

  /** The set element, sequence number or timestamp issued; undefined for other kinds. */
  get value(): string | undefined {
    return this.parts.value;
  }

  /** The waiter key that holds the lock. */
  get key(): string {
    return this.parts.key;
  }

  /**
   * Aborted when the session is lost (or closed). The session notices before its lease can
   * expire, so whoever stops the protected work on this signal stops before anyone else can be
   * granted the lock. Its reason is a CorralError SESSION_LOST.
   */
  get lost(): AbortSignal {
    return this.parts.session.signal;
  }

  /** Resolves with the loss (SESSION_LOST) when the session is lost or closed. */
  whenLost(): Promise<Error> {
    const signal = this.parts.session.signal;
    const reason = (): Error => (signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
    if (signal.aborted) return Promise.resolve(reason());
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(reason()), { once: true }));
  }

  get released(): boolean {
    return this.releasedValue;
  }

  /**
   * Releases the lock. Idempotent: later calls return the first call's promise (or retry it if it
   * failed). `rollback` matters only to transactional sequences.
   */
  release(options: ReleaseOptions = {}): Promise<void> {
    this.releasing ??= this.releaseOnce(options.rollback === true).then(
      () => {
        this.releasedValue = true;
      },
      (err: unknown) => {
        this.releasing = undefined;
        throw err;
      },
    );
    return this.releasing;
  }

  /** Same as release() with no rollback. */
  close(): Promise<void> {
    return this.release();
  }

  private async releaseOnce(rollback: boolean): Promise<void> {
    const { store, key, keys, resource, idleLifespanMs } = this.parts;
    const transactional = resource.kind === 'sequence' && resource.transactional;
    if (idleLifespanMs <= 0 && !transactional) {
      await store.delete(key);
      return;
    }
    const marker = await prepareIdleMarker(store, keys, idleLifespanMs);
    try {
      const done = transactional
        ? await this.settleSequence(rollback, marker)
        : (
            await store.txn({
              compare: [{ key, target: 'createRevision', op: '=', value: this.parts.createRevision }],
              success: [{ type: 'delete', key }, ...(marker ? [marker.op] : [])],
            })
          ).succeeded;
      // The key was already gone (the session's lease expired): nothing to keep alive.
      if (!done && marker) await store.revokeLease(marker.lease);
    } catch (err) {
      if (marker) await store.revokeLease(marker.lease).catch(() => undefined);
      throw err;
    }
  }

  /**
   * A transactional sequence's value is committed or rolled back in the state key, in the same
   * transaction as the delete. False when the key was already gone: its holder counts as dead, and
   * the next request rolls the value back.
   */
  private async settleSequence(rollback: boolean, marker: IdleMarkerWrite | undefined): Promise<boolean> {
    const { store, key, keys, resource } = this.parts;
    if (resource.kind !== 'sequence') return false;
    let stateKv = (await store.get(keys.stateKey)).kv;
    for (let attempt = 0; ; attempt++) {
      const state = decodeState(resource, stateKv?.value) as SequenceState;
      const settled = settleNumber(state, key, rollback);
      const res = await store.txn({
        compare: [
          { key, target: 'createRevision', op: '=', value: this.parts.createRevision },
          { key: keys.stateKey, target: 'modRevision', op: '=', value: stateKv?.modRevision ?? 0n },
        ],
        success: [
          { type: 'delete', key },
          ...(settled !== state ? [{ type: 'put' as const, key: keys.stateKey, value: encodeState(settled) }] : []),
          ...(marker ? [marker.op] : []),
        ],
        failure: [{ type: 'get', key }, { type: 'get', key: keys.stateKey }],
      });
      if (res.succeeded) return true;
      const own = res.results[0];
      if (own?.type !== 'get' || own.kv?.createRevision !== this.parts.createRevision) return false;
      const fresh = res.results[1];
      stateKv = fresh?.type === 'get' ? fresh.kv : undefined;
      if (attempt > 0 && attempt % 100 === 0) this.parts.logger.warn({ key, attempt }, 'lock release still contending on the sequence state');
    }
  }
}
