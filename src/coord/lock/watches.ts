// The waits of a lock request, each on the fewest keys that can end it.

import { isCorralError } from '../../api/errors.js';
import type { Revision, Store } from '../../store/store.js';
import type { WaiterEntry } from './records.js';

/**
 * Resolves true once `key` is deleted (at or after `fromRevision`), false when the store no
 * longer has the history to tell (COMPACTED: read again). Throws the signal's reason on abort.
 */
export async function keyDeleted(store: Store, key: string, fromRevision: Revision, signal: AbortSignal): Promise<boolean> {
  signal.throwIfAborted();
  // A watch is on a prefix: `key` also covers longer keys (a descendant path), hence the filter.
  const watch = store.watch(key, { fromRevision, signal });
  try {
    for await (const event of watch) {
      if (event.type === 'delete' && event.kv.key === key) return true;
    }
  } catch (err) {
    if (isCorralError(err, 'COMPACTED')) return false;
    throw err;
  } finally {
    watch.close();
  }
  signal.throwIfAborted();
  return false;
}

export type RoomOutcome = 'room' | 'compacted';

/**
 * Waits until enough keys ahead are deleted for `fits(remaining)`. The keys ahead of a request
 * only ever go away, so the deletions alone decide: no read per release. `ownKey` deleted means
 * the request's lease expired: `onOwnKeyGone()` is thrown.
 */
export async function roomMade(options: {
  store: Store;
  prefix: string;
  fromRevision: Revision;
  ahead: readonly WaiterEntry[];
  ownKey: string;
  fits: (ahead: readonly WaiterEntry[]) => boolean;
  onOwnKeyGone: () => Error;
  signal: AbortSignal;
}): Promise<RoomOutcome> {
  options.signal.throwIfAborted();
  const remaining = new Map(options.ahead.map((e) => [e.key, e]));
  const watch = options.store.watch(options.prefix, { fromRevision: options.fromRevision, signal: options.signal });
  try {
    for await (const event of watch) {
      if (event.type !== 'delete') continue;
      if (event.kv.key === options.ownKey) throw options.onOwnKeyGone();
      if (remaining.delete(event.kv.key) && options.fits([...remaining.values()])) return 'room';
    }
  } catch (err) {
    if (isCorralError(err, 'COMPACTED')) return 'compacted';
    throw err;
  } finally {
    watch.close();
  }
  options.signal.throwIfAborted();
  return 'compacted';
}

/** Resolves once any key is put under one of `prefixes` (at or after `fromRevision`). */
export async function anyPut(store: Store, prefixes: readonly string[], fromRevision: Revision, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted(); // an abort listener added now would never fire
  const stop = new AbortController();
  const onAbort = (): void => stop.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  const watches = prefixes.map((prefix) => store.watch(prefix, { fromRevision, signal: stop.signal }));
  try {
    await Promise.race(
      watches.map(async (watch) => {
        for await (const event of watch) if (event.type === 'put') return;
        // Ended without a put: aborted, or the other watch won and stopped it.
        stop.signal.throwIfAborted();
      }),
    );
  } catch (err) {
    // COMPACTED: the caller reads again, which is all a put would have made it do.
    if (!isCorralError(err, 'COMPACTED')) throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
    stop.abort();
    for (const watch of watches) watch.close();
  }
  signal.throwIfAborted();
}
