// Test fixtures for the lock recipe, on both backends: a real embedded store in a temp dir, or a
// real single-member etcd (one process per test file, started in before() and stopped by pid in
// after()). Every test sees the store through its own key prefix, so no test sees another's keys.
// Sessions on it, and helpers to tell whether a request is still waiting. Used by *.test.ts only.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach } from 'node:test';
import { openEmbeddedStore } from '../../store/embedded/index.js';
import { openEtcdStore } from '../../store/etcd/index.js';
import { PrefixedStore } from '../../store/prefixed.js';
import type { Store } from '../../store/store.js';
import { startEtcd, type EtcdCluster } from '../../testkit/etcd.js';
import { Session } from '../session.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Every lock suite runs once per backend, with the same test bodies. */
export const LOCK_BACKENDS = ['embedded', 'etcd'] as const;
export type LockBackend = (typeof LOCK_BACKENDS)[number];

export interface LockFixture {
  readonly backend: LockBackend;
  /** The current test's store: the backend seen through this test's own key prefix. */
  readonly store: Store;
  /** The etcd process of this file (etcd backend only), to kill and restart its member. */
  readonly etcd: EtcdCluster | undefined;
  /** A session that the fixture closes at the end. */
  session(options?: { ttlSeconds?: number; keepaliveIntervalMs?: number }): Promise<Session>;
  /** A fresh resource name for one test: `prefix` + a counter (+ `suffix`). */
  name(prefix?: string, suffix?: string): string;
}

/**
 * Call inside a describe(): opens the backend's store in before() (for etcd, starts etcd), gives
 * each test a fresh key prefix in beforeEach(), and in after() closes every session and the store
 * and ends etcd by pid. The returned fixture is usable inside hooks and tests, not at declaration.
 */
export function useLockFixture(backend: LockBackend): LockFixture {
  let base: Store | undefined;
  let current: Store | undefined;
  let etcd: EtcdCluster | undefined;
  let dir: string | undefined;
  let tests = 0;
  let counter = 0;
  const sessions: Session[] = [];
  const opened = (): Store => {
    if (current === undefined) throw new Error('the lock fixture is used before its before() hook ran');
    return current;
  };

  before(async () => {
    if (backend === 'etcd') {
      etcd = await startEtcd({ members: 1 });
      base = await openEtcdStore({ endpoints: etcd.endpoints });
    } else {
      dir = mkdtempSync(path.join(os.tmpdir(), 'corral-lock-'));
      base = await openEmbeddedStore({ dataDir: dir });
    }
    current = new PrefixedStore(base, `/t${++tests}`);
  });
  beforeEach(() => {
    if (base) current = new PrefixedStore(base, `/t${++tests}`);
  });
  after(async () => {
    await Promise.all(sessions.map((s) => s.close().catch(() => undefined)));
    await base?.close().catch(() => undefined);
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  return {
    backend,
    get store() {
      return opened();
    },
    get etcd() {
      return etcd;
    },
    async session(options = {}) {
      const s = await Session.open(opened(), { ttlSeconds: options.ttlSeconds ?? 10, keepaliveIntervalMs: options.keepaliveIntervalMs ?? 2000 });
      sessions.push(s);
      return s;
    },
    name(prefix = 'res', suffix = '') {
      return `${prefix}${++counter}${suffix}`;
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

/**
 * For a request that must be in line before the next one is made. Two requests made one after the
 * other without waiting reach a networked store (etcd) in either order, so "first come" is only
 * defined once the first is queued. Pass it as acquire()'s options, then `await q.queued(request)`:
 * resolves once the request waits in line; fails if it was settled without waiting, or after 10 s.
 */
export function inLine(): { onQueued: () => void; queued(request: Promise<unknown>): Promise<void> } {
  let onQueued!: () => void;
  const queued = new Promise<void>((resolve) => (onQueued = resolve));
  return {
    onQueued: () => onQueued(),
    async queued(request) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          queued,
          request.then(
            () => Promise.reject(new Error('the request was granted without waiting in line')),
            (err: unknown) => Promise.reject(new Error('the request failed before waiting in line', { cause: err })),
          ),
          new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new Error('the request was not in line within 10 s')), 10_000))),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
