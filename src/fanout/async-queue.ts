// A queue between a producer of events (a child's pipes, several nodes' streams) and one async
// consumer. push() returns false once `highWater` items wait, so the producer can pause until
// drained(); end() and fail() finish the iteration after the queued items.

export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((step: IteratorResult<T>) => void) | undefined;
  private failWaiting: ((err: unknown) => void) | undefined;
  private done = false;
  private error: unknown;
  private closed = false;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly highWater = 256) {}

  get length(): number {
    return this.items.length;
  }

  /** Queues an item; false means the consumer is behind (pause, then await drained()). */
  push(item: T): boolean {
    if (this.done || this.closed) return true;
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = undefined;
      this.failWaiting = undefined;
      resolve({ value: item, done: false });
      return true;
    }
    this.items.push(item);
    return this.items.length < this.highWater;
  }

  /** Resolves when the queue has room again (or the consumer left). */
  drained(): Promise<void> {
    if (this.items.length < this.highWater / 2 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  end(): void {
    if (this.done) return;
    this.done = true;
    this.wake();
  }

  fail(err: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = err;
    this.wake();
  }

  /** True once the consumer stopped iterating early. */
  get abandoned(): boolean {
    return this.closed;
  }

  private wake(): void {
    if (!this.waiting || this.items.length > 0) return;
    const resolve = this.waiting;
    const reject = this.failWaiting;
    this.waiting = undefined;
    this.failWaiting = undefined;
    if (this.error !== undefined) reject?.(this.error);
    else resolve({ value: undefined, done: true });
  }

  private releaseDrain(): void {
    if (this.items.length >= this.highWater / 2 && !this.closed) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: (): Promise<IteratorResult<T>> => {
        if (this.items.length > 0) {
          const value = this.items.shift() as T;
          this.releaseDrain();
          return Promise.resolve({ value, done: false });
        }
        if (this.done) {
          if (this.error !== undefined) {
            const err = this.error;
            this.error = undefined;
            return Promise.reject(err instanceof Error ? err : new Error('the producer failed'));
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.waiting = resolve;
          this.failWaiting = reject;
        });
      },
      return: (): Promise<IteratorResult<T>> => {
        this.closed = true;
        this.items.length = 0;
        this.releaseDrain();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** A buffer as an async stream of 64 KiB chunks. */
export async function* chunksOf(buffer: Buffer): AsyncGenerator<Buffer> {
  for (let i = 0; i < buffer.length; i += 64 * 1024) {
    yield buffer.subarray(i, i + 64 * 1024);
    await Promise.resolve();
  }
}
