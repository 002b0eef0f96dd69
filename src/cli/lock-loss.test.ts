// Losing a lock through the real CLI: the private daemon killed or frozen while a command runs, a
// command that ignores SIGTERM, corral lock itself killed. In every case the command is stopped (or
// the lock kept) so that no second holder is ever in while the first command may still run.

import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { LockListingWire } from '../api/lock-wire.js';
import { isProcessAlive } from '../util/process.js';
import { LockTestDir, timedEvents } from '../testkit/lock.js';
import { sleep, waitUntil } from '../testkit/local.js';

const td = new LockTestDir();
after(() => td.destroy());

/** Wall-clock nanoseconds as `date +%s%N` writes them, comparable across the processes of a test. */
const now = (): bigint => BigInt(Date.now()) * 1_000_000n;

const events = timedEvents;

async function appears(file: string, what: string, timeoutMs = 15_000): Promise<bigint> {
  const { value } = await waitUntil(`${what} in ${path.basename(file)}`, () => Promise.resolve(events(file).get(what)), timeoutMs, 10);
  return value;
}

/** A first holder that logs `enter`, and `term` when it gets SIGTERM (then exits); `ignoreTerm`: it ignores SIGTERM. */
function firstHolder(log: string, opts: { ignoreTerm?: boolean } = {}): string {
  const trap = opts.ignoreTerm ? `trap '' TERM` : `trap 'echo term $(date +%s%N) >> ${log}; exit 1' TERM`;
  return `${trap}; echo enter $(date +%s%N) >> ${log}; i=0; while [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done`;
}

describe('losing a lock held through the private daemon', { concurrency: true, timeout: 120_000 }, () => {
  it('the daemon killed: the holder stops its command and exits 98; the next holder gets in only after it stopped', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'killed.log');
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', 'k', '--', 'sh', '-c', firstHolder(log)]);
    await appears(log, 'enter');
    const second = td.start(['lock', '-s', socket, '-r', 'k', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    await sleep(300);
    const daemon = await td.daemonPid(socket);
    process.kill(daemon, 'SIGKILL');
    const killedAt = now();
    const done = await first.exited;
    assert.equal(done.code, 98, first.stderr());
    assert.match(first.stderr(), /lost the lock on k: .*closed the lock stream; stopping CMD: SIGTERM now, SIGKILL in \d+ ms \[LOCK_LOST\]/);
    assert.equal((await second.exited).code, 0, second.stderr());
    const e = events(log);
    const term = e.get('term') as bigint;
    const secondIn = e.get('second') as bigint;
    assert.ok(term > killedAt - 50_000_000n, 'the command got SIGTERM after the kill');
    assert.ok(secondIn > term, 'the second holder came in after the first command stopped');
    // The dead daemon's keys outlive it: a restarted daemon gives them a fresh TTL (5 s).
    assert.ok(secondIn - killedAt > 3_000_000_000n, `second holder in ${(secondIn - killedAt) / 1_000_000n} ms after the kill`);
  });

  it('a command that ignores SIGTERM is killed (SIGKILL) before anyone else can be granted the lock', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'stubborn.log');
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', 's', '--', 'sh', '-c', firstHolder(log, { ignoreTerm: true })]);
    await appears(log, 'enter');
    const daemon = await td.daemonPid(socket);
    process.kill(daemon, 'SIGKILL');
    const killedAt = performance.now();
    const done = await first.exited;
    const stoppedAfter = performance.now() - killedAt;
    assert.equal(done.code, 98);
    const m = /SIGKILL in (\d+) ms/.exec(first.stderr());
    assert.ok(m, first.stderr());
    // Its grace ends before the lock could expire (validity left minus a margin), well inside the 5 s TTL.
    assert.ok(Number(m[1]) < 4500 && stoppedAfter < 5000, `SIGKILL after ${m[1]} ms; exited ${stoppedAfter} ms after the kill`);
    const second = await td.corral(['lock', '-s', socket, '-r', 's', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    assert.equal(second.code, 0);
  });

  it('the daemon frozen past its TTL: the holder stops its command before the daemon resumes; the waiter then gets in', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'frozen.log');
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', 'f', '--', 'sh', '-c', firstHolder(log)]);
    await appears(log, 'enter');
    const second = td.start(['lock', '-s', socket, '-r', 'f', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    await sleep(300);
    const daemon = await td.daemonPid(socket);
    process.kill(daemon, 'SIGSTOP');
    let resumedAt: bigint;
    try {
      const done = await first.exited;
      assert.equal(done.code, 98);
      assert.match(first.stderr(), /has not confirmed it in time/);
      await sleep(6000 - 0); // past the 5 s TTL
    } finally {
      resumedAt = now();
      process.kill(daemon, 'SIGCONT');
    }
    assert.equal((await second.exited).code, 0);
    const e = events(log);
    assert.ok((e.get('term') as bigint) < resumedAt, 'the command was stopped while the daemon was frozen');
    assert.ok((e.get('second') as bigint) > resumedAt);
  });

  it('corral lock killed: the daemon keeps the lock while its command runs, then releases it (rolling _S_ back)', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'orphan.log');
    const go = path.join(td.dir, 'orphan.go');
    const script = `echo enter $(date +%s%N) >> ${log}; while [ ! -e ${go} ]; do sleep 0.02; done; echo leave $(date +%s%N) >> ${log}`;
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', '_S_orph[1]', '-i', '5000', '--', 'sh', '-c', script]);
    await appears(log, 'enter');
    await sleep(200); // the attach follows the spawn
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    const { value: listed } = await waitUntil('the holder listed as orphaned', async () => {
      const l = JSON.parse((await td.corral(['locks', '-s', socket, '--json'])).stdout) as LockListingWire;
      const h = l.resources.find((r) => r.name === '_S_orph[1]')?.holders[0];
      return h?.orphaned ? h : undefined;
    }, 10_000);
    assert.equal(listed.value, '1');
    assert.match((await td.corral(['locks', '-s', socket])).stdout, /held \(client gone\)/);
    const second = td.start(['lock', '-s', socket, '-r', '_S_orph[1]', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}; echo $CORRAL_LOCK_VALUE >> ${log}.value`]);
    await sleep(500);
    assert.ok(!existsSync(`${log}.value`), 'the second holder waits while the orphaned command runs');
    writeFileSync(go, '');
    assert.equal((await second.exited).code, 0);
    const e = events(log);
    assert.ok((e.get('second') as bigint) > (e.get('leave') as bigint));
    assert.equal(readFileSync(`${log}.value`, 'utf8').trim(), '1', 'the value of the dead client was rolled back');
  });

  it('--on-lost warn: the command keeps running; corral lock still exits 98', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'warn.log');
    const go = path.join(td.dir, 'warn.go');
    const first = td.start(['lock', '-s', socket, '-d', '-1', '--on-lost', 'warn', '-r', 'w', '--', 'sh', '-c', `echo enter $(date +%s%N) >> ${log}; while [ ! -e ${go} ]; do sleep 0.02; done`]);
    await appears(log, 'enter');
    process.kill(await td.daemonPid(socket), 'SIGKILL');
    await waitUntil('the warning', () => Promise.resolve(/keeps running unprotected/.test(first.stderr()) ? true : undefined), 10_000);
    assert.ok(isProcessAlive(first.pid));
    writeFileSync(go, '');
    assert.equal((await first.exited).code, 98);
  });
});
