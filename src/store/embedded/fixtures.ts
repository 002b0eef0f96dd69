// Helpers for the embedded store's tests: a clock the test drives, temp data directories and a
// store that is always closed. (Named so the test runner does not take it for a test file.)

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock, Timer } from '../../util/clock.js';
import { memoryLogger } from '../../util/log.js';
import { openEmbeddedStore, type EmbeddedStore, type EmbeddedStoreOptions } from './embedded-store.js';

/** A monotonic clock that moves only when the test advances it; timers fire in deadline order. */
export class ManualClock implements Clock {
  private t = 1_000;
  private nextId = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }

  wallNow(): number {
    return 1_700_000_000_000 + this.t;
  }

  setTimer(ms: number, fn: () => void): Timer {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return { cancel: () => this.timers.delete(id) };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = this.setTimer(ms, resolve);
      signal?.addEventListener('abort', () => {
        timer.cancel();
        reject(new Error('aborted'));
      });
    });
  }

  /** Moves time forward, firing each due timer at its own deadline. */
  advance(ms: number): void {
    const target = this.t + ms;
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) if (entry[1].at <= target && (due === undefined || entry[1].at < due[1].at)) due = entry;
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = target;
  }
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-store-test-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Opens a store, runs `fn`, and closes the store whatever happens. */
export async function withStore<T>(options: EmbeddedStoreOptions, fn: (store: EmbeddedStore) => Promise<T>): Promise<T> {
  const store = await openEmbeddedStore(options);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export { memoryLogger };
