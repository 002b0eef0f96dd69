// The agent's lock service in this process, on a real embedded store behind a fault switch: its
// events, its one session and what happens when that session or the store fails.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CorralError, isCorralError } from '../api/errors.js';
import type { LockEvent } from '../api/lock-wire.js';
import { acquire, listLocks } from '../coord/lock/index.js';
import { Session } from '../coord/session.js';
import { openEmbeddedStore, type EmbeddedStore } from '../store/embedded/index.js';
import type { Store } from '../store/store.js';
import { faultyStore } from '../testkit/faulty-store.js';
import { waitUntil } from '../testkit/local.js';
import { systemClock } from '../util/clock.js';
import { nullLogger } from '../util/log.js';
import { checkAttach, GATE_SECRET_ENV, ownerMayAttach, sameGroupRuns } from '../util/process-group.js';
import { isProcessAlive } from '../util/process.js';
import { LockService } from './lock-service.js';

const local = { kind: 'local' } as const;

/** Reads a ticket's events as they come. */
function reader(events: AsyncIterable<LockEvent>): { next(): Promise<LockEvent | 'end'> } {
  const it = events[Symbol.asyncIterator]();
  return {
    async next() {
      const step = await it.next();
      return step.done ? 'end' : step.value;
    },
  };
}

/** A long-running `sleep`, the leader of a group of its own when `detached`, with `env` only. */
function sleeper(opts: { detached: boolean; env?: NodeJS.ProcessEnv }): ChildProcess {
  const child = spawn('sleep', ['60'], { detached: opts.detached, stdio: 'ignore', env: opts.env ?? {} });
  children.add(child);
  return child;
}
const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) if (c.pid !== undefined && isProcessAlive(c.pid)) c.kill('SIGKILL');
});

const secret = (): string => randomBytes(16).toString('hex');

describe('the lock service', () => {
  let dir: string;
  let store: EmbeddedStore;
  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'cl-svc-'));
    store = await openEmbeddedStore({ dataDir: dir });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const service = (s = store as import('../store/store.js').Store): LockService =>
    new LockService({ store: s, node: 'n1', ttlSeconds: 1, keepaliveIntervalMs: 150, clock: systemClock, logger: nullLogger });

  it('streams granted, then released on release; one session serves every request', async () => {
    const svc = service();
    const client = new AbortController();
    const a = reader(svc.acquire({ resource: 'svc1', pid: 7, command: 'make' }, local, client.signal));
    const granted = await a.next();
    assert.ok(granted !== 'end' && granted.event === 'granted');
    assert.equal(granted.resource, 'svc1');
    assert.ok(granted.validForMs > 0 && granted.stopWithinMs > 0 && granted.confirmEveryMs > 0);
    const b = reader(svc.acquire({ resource: 'svc1' }, local, new AbortController().signal));
    const queued = await b.next();
    assert.ok(queued !== 'end' && queued.event === 'queued');
    const listed = await svc.list();
    assert.deepEqual(listed.resources[0]?.holders.map((h) => [h.pid, h.command, h.fencingToken]), [[7, 'make', granted.fencingToken]]);
    const leases = new Set((await listLocks(store)).resources.flatMap((r) => [...r.holders, ...r.waiters]).map((e) => e.lease));
    assert.equal(leases.size, 1, 'one lock session for every request');
    await svc.release(granted.id, false, local);
    const second = await b.next();
    assert.ok(second !== 'end' && second.event === 'granted');
    assert.ok(BigInt(second.fencingToken) > BigInt(granted.fencingToken));
    assert.deepEqual(await a.next(), { event: 'released', id: granted.id });
    assert.equal(await a.next(), 'end');
    assert.throws(() => svc.confirm(granted.id, local), (err) => isCorralError(err, 'NOT_FOUND'));
    assert.ok(svc.confirm(second.id, local).validForMs > 0);
    await assert.rejects(svc.release(second.id, false, { kind: 'tls', commonName: 'n2', role: 'node', clusterName: 'c' }), (err) => isCorralError(err, 'NOT_FOUND'), 'another peer cannot release it');
    await svc.close();
  });

  it('a client that goes away releases (rolling _S_ back); a waiter that goes away leaves the line', async () => {
    const svc = service();
    const gone = new AbortController();
    const a = reader(svc.acquire({ resource: '_S_svc[1]', idleLifespanMs: 2000 }, local, gone.signal));
    const granted = await a.next();
    assert.ok(granted !== 'end' && granted.event === 'granted');
    assert.equal(granted.value, '1');
    gone.abort();
    await waitUntil('released', async () => ((await listLocks(store)).resources.find((r) => r.name === '_S_svc[1]')?.holders.length === 0 ? true : undefined), 5000);
    const again = reader(svc.acquire({ resource: '_S_svc[1]' }, local, new AbortController().signal));
    const next = await again.next();
    assert.ok(next !== 'end' && next.event === 'granted');
    assert.equal(next.value, '1', 'the value of the client that went away was rolled back');
    const waiterGone = new AbortController();
    const w = reader(svc.acquire({ resource: '_S_svc[1]' }, local, waiterGone.signal));
    assert.equal(((await w.next()) as { event: string }).event, 'queued');
    waiterGone.abort();
    await waitUntil('the waiter gone', async () => ((await listLocks(store)).resources.find((r) => r.name === '_S_svc[1]')?.waiters.length === 0 ? true : undefined), 5000);
    assert.equal(svc.active, 1);
    await svc.close();
  });

  it('a lost session: holders get "lost"; waiters are retried on a new session and granted', async () => {
    const { store: faulty, fail } = faultyStore(store);
    const svc = service(faulty);
    const h = reader(svc.acquire({ resource: 'svc3' }, local, new AbortController().signal));
    const held = await h.next();
    assert.ok(held !== 'end' && held.event === 'granted');
    const w = reader(svc.acquire({ resource: 'svc3' }, local, new AbortController().signal));
    assert.equal(((await w.next()) as { event: string }).event, 'queued');
    fail.add('keepAlive');
    const lost = await h.next();
    assert.ok(lost !== 'end' && lost.event === 'lost', JSON.stringify(lost));
    assert.equal(lost.code, 'SESSION_LOST');
    fail.delete('keepAlive');
    // The lost session's keys expire with its lease; the waiter, moved to a new session, gets in.
    const granted = await w.next();
    assert.ok(granted !== 'end' && granted.event === 'granted', JSON.stringify(granted));
    assert.ok(BigInt(granted.fencingToken) > BigInt(held.fencingToken));
    await svc.close();
  });

  it('a release the store fails is retried in the background until the key is gone', async () => {
    const { store: faulty, fail } = faultyStore(store);
    const svc = service(faulty);
    const h = reader(svc.acquire({ resource: 'svc4' }, local, new AbortController().signal));
    const held = await h.next();
    assert.ok(held !== 'end' && held.event === 'granted');
    fail.add('write');
    await assert.rejects(svc.release(held.id, false, local), (err) => isCorralError(err, 'STORE_UNAVAILABLE'));
    assert.equal((await listLocks(store)).resources.find((r) => r.name === 'svc4')?.holders.length, 1);
    fail.delete('write');
    await waitUntil('the key released', async () => ((await listLocks(store)).resources.some((r) => r.name === 'svc4') ? undefined : true), 5000);
    await svc.close();
  });

  it('closing the service reports held locks lost and keeps their keys (they expire with the session)', async () => {
    const svc = service();
    const h = reader(svc.acquire({ resource: 'svc5' }, local, new AbortController().signal));
    const held = await h.next();
    assert.ok(held !== 'end' && held.event === 'granted');
    await svc.close();
    const lost = await h.next();
    assert.ok(lost !== 'end' && lost.event === 'lost');
    assert.equal(lost.code, 'SHUTTING_DOWN');
    assert.equal((await listLocks(store)).resources.find((r) => r.name === 'svc5')?.holders.length, 1, 'the key outlives the service');
    assert.throws(() => svc.acquire({ resource: 'svc5' }, local, new AbortController().signal), (err) => isCorralError(err, 'SHUTTING_DOWN'));
  });

  it('attaches a process group only when its leader carries the request’s secret; refuses every other with a clear error', async () => {
    const svc = service();
    const attachError = async (attach: unknown): Promise<string> => {
      try {
        for await (const e of svc.acquire({ resource: 'att1', attach, guard: false }, local, new AbortController().signal)) return `unexpected ${e.event}`;
        return 'ended';
      } catch (err) {
        return `${(err as CorralError).code}: ${(err as Error).message}`;
      }
    };
    const key = secret();
    // A pid that does not exist (pid_max is at most 2^22).
    assert.match(await attachError({ pgid: 4_194_304 + 17, secret: key }), /^FORBIDDEN: cannot attach process group \d+: process group \d+ does not exist/);
    // A process that does not lead its group: a child of this test, in the test's group.
    const member = sleeper({ detached: false, env: { [GATE_SECRET_ENV]: key } });
    assert.match(await attachError({ pgid: member.pid, secret: key }), /does not lead a process group \(it is in group \d+\): attach a group leader/);
    // A group leader started without the secret (anybody's process, as far as the agent can tell).
    const stranger = sleeper({ detached: true });
    assert.match(await attachError({ pgid: stranger.pid, secret: key }), /was not started for this request: its leader's environment does not carry the request's CORRAL_LOCK_GATE secret/);
    const other = sleeper({ detached: true, env: { [GATE_SECRET_ENV]: secret() } });
    assert.match(await attachError({ pgid: other.pid, secret: key }), /was not started for this request/);
    assert.match(await attachError({ pgid: 1, secret: key }), /1 is not a process group id/);
    assert.match(await attachError({ pgid: stranger.pid, secret: 'not hex' }), /secret must be 32 to 128 lowercase hexadecimal digits/);
    assert.match(await attachError({ pgid: 'x' }), /^BAD_REQUEST: attach must be/);
    // From another machine (a TLS peer): never attached; refused, or the guard when asked for.
    const gate = sleeper({ detached: true, env: { [GATE_SECRET_ENV]: key } });
    const remote = { kind: 'tls', commonName: 'admin', role: 'admin', clusterName: 'c' } as const;
    await assert.rejects(async () => {
      for await (const e of svc.acquire({ resource: 'att1', attach: { pgid: gate.pid, secret: key } }, remote, new AbortController().signal)) void e;
    }, /a client on another machine cannot attach its process group/);
    const r = reader(svc.acquire({ resource: 'att1', attach: { pgid: gate.pid, secret: key }, guard: true }, remote, new AbortController().signal));
    const guarded = await r.next();
    assert.ok(guarded !== 'end' && guarded.event === 'granted');
    assert.equal(guarded.attached, false);
    assert.equal(guarded.guardedForMs, svc.pacing().stopWithinMs);
    assert.match(guarded.attachRefused ?? '', /another machine/);
    await svc.release(guarded.id, false, remote);
    // The genuine one: its leader carries the secret.
    const a = reader(svc.acquire({ resource: 'att1', attach: { pgid: gate.pid, secret: key } }, local, new AbortController().signal));
    const granted = await a.next();
    assert.ok(granted !== 'end' && granted.event === 'granted');
    assert.equal(granted.attached, true);
    const recorded = (await store.range('/corral/locks/r/att1/')).kvs.map((kv) => (JSON.parse(kv.value) as { group?: { pgid: number; node: string } }).group);
    assert.deepEqual(recorded.map((g) => [g?.pgid, g?.node]), [[gate.pid, 'n1']], 'the group is recorded with the lock');
    await svc.release(granted.id, false, local);
    await svc.close();
  });

  it('the owner rule: a daemon keeps and signals only its own user’s groups, root anyone’s', () => {
    assert.equal(ownerMayAttach(1000, 1000), true);
    assert.equal(ownerMayAttach(1000, 1001), false);
    assert.equal(ownerMayAttach(1000, 0), false);
    assert.equal(ownerMayAttach(0, 1001), true);
    // A daemon of another uid than the group's owner refuses it, saying so (this test runs as root:
    // pretend the daemon is uid 4242; the check falls back to the guard for such a client).
    const key = secret();
    const gate = sleeper({ detached: true, env: { [GATE_SECRET_ENV]: key } });
    const check = checkAttach(gate.pid as number, key, 4242);
    assert.ok(!check.ok && check.otherUser, JSON.stringify(check));
    assert.match(check.reason, /belongs to uid \d+, and this lock daemon runs as uid 4242: it keeps and signals only its own user's commands/);
    const ok = checkAttach(gate.pid as number, key, process.getuid?.() ?? 0);
    assert.ok(ok.ok);
    assert.equal(sameGroupRuns(ok.identity), true);
    assert.equal(sameGroupRuns({ ...ok.identity, start: ok.identity.start + 1 }), false, 'a reused pid is another group');
    assert.equal(sameGroupRuns({ ...ok.identity, boot: 'another-boot' }), false);
  });

  it('a client gone: an attached group keeps the lock while it runs; a guarded one keeps it stopWithinMs; neither releases at once', async () => {
    const svc = service();
    const key = secret();
    const gate = sleeper({ detached: true, env: { [GATE_SECRET_ENV]: key } });
    const attachedGone = new AbortController();
    const a = reader(svc.acquire({ resource: 'gone1', attach: { pgid: gate.pid, secret: key }, guard: true }, local, attachedGone.signal));
    assert.equal(((await a.next()) as { attached?: boolean }).attached, true);
    const guardedGone = new AbortController();
    const g = reader(svc.acquire({ resource: 'gone2', guard: true }, local, guardedGone.signal));
    const guarded = await g.next();
    assert.ok(guarded !== 'end' && guarded.event === 'granted' && guarded.attached === false);
    const plainGone = new AbortController();
    const p = reader(svc.acquire({ resource: 'gone3' }, local, plainGone.signal));
    assert.equal(((await p.next()) as { event: string }).event, 'granted');
    const t0 = performance.now();
    attachedGone.abort();
    guardedGone.abort();
    plainGone.abort();
    const holders = async (name: string): Promise<number> => (await listLocks(store)).resources.find((r) => r.name === name)?.holders.length ?? 0;
    await waitUntil('gone3 released at once', async () => ((await holders('gone3')) === 0 ? true : undefined), 2000);
    const listed = await svc.list();
    assert.equal(listed.resources.find((r) => r.name === 'gone1')?.holders[0]?.orphaned, true);
    assert.equal(listed.resources.find((r) => r.name === 'gone2')?.holders[0]?.orphaned, true);
    await waitUntil('gone2 released after the guard', async () => ((await holders('gone2')) === 0 ? true : undefined), 5000);
    const guardedFor = performance.now() - t0;
    assert.ok(guardedFor >= (guarded.guardedForMs ?? 0) - 20, `guarded lock released after ${guardedFor} ms`);
    assert.equal(await holders('gone1'), 1, 'the attached group still runs: its lock is kept');
    gate.kill('SIGKILL');
    await waitUntil('gone1 released once its group ended', async () => ((await holders('gone1')) === 0 ? true : undefined), 5000);
    await svc.close();
  });

  it('after a crash, a restarted service takes back the locks kept for groups that still run, and keeps them past the TTL', async () => {
    // The dead incarnation: a lock on svc8 recorded for a live group, and one on svc9 for a group
    // that has ended, both on a session that stops being renewed (as a crash leaves them).
    const key = secret();
    const gate = sleeper({ detached: true, env: { [GATE_SECRET_ENV]: key } });
    const check = checkAttach(gate.pid as number, key);
    assert.ok(check.ok);
    const ended = sleeper({ detached: true, env: { [GATE_SECRET_ENV]: key } });
    const endedCheck = checkAttach(ended.pid as number, key);
    assert.ok(endedCheck.ok);
    const dead = await Session.open(store, { ttlSeconds: 1, keepaliveIntervalMs: 200 });
    await acquire(store, dead, { resource: 'svc8', group: { node: 'n1', ...check.identity } });
    await acquire(store, dead, { resource: 'svc9', group: { node: 'n1', ...endedCheck.identity } });
    await acquire(store, dead, { resource: 'svc10' }); // no group: expires with the lease
    await dead.close({ revoke: false });
    ended.kill('SIGKILL');
    await waitUntil('the ended group gone', () => Promise.resolve(sameGroupRuns(endedCheck.identity) ? undefined : true), 5000);
    const svc = service();
    assert.equal(await svc.recover(), 1);
    const holders = async (name: string): Promise<number> => (await listLocks(store)).resources.find((r) => r.name === name)?.holders.length ?? 0;
    await waitUntil('svc9 released (its group ended)', async () => ((await holders('svc9')) === 0 ? true : undefined), 5000);
    assert.equal((await svc.list()).resources.find((r) => r.name === 'svc8')?.holders[0]?.orphaned, true);
    await new Promise((resolve) => setTimeout(resolve, 2500)); // more than twice the TTL
    assert.equal(await holders('svc8'), 1, 'kept past the TTL while its group runs');
    assert.equal(await holders('svc10'), 0, 'the lease’s other keys are gone one TTL after the restart');
    const busy = reader(svc.acquire({ resource: 'svc8', timeoutMs: 0 }, local, new AbortController().signal));
    await assert.rejects(busy.next(), (err) => isCorralError(err, 'LOCK_BUSY'));
    gate.kill('SIGKILL');
    await waitUntil('svc8 released once its group ended', async () => ((await holders('svc8')) === 0 ? true : undefined), 5000);
    await waitUntil('no ticket left', () => Promise.resolve(svc.active === 0 ? true : undefined), 2000);
    await svc.close();
  });

  it('closing while a grant is in flight: the grant is never handed out and no key outlives the close', async () => {
    // svc6's joining transaction is held back until 300 ms after close() began; then the store
    // grants it. Meanwhile close() has work to wait for (a release of svc7 that the store keeps
    // failing, retried in the background): deciding about the session before svc6 settles would
    // hand its grant out, and then revoke the key under it.
    let releaseTxn = (): void => undefined;
    const txnGate = new Promise<void>((resolve) => (releaseTxn = resolve));
    let entered = (): void => undefined;
    const txnEntered = new Promise<void>((resolve) => (entered = resolve));
    let failDeletes = false;
    const gated: Store = {
      get: (k) => store.get(k),
      range: (p, o) => store.range(p, o),
      put: (k, v, o) => store.put(k, v, o),
      delete: async (k, o) => {
        if (failDeletes && k.includes('/svc7/')) throw new CorralError('STORE_UNAVAILABLE', 'injected fault: delete fails');
        return await store.delete(k, o);
      },
      txn: async (t) => {
        if (!t.success.some((op) => op.type === 'put' && op.key.includes('/svc6/'))) return await store.txn(t);
        entered();
        await txnGate;
        return await store.txn(t);
      },
      grantLease: (ttl) => store.grantLease(ttl),
      keepAlive: (id) => store.keepAlive(id),
      revokeLease: (id) => store.revokeLease(id),
      leaseStatus: (id) => store.leaseStatus(id),
      watch: (p, o) => store.watch(p, o),
      revision: () => store.revision(),
      close: () => Promise.resolve(),
    };
    const svc = service(gated);
    const other = reader(svc.acquire({ resource: 'svc7' }, local, new AbortController().signal));
    const otherGrant = await other.next();
    assert.ok(otherGrant !== 'end' && otherGrant.event === 'granted');
    failDeletes = true;
    await assert.rejects(svc.release(otherGrant.id, false, local), (err) => isCorralError(err, 'STORE_UNAVAILABLE'));
    const events: LockEvent[] = [];
    let failure: unknown;
    const drained = (async () => {
      try {
        for await (const e of svc.acquire({ resource: 'svc6' }, local, new AbortController().signal)) events.push(e);
      } catch (err) {
        failure = err;
      }
    })();
    await txnEntered;
    const closing = svc.close();
    const timer = setTimeout(releaseTxn, 300);
    await closing;
    clearTimeout(timer);
    releaseTxn();
    // Bounded: a stream left open by a grant handed out must fail the assertions, not hang.
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise((resolve) => (bound = setTimeout(resolve, 5000)))]);
    clearTimeout(bound);
    assert.deepEqual(events.filter((e) => e.event === 'granted'), [], 'no grant handed out after close began');
    assert.ok(isCorralError(failure, 'SHUTTING_DOWN'), `the request ends with SHUTTING_DOWN, not ${String(failure)}`);
    await waitUntil('svc6 gone from the store', async () => ((await listLocks(store)).resources.some((r) => r.name === 'svc6') ? undefined : true), 5000);
    assert.equal(svc.active, 0, 'no ticket outlives the close');
    failDeletes = false;
    await store.delete('/corral/locks/r/svc7/', { prefix: true });
  });
});
