// Fan-out of supervisor events: synchronous listeners (the status file, logging) and async
// iterators for consumers that read at their own pace. A slow iterator cannot hold the
// supervisor back: past `limit` queued events it loses the oldest and is told how many.

export interface EventStream<T> extends AsyncIterable<T> {
  /** Ends the iteration; queued events are dropped. */
  close(): void;
}

export interface Dropped {
  kind: 'dropped';
  count: number;
}

export class EventHub<T> {
  private readonly listeners = new Set<(event: T) => void>();
  private readonly enders = new Set<() => void>();
  private closed = false;

  subscribe(listener: (event: T) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: T): void {
    for (const listener of [...this.listeners]) listener(event);
  }

  /** Ends every iterator once it has yielded what it queued. */
  close(): void {
    this.closed = true;
    for (const end of [...this.enders]) end();
  }

  stream(limit = 10_000): EventStream<T | Dropped> {
    const queue: (T | Dropped)[] = [];
    let wake: (() => void) | undefined;
    let ended = this.closed;
    let dropped = 0;
    const end = (): void => {
      ended = true;
      wake?.();
    };
    this.enders.add(end);
    const unsubscribe = this.subscribe((event) => {
      if (queue.length >= limit) {
        queue.shift();
        dropped++;
      }
      queue.push(event);
      wake?.();
    });
    const detach = (): void => {
      unsubscribe();
      this.enders.delete(end);
    };
    async function* iterate(): AsyncGenerator<T | Dropped> {
      try {
        while (true) {
          if (dropped > 0) {
            const count = dropped;
            dropped = 0;
            yield { kind: 'dropped', count };
          }
          const next = queue.shift();
          if (next !== undefined) {
            yield next;
            continue;
          }
          if (ended) return;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        detach();
      }
    }
    const it = iterate();
    return {
      [Symbol.asyncIterator]: () => it,
      close: () => {
        queue.length = 0;
        detach();
        end();
      },
    };
  }
}
