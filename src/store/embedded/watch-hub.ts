// Watches over a bounded, shared history of events.
//
// Every event goes into one history (bounded by `historyLimit`) in revision order; a watch is
// a cursor into it, so a slow consumer holds no queue of its own and costs O(1) memory however far
// behind it is. A watch that falls so far behind that its next event has been dropped from the
// history ends with COMPACTED; the caller resumes by reading again (range) and watching from the
// read's revision + 1. Events become visible only when released, i.e. once their journal record is
// durable, so a watcher never sees a write that a crash could still undo.

import { CorralError } from '../../api/errors.js';
import type { Revision, Watch, WatchEvent } from '../store.js';

// Compact the backing array once this many evicted slots accumulate at its front.
const COMPACT_AFTER = 4096;

export interface WatchHubStats {
  watchers: number;
  historyEvents: number;
  /** The oldest revision a watch may start from. */
  oldestRevision: Revision;
}

export class WatchHub {
  private events: (WatchEvent | undefined)[] = [];
  private head = 0;
  /** Absolute position (count of events ever appended) of events[head]. */
  private base = 0;
  private floor: Revision;
  private released: Revision;
  private readonly watchers = new Set<HubWatch>();
  private failure: CorralError | undefined;

  /** `oldestRevision`: the first revision whose events will be appended (all earlier ones are gone). */
  constructor(
    private readonly limit: number,
    oldestRevision: Revision,
  ) {
    this.floor = oldestRevision;
    this.released = oldestRevision - 1n;
  }

  stats(): WatchHubStats {
    return { watchers: this.watchers.size, historyEvents: this.events.length - this.head, oldestRevision: this.floor };
  }

  /** Adds events in revision order; they stay invisible until release() covers their revision. */
  append(events: readonly WatchEvent[]): void {
    for (const ev of events) this.events.push(ev);
    if (this.events.length - this.head > this.limit) this.evict();
  }

  /** Makes every event up to `revision` deliverable (its record is durable). */
  release(revision: Revision): void {
    if (revision <= this.released) return;
    this.released = revision;
    for (const w of this.watchers) w.notify();
  }

  /** Ends every watch with `err` once it has drained the events already released. */
  fail(err: CorralError): void {
    this.failure ??= err;
    for (const w of this.watchers) w.fail(this.failure);
  }

  /** fromRevision undefined or <= 0 means "after the current revision". */
  /** `refusal`: an error the watch throws at once (the store is not serving). */
  open(prefix: string, fromRevision: Revision | undefined, currentRevision: Revision, signal?: AbortSignal, refusal?: CorralError): Watch {
    const from = fromRevision === undefined || fromRevision <= 0n ? currentRevision + 1n : fromRevision;
    const w = new HubWatch(this, prefix, from, signal);
    const failure = refusal ?? this.failure;
    if (failure !== undefined) w.fail(failure, true);
    else if (from < this.floor) {
      w.fail(
        new CorralError(
          'COMPACTED',
          `cannot watch ${JSON.stringify(prefix)} from revision ${from}: the oldest revision kept is ${this.floor}; ` +
            'read the keys again (range) and watch from that read’s revision + 1',
        ),
        true,
      );
    } else {
      w.pos = this.lowerBound(from);
      this.watchers.add(w);
    }
    return w;
  }

  detach(w: HubWatch): void {
    this.watchers.delete(w);
  }

  /** The next event for a watch, or undefined when it must wait; throws COMPACTED if it fell behind. */
  nextFor(w: HubWatch): WatchEvent | undefined {
    if (w.pos < this.base) {
      throw new CorralError(
        'COMPACTED',
        `watch on ${JSON.stringify(w.prefix)} fell behind by more than the ${this.limit} events the store keeps ` +
          `(it had delivered up to revision ${w.lastRevision}); read the keys again (range) and watch from that read’s revision + 1`,
      );
    }
    const end = this.base + (this.events.length - this.head);
    while (w.pos < end) {
      const ev = this.events[this.head + (w.pos - this.base)] as WatchEvent;
      if (ev.revision > this.released) return undefined;
      w.pos++;
      if (ev.revision >= w.from && ev.kv.key.startsWith(w.prefix)) return ev;
    }
    return undefined;
  }

  // Drops whole revisions from the front, so a kept revision is always complete.
  private evict(): void {
    while (this.events.length - this.head > this.limit) {
      const rev = (this.events[this.head] as WatchEvent).revision;
      while (this.head < this.events.length && (this.events[this.head] as WatchEvent).revision === rev) {
        this.events[this.head] = undefined;
        this.head++;
        this.base++;
      }
      this.floor = rev + 1n;
    }
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.events.length) {
      this.events = this.events.slice(this.head);
      this.head = 0;
    }
  }

  // Absolute position of the first kept event at or after `rev`.
  private lowerBound(rev: Revision): number {
    let lo = this.head;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.events[mid] as WatchEvent).revision < rev) lo = mid + 1;
      else hi = mid;
    }
    return this.base + (lo - this.head);
  }
}

class HubWatch implements Watch {
  /** Absolute history position of the next event to examine. */
  pos = 0;
  lastRevision: Revision = 0n;
  private closed = false;
  private error: CorralError | undefined;
  /** An error to throw before anything else (the watch could not start). */
  private startError: CorralError | undefined;
  private wake: (() => void) | undefined;
  private iterator: AsyncGenerator<WatchEvent, void, undefined> | undefined;

  constructor(
    private readonly hub: WatchHub,
    readonly prefix: string,
    readonly from: Revision,
    private readonly signal: AbortSignal | undefined,
  ) {
    if (signal?.aborted) this.closed = true;
    else signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return (this.iterator ??= this.iterate());
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    this.hub.detach(this);
    this.notify();
  }

  notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  fail(err: CorralError, beforeStart = false): void {
    if (beforeStart) this.startError = err;
    else this.error ??= err;
    this.notify();
  }

  private readonly onAbort = (): void => this.close();

  private async *iterate(): AsyncGenerator<WatchEvent, void, undefined> {
    try {
      if (this.startError !== undefined && !this.closed) throw this.startError;
      while (!this.closed) {
        const ev = this.hub.nextFor(this);
        if (ev !== undefined) {
          this.lastRevision = ev.revision;
          yield ev;
          continue;
        }
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
