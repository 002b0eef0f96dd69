// Test fixtures for the lock recipe: a real embedded store in a temp dir, sessions on it, and
// helpers to tell whether a request is still waiting. Used by the *.test.ts files only.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openEmbeddedStore, type EmbeddedStore } from '../../store/embedded/index.js';
import { Session } from '../session.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface LockFixture {
  store: EmbeddedStore;
  /** A session that the fixture closes at the end. */
  session(options?: { ttlSeconds?: number; keepaliveIntervalMs?: number }): Promise<Session>;
  /** A fresh resource name for one test: `prefix` + a counter (+ `suffix`). */
  name(prefix?: string, suffix?: string): string;
  close(): Promise<void>;
}

export async function openLockFixture(): Promise<LockFixture> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-lock-'));
  const store = await openEmbeddedStore({ dataDir: dir });
  const sessions: Session[] = [];
  let counter = 0;
  return {
    store,
    async session(options = {}) {
      const s = await Session.open(store, { ttlSeconds: options.ttlSeconds ?? 10, keepaliveIntervalMs: options.keepaliveIntervalMs ?? 2000 });
      sessions.push(s);
      return s;
    },
    name(prefix = 'res', suffix = '') {
      return `${prefix}${++counter}${suffix}`;
    },
    async close() {
      await Promise.all(sessions.map((s) => s.close().catch(() => undefined)));
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type Settled<T> = { state: 'pending' } | { state: 'fulfilled'; value: T } | { state: 'rejected'; error: unknown };

/** Watches a promise without letting its rejection go unhandled. */
export function track<T>(promise: Promise<T>): { promise: Promise<T>; now(): Settled<T> } {
  let settled: Settled<T> = { state: 'pending' };
  promise.then(
    (value) => {
      settled = { state: 'fulfilled', value };
    },
    (error: unknown) => {
      settled = { state: 'rejected', error };
    },
  );
  return { promise, now: () => settled };
}

/** The promise's state after `ms` milliseconds. */
export async function stateAfter<T>(promise: Promise<T>, ms: number): Promise<Settled<T>> {
  const t = track(promise);
  await sleep(ms);
  return t.now();
}
