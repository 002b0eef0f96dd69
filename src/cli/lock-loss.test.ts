// Losing a lock through the real CLI: the private daemon killed or frozen while a command runs, a
// command that ignores SIGTERM, corral lock itself killed. In every case the command is stopped (or
// the lock kept) so that no second holder is ever in while the first command may still run.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { LockListingWire } from '../api/lock-wire.js';
import { isProcessAlive } from '../util/process.js';
import { CORRAL } from '../testkit/cli.js';
import { LockTestDir, timedEvents, type Holder } from '../testkit/lock.js';
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

/** Writes CMD's pid and process group to `${log}.ids`. */
const IDS = (log: string): string => `read -r stat < /proc/$$/stat; set -- \${stat#*) }; echo "$$ $3" > ${log}.ids`;

/**
 * A first holder that logs `enter`, and `term` when it gets SIGTERM (then exits); `ignoreTerm`: it
 * ignores SIGTERM; `ids`: it first writes its pid and group (IDS).
 */
function firstHolder(log: string, opts: { ignoreTerm?: boolean; ids?: boolean } = {}): string {
  const trap = opts.ignoreTerm ? `trap '' TERM` : `trap 'echo term $(date +%s%N) >> ${log}; exit 1' TERM`;
  return `${opts.ids ? `${IDS(log)}; ` : ''}${trap}; echo enter $(date +%s%N) >> ${log}; i=0; while [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done`;
}

/** Waits until `pid` is stopped (state T): corral lock stopped itself at CORRAL_LOCK_TEST_STOP_AT. */
async function stopped(pid: number): Promise<void> {
  await waitUntil(`pid ${pid} stopped`, () => {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Promise.resolve(stat.charAt(stat.lastIndexOf(')') + 2) === 'T' ? true : undefined);
  }, 15_000, 10);
}

/** The pid of the live process whose command line contains `needle` (a gate's CMD), if any. */
function pidRunning(needle: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle) && isProcessAlive(Number(entry))) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

describe('corral lock killed (SIGKILL) at any point: never a second holder while CMD may run', { concurrency: true, timeout: 120_000 }, () => {
  it('killed once granted, before CMD is told to run: CMD never runs, and the lock is free again at once', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'k-granted.log');
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', 'kg', '--', 'sh', '-c', `echo enter $(date +%s%N) >> ${log}`], { env: { CORRAL_LOCK_TEST_STOP_AT: 'granted' } });
    await stopped(first.pid);
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    const t0 = performance.now();
    const next = await td.corral(['lock', '-s', socket, '-r', 'kg', '-o', '10000', '--', 'sh', '-c', `echo next $(date +%s%N) >> ${log}`]);
    assert.equal(next.code, 0, next.stderr);
    assert.ok(performance.now() - t0 < 5000, 'the lock was released when the gate gave up, not at a TTL');
    await sleep(200);
    assert.equal(events(log).get('enter'), undefined, 'CMD never ran');
  });

  it('killed the moment CMD is told to run: the lock is kept while CMD runs; the next holder gets in after it', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'k-started.log');
    const go = path.join(td.dir, 'k-started.go');
    const script = `echo enter $(date +%s%N) >> ${log}; while [ ! -e ${go} ]; do sleep 0.02; done; echo leave $(date +%s%N) >> ${log}`;
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', 'ks', '--', 'sh', '-c', script], { env: { CORRAL_LOCK_TEST_STOP_AT: 'started' } });
    await stopped(first.pid);
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    await appears(log, 'enter');
    const second = td.start(['lock', '-s', socket, '-r', 'ks', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    try {
      await sleep(1500);
      assert.equal(events(log).get('second'), undefined, 'the second holder waits while CMD runs');
    } finally {
      writeFileSync(go, '');
    }
    assert.equal((await second.exited).code, 0, second.stderr());
    const e = events(log);
    assert.ok((e.get('second') as bigint) > (e.get('leave') as bigint));
  });

  it('the daemon killed too while CMD runs orphaned: the restarted daemon takes the lock back and keeps it past the TTL until CMD ends', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'k-crash.log');
    const go = path.join(td.dir, 'k-crash.go');
    const script = `echo enter $(date +%s%N) >> ${log}; while [ ! -e ${go} ]; do sleep 0.02; done; echo leave $(date +%s%N) >> ${log}`;
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', 'kc', '--', 'sh', '-c', script]);
    await appears(log, 'enter');
    process.kill(first.pid, 'SIGKILL');
    await first.exited;
    process.kill(await td.daemonPid(socket), 'SIGKILL');
    const killedAt = now();
    // The next request starts a new daemon, which finds the lock recorded for a group that runs.
    const second = td.start(['lock', '-s', socket, '-d', '-1', '-r', 'kc', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    try {
      await sleep(7000); // past the lock session's 5 s TTL
      assert.equal(events(log).get('second'), undefined, `the second holder waits while the orphaned CMD runs: ${second.stderr()}`);
    } finally {
      writeFileSync(go, '');
    }
    assert.equal((await second.exited).code, 0, second.stderr());
    const e = events(log);
    assert.ok((e.get('second') as bigint) > (e.get('leave') as bigint));
    assert.ok((e.get('second') as bigint) - killedAt > 7_000_000_000n);
  });

  /**
   * Guarded: SIGKILL the `first` corral lock while its CMD (firstHolder) runs and `second` waits:
   * CMD's gate sends it SIGTERM at once, and `second` gets in only after that.
   */
  const killFirstGuarded = async (first: Holder, second: Holder, log: string): Promise<void> => {
    await sleep(300);
    process.kill(first.pid, 'SIGKILL');
    const killedAt = now();
    await first.exited;
    assert.equal((await second.exited).code, 0, second.stderr());
    const e = events(log);
    const term = e.get('term') as bigint;
    assert.ok(term > killedAt && term - killedAt < 2_000_000_000n, 'CMD got SIGTERM from its gate at once');
    assert.ok((e.get('second') as bigint) > term, 'the next holder came in after CMD stopped');
  };

  it('--foreground (not attached, guarded): killed while CMD runs, its gate stops CMD before the lock is released', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'k-fg.log');
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', 'kf', '--foreground', '--', 'sh', '-c', firstHolder(log)]);
    await appears(log, 'enter');
    const second = td.start(['lock', '-s', socket, '-r', 'kf', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    await killFirstGuarded(first, second, log);
  });

  it('on a socket shared with a daemon of another user: not attached (the daemon refuses another user’s group) but guarded', async () => {
    // The daemon runs as nobody on a socket in nobody's directory; this test (root) locks there.
    const nobody = 65534;
    chmodSync(td.dir, 0o711);
    const home = path.join(td.dir, 'nobody');
    mkdirSync(home, { mode: 0o700 });
    chownSync(home, nobody, nobody);
    const socket = path.join(home, 'shared.sock');
    const daemon = await new Promise<number | null>((resolve) => {
      const c = spawn(process.execPath, [CORRAL, 'lock', '-s', socket, '-d', '-1', '--', 'true'], { uid: nobody, gid: nobody, stdio: 'ignore', env: { PATH: process.env.PATH, CORRAL_RUNTIME_DIR: path.join(home, 'run'), CORRAL_CONFIG: '' } });
      c.once('exit', resolve);
    });
    assert.equal(daemon, 0);
    const log = path.join(td.dir, 'k-shared.log');
    const first = td.start(['lock', '-s', socket, '-V', '-r', 'ksh', '--', 'sh', '-c', firstHolder(log)]);
    await appears(log, 'enter');
    assert.match(first.stderr(), /CMD's process group is not attached \(process group \d+ belongs to uid 0, and this lock daemon runs as uid 65534/);
    const second = td.start(['lock', '-s', socket, '-r', 'ksh', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    await killFirstGuarded(first, second, log);
    assert.equal(pidRunning(log), undefined, 'nothing of the first CMD runs');
  });
});

for (const via of ['fast path', 'full path'] as const) {
  describe(`losing a lock held through the private daemon (${via})`, { concurrency: true, timeout: 120_000 }, () => {
    // The fast path (cli/lock-fast.cts) takes a request only where a daemon answers already.
    const env: NodeJS.ProcessEnv = via === 'full path' ? { CORRAL_LOCK_FAST: '0' } : {};
    const daemonSocket = async (): Promise<string> => {
      const socket = td.socket();
      const r = await td.corral(['lock', '-s', socket, '-d', '-1', '--', 'true']);
      assert.equal(r.code, 0, r.stderr);
      return socket;
    };
    /** The path taken, as CMD saw it: on the fast path CMD leads its group (the trampoline exec'd it); on the full path its gate does. */
    const assertPath = (log: string): void => {
      const [pid, pgid] = readFileSync(`${log}.ids`, 'utf8').trim().split(' ').map(Number);
      if (via === 'fast path') assert.equal(pid, pgid, 'the fast path: CMD leads its group');
      else assert.notEqual(pid, pgid, 'the full path: the gate leads the group');
    };
    /**
     * On a running daemon: a first holder (firstHolder) on `resource`, running on the path under
     * test; with `waiter`, a second request queued behind it that logs `second` when it runs.
     */
    const holding = async (name: string, resource: string, opts: { ignoreTerm?: boolean; waiter?: boolean } = {}) => {
      const socket = await daemonSocket();
      const log = path.join(td.dir, `${name}-${via.split(' ')[0]}.log`);
      const first = td.start(['lock', '-s', socket, '-r', resource, '--', 'sh', '-c', firstHolder(log, { ignoreTerm: opts.ignoreTerm === true, ids: true })], { env });
      await appears(log, 'enter');
      assertPath(log);
      const second = opts.waiter ? td.start(['lock', '-s', socket, '-r', resource, '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]) : undefined;
      if (second) await sleep(300);
      return { socket, log, first, second: second as Holder, daemon: await td.daemonPid(socket) };
    };
    it('the daemon killed: the holder stops its command and exits 98; the next holder gets in only after it stopped', async () => {
      const { log, first, second, daemon } = await holding('killed', 'k', { waiter: true });
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
      const { socket, log, first, daemon } = await holding('stubborn', 's', { ignoreTerm: true });
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
      const { log, first, second, daemon } = await holding('frozen', 'f', { waiter: true });
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

    it('--on-lost warn: the command keeps running; corral lock still exits 98', async () => {
      const socket = await daemonSocket();
      const log = path.join(td.dir, `warn-${via.split(' ')[0]}.log`);
      const go = path.join(td.dir, `warn-${via.split(' ')[0]}.go`);
      const first = td.start(['lock', '-s', socket, '--on-lost', 'warn', '-r', 'w', '--', 'sh', '-c', `${IDS(log)}; echo enter $(date +%s%N) >> ${log}; while [ ! -e ${go} ]; do sleep 0.02; done`], { env });
      await appears(log, 'enter');
      assertPath(log);
      process.kill(await td.daemonPid(socket), 'SIGKILL');
      await waitUntil('the warning', () => Promise.resolve(/keeps running unprotected/.test(first.stderr()) ? true : undefined), 10_000);
      assert.ok(isProcessAlive(first.pid));
      writeFileSync(go, '');
      assert.equal((await first.exited).code, 98);
    });
  });
}

describe('losing a lock held through the private daemon', { concurrency: true, timeout: 120_000 }, () => {
  it('corral lock killed: the daemon keeps the lock while its command runs, then releases it (rolling _S_ back)', async () => {
    const socket = td.socket();
    const log = path.join(td.dir, 'orphan.log');
    const go = path.join(td.dir, 'orphan.go');
    const script = `echo enter $(date +%s%N) >> ${log}; while [ ! -e ${go} ]; do sleep 0.02; done; echo leave $(date +%s%N) >> ${log}`;
    const first = td.start(['lock', '-s', socket, '-d', '-1', '-r', '_S_orph[1]', '-i', '5000', '--', 'sh', '-c', script]);
    await appears(log, 'enter');
    process.kill(first.pid, 'SIGKILL'); // the group was attached with the request: no window
    await first.exited;
    const { value: listed } = await waitUntil('the holder listed as orphaned', async () => {
      const l = JSON.parse((await td.corral(['locks', '-s', socket, '--json'])).stdout) as LockListingWire;
      const h = l.resources.find((r) => r.name === '_S_orph[1]')?.holders[0];
      return h?.orphaned ? h : undefined;
    }, 10_000);
    assert.equal(listed.value, '1');
    assert.match((await td.corral(['locks', '-s', socket])).stdout, /held \(client gone\)/);
    const second = td.start(['lock', '-s', socket, '-r', '_S_orph[1]', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}; echo $CORRAL_LOCK_VALUE >> ${log}.value`]);
    try {
      await sleep(500);
      assert.ok(!existsSync(`${log}.value`), 'the second holder waits while the orphaned command runs');
    } finally {
      writeFileSync(go, '');
    }
    assert.equal((await second.exited).code, 0);
    const e = events(log);
    assert.ok((e.get('second') as bigint) > (e.get('leave') as bigint));
    assert.equal(readFileSync(`${log}.value`, 'utf8').trim(), '1', 'the value of the dead client was rolled back');
  });
});
