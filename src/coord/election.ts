// Leader election through the store (etcd's concurrency.Election). A campaign is a key under the
// election's prefix attached to the candidate's session; candidates are ordered by the key's
// create revision and the lowest one leads. The leader's key revision is its term: it strictly
// increases from one leader to the next, so it doubles as a fencing token.

import { CorralError } from '../api/errors.js';
import type { KeyValue, Revision, Store } from '../store/store.js';
import type { Session } from './session.js';

export interface Leader {
  /** The value the leader campaigned with (a node name). */
  value: string;
  /** The create revision of the leader's key. */
  term: Revision;
  key: string;
}

function byCreateRevision(a: KeyValue, b: KeyValue): number {
  return a.createRevision < b.createRevision ? -1 : a.createRevision > b.createRevision ? 1 : 0;
}

/** The leader among an election's campaign keys: the one created first. */
export function leaderOf(kvs: readonly KeyValue[]): Leader | undefined {
  const first = [...kvs].sort(byCreateRevision)[0];
  return first ? { value: first.value, term: first.createRevision, key: first.key } : undefined;
}

/** The current leader of the election under `prefix`, if any. */
export async function currentLeader(store: Store, prefix: string): Promise<Leader | undefined> {
  return leaderOf((await store.range(prefix)).kvs);
}

/**
 * Waits until every key under `prefix` created before `revision` is deleted. Watches only the
 * newest of them (its predecessor), so a release wakes one waiter rather than all (no herd).
 */
export async function waitForPredecessors(store: Store, prefix: string, revision: Revision, signal: AbortSignal): Promise<void> {
  for (;;) {
    signal.throwIfAborted();
    const { kvs, revision: readAt } = await store.range(prefix);
    const earlier = kvs.filter((kv) => kv.createRevision < revision).sort(byCreateRevision);
    const predecessor = earlier[earlier.length - 1];
    if (!predecessor) return;
    const watch = store.watch(predecessor.key, { fromRevision: readAt + 1n, signal });
    try {
      for await (const event of watch) {
        if (event.type === 'delete' && event.kv.key === predecessor.key) break;
      }
    } finally {
      watch.close();
    }
  }
}

export class Election {
  private key: string | undefined;
  private termValue: Revision | undefined;

  constructor(
    private readonly store: Store,
    readonly prefix: string,
    private readonly session: Session,
  ) {}

  get term(): Revision | undefined {
    return this.termValue;
  }

  /**
   * Campaigns with `value` and resolves once this candidate leads. Rejects with SESSION_LOST when
   * the session ends first, or with the signal's reason when aborted.
   */
  async campaign(value: string, signal?: AbortSignal): Promise<Leader> {
    const stop = signal ? AbortSignal.any([signal, this.session.signal]) : this.session.signal;
    const key = `${this.prefix}${this.session.lease.toString(16)}`;
    this.key = key;
    // Create the key once; if a previous campaign of this session left it, keep its revision.
    const res = await this.store.txn({
      compare: [{ key, target: 'createRevision', op: '=', value: 0n }],
      success: [{ type: 'put', key, value, lease: this.session.lease }],
      failure: [{ type: 'get', key }],
    });
    let createRevision: Revision;
    if (res.succeeded) createRevision = res.revision;
    else {
      const got = res.results[0];
      if (got?.type !== 'get' || !got.kv) throw new CorralError('INTERNAL', `campaign key ${key} vanished`);
      createRevision = got.kv.createRevision;
      if (got.kv.value !== value) await this.store.put(key, value, { lease: this.session.lease });
    }
    try {
      await waitForPredecessors(this.store, this.prefix, createRevision, stop);
    } catch (err) {
      if (this.session.signal.aborted) throw this.session.signal.reason as Error;
      // Aborted by the caller: withdraw the candidacy (best effort; the key dies with the session
      // anyway). A store failure keeps the key, so a retry keeps its place in line.
      if (signal?.aborted) await this.resign().catch(() => undefined);
      throw err;
    }
    // The key may have vanished with the lease while we waited (a lost session).
    const { kv } = await this.store.get(key);
    if (!kv || kv.createRevision !== createRevision) {
      throw new CorralError('SESSION_LOST', `campaign key ${key} is gone: the session lease expired`);
    }
    this.termValue = createRevision;
    return { value, term: createRevision, key };
  }

  /** Gives up leadership (or the candidacy): deletes the campaign key. */
  async resign(): Promise<void> {
    const key = this.key;
    this.key = undefined;
    this.termValue = undefined;
    if (key) await this.store.delete(key);
  }
}
