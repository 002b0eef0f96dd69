// The library API (acquireLock, HeldLock) against a private agent in this process, and its loss
// rule against a stub agent that stops confirming.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isCorralError } from '../api/errors.js';
import type { LockCommand, LockGrantedEvent } from '../api/lock-wire.js';
import { Agent } from '../agent/agent.js';
import { privateAgentConfig } from '../agent/private-agent.js';
import { RpcClient, type ChannelHandlers, type RpcChannel } from '../transport/client.js';
import { nullLogger } from '../util/log.js';
import { acquireLock, listLocksVia } from './locks.js';

describe('locks through an agent with the library API', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cl-lib-'));
  const socket = path.join(dir, 'a.sock');
  let agent: Agent;
  let rpc: RpcClient;
  before(async () => {
    const config = privateAgentConfig({ socket, dataDir: path.join(dir, 'data'), node: 'libtest' });
    agent = await Agent.start({ config, node: 'libtest', logger: nullLogger, version: 'test', private: { socket, socketMode: 0o600, lifespanMs: -1 } });
    rpc = new RpcClient({ kind: 'unix', path: socket });
  });
  after(async () => {
    await rpc.close();
    await agent.stop('test done');
    rmSync(dir, { recursive: true, force: true });
  });

  it('acquire returns the lock held: token, value, mode; release is idempotent', async () => {
    const lock = await acquireLock(rpc, { resource: 'lib.set', pid: process.pid, command: 'test' });
    assert.equal(lock.value, 'lib');
    assert.equal(lock.kind, 'set');
    assert.equal(lock.mode, 'EX');
    assert.equal(typeof lock.fencingToken, 'bigint');
    assert.ok(lock.remainingMs() > 0 && lock.remainingMs() <= 5000);
    const listed = await listLocksVia(rpc);
    assert.equal(listed.resources.find((r) => r.name === 'lib.set')?.holders[0]?.fencingToken, lock.fencingToken.toString());
    await Promise.all([lock.release(), lock.release(), lock.close()]);
    assert.ok(lock.released);
    assert.deepEqual((await listLocksVia(rpc)).resources, []);
    const next = await acquireLock(rpc, { resource: 'lib.set' });
    assert.ok(next.fencingToken > lock.fencingToken);
    await next.release();
  });

  it('a waiter gets onQueued, a timeout, and an abort signal that gives up', async () => {
    const holder = await acquireLock(rpc, { resource: 'libwait' });
    let queued = 0;
    await assert.rejects(acquireLock(rpc, { resource: 'libwait', timeoutMs: 100, onQueued: () => queued++ }), (err) => isCorralError(err, 'LOCK_TIMEOUT'));
    assert.equal(queued, 1);
    await assert.rejects(acquireLock(rpc, { resource: 'libwait', timeoutMs: 0 }), (err) => isCorralError(err, 'LOCK_BUSY'));
    const abort = new AbortController();
    const waiting = acquireLock(rpc, { resource: 'libwait', signal: abort.signal });
    setTimeout(() => abort.abort(new Error('gave up')), 50);
    await assert.rejects(waiting, /gave up/);
    await holder.release();
    await (await acquireLock(rpc, { resource: 'libwait', timeoutMs: 0 })).close();
  });

  it('keeps the lock confirmed while held: remaining validity does not run out', async () => {
    const lock = await acquireLock(rpc, { resource: 'libconfirm' });
    await new Promise((resolve) => setTimeout(resolve, lock.confirmEveryMs * 3));
    assert.ok(!lock.lost.aborted);
    assert.ok(lock.remainingMs() > lock.stopWithinMs, `${lock.remainingMs()} ms left`);
    await lock.release();
  });
});

describe('the loss rule of a held lock', () => {
  /** A stub agent: grants at once, then never confirms (as a frozen or cut-off agent). */
  function stubAgent(granted: Partial<LockGrantedEvent>): { rpc: RpcClient; cancelled: () => boolean } {
    let cancelled = false;
    const channel = (_path: string, handlers: ChannelHandlers): RpcChannel => ({
      send: (value) => {
        const command = value as LockCommand;
        if (command.op === 'acquire') {
          const event = { event: 'granted', ref: command.ref, id: 'x', resource: 'r', kind: 'simple', mode: 'EX', quantity: 1, value: null, fencingToken: '7', validForMs: 1000, confirmEveryMs: 50, stopWithinMs: 300, ...granted };
          queueMicrotask(() => handlers.onMessage(event));
        }
        if (command.op === 'cancel') cancelled = true;
        // confirm: never answered
      },
      setActive: () => undefined,
      close: () => undefined,
    });
    const rpc = { where: 'stub', requestTimeoutMs: 10_000, channel } as unknown as RpcClient;
    return { rpc, cancelled: () => cancelled };
  }

  it('is lost when confirmations stop, with time left to stop the work before the validity ends', async () => {
    const { rpc, cancelled } = stubAgent({ validForMs: 600, stopWithinMs: 300 });
    const t0 = performance.now();
    const lock = await acquireLock(rpc, { resource: 'r' });
    const reason = await lock.whenLost();
    const at = performance.now() - t0;
    assert.ok(isCorralError(reason, 'LOCK_LOST'), String(reason));
    assert.match(reason.message, /has not confirmed it in time/);
    assert.ok(at >= 250 && at < 450, `lost after ${at} ms (validity 600, stop within 300)`);
    assert.ok(lock.deadline - performance.now() > 100, 'time is left for the grace period');
    assert.equal(cancelled(), false, 'the request stays open (the agent must not release while the work stops)');
    await lock.release();
    assert.equal(cancelled(), true);
  });
});
