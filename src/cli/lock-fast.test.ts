// corral lock's fast path (lock-fast.cts): which requests it takes, and, against a real private
// daemon, that what it takes behaves as the full path does (its loss handling is tested on both
// paths in lock-loss.test.ts), that it hands everything else to the full path, and that a corral
// lock killed while waiting leaves nothing behind.

import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fastRequest } from './lock-fast.cjs';
import { LockTestDir } from '../testkit/lock.js';
import { sleep, waitUntil } from '../testkit/local.js';

const td = new LockTestDir();
after(() => td.destroy());

/** A listening UNIX socket at `file` (a stand-in for a daemon's: the fast path only looks at it here). */
async function listening(file: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(file, resolve));
  return server;
}

describe('the fast path takes ordinary requests only', () => {
  const runtime = path.join(td.dir, 'fast-run');
  const own = path.join(td.dir, 'own.sock');
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, CORRAL_RUNTIME_DIR: runtime };
  const take = (args: string[], more: NodeJS.ProcessEnv = {}): ReturnType<typeof fastRequest> => fastRequest(args, { ...env, ...more });
  const servers: Server[] = [];
  before(async () => {
    mkdirSync(runtime, { mode: 0o700 });
    servers.push(await listening(path.join(runtime, 'lock.sock')), await listening(own));
  });
  after(() => {
    for (const server of servers) server.close();
  });

  it('takes the defaults and the options -r -l -o -i -d -s --on-lost', () => {
    assert.deepEqual(take(['--', 'true']), {
      resource: '_RESOURCE',
      mode: undefined,
      timeoutMs: -1,
      idleLifespanMs: undefined,
      socket: path.join(runtime, 'lock.sock'),
      onLost: 'kill',
      command: ['true'],
    });
    const relative = path.relative(process.cwd(), own);
    assert.deepEqual(take(['-r', 'db', '-l', 'PR', '-o', '0', '-i', '250', '-d', '-1', '-s', relative, '--on-lost', 'warn', '--', 'sh', '-c', 'exit 3']), {
      resource: 'db',
      mode: 'PR',
      timeoutMs: 0,
      idleLifespanMs: 250,
      socket: own,
      onLost: 'warn',
      command: ['sh', '-c', 'exit 3'],
    });
    assert.equal(take(['--resource-name=pool[3]', '--resource-timeout=1500', '--', 'true'])?.resource, 'pool[3]');
    assert.equal(take(['-r', '/backup/daily', '--', 'true'])?.resource, '/backup/daily');
    // -s names a private daemon: $CORRAL_CONFIG does not apply then.
    assert.equal(take(['-s', own, '--', 'true'], { CORRAL_CONFIG: '/etc/corral/corral.yaml' })?.socket, own);
    // A script whose interpreter exists.
    const script = path.join(td.dir, 'fast-script');
    writeFileSync(script, '#!/bin/sh -e\ntrue\n', { mode: 0o755 });
    assert.deepEqual(take(['--', script])?.command, [script]);
  });

  it('hands over what it does not do, or what the full path must judge', async () => {
    const notExecutable = path.join(td.dir, 'not-executable');
    writeFileSync(notExecutable, '#!/bin/sh\n', { mode: 0o644 });
    const noInterpreter = path.join(td.dir, 'no-interpreter');
    writeFileSync(noInterpreter, '#!/no/such/interpreter\n', { mode: 0o755 });
    // A socket of another user (a shared -s socket): its daemon cannot attach CMD's group.
    const others = path.join(td.dir, 'others.sock');
    servers.push(await listening(others));
    if (process.getuid?.() === 0) chownSync(others, 65534, 65534);
    const handed: [string, string[], NodeJS.ProcessEnv?][] = [
      ['a set (its element is appended)', ['-r', 'a.b.c', '--', 'true']],
      ['a sequence', ['-r', '_S_slot[2]', '--', 'true']],
      ['a timestamp', ['-r', '_t_%H[1]', '--', 'true']],
      ['the reserved default name', ['-r', '_RESOURCE', '--', 'true']],
      ['a bad name', ['-r', '9lives', '--', 'true']],
      ['a pool of 0', ['-r', 'p[0]', '--', 'true']],
      ['a mode the full path parses', ['-l', 'Exclusive', '--', 'true']],
      ['-q', ['-r', 'p[3]', '-q', '2', '--', 'true']],
      ['-e', ['-e', 'no', '--', 'true']],
      ['-V', ['-V', '--', 'true']],
      ['--foreground', ['--foreground', '--', 'true']],
      ['--ignore-signal', ['--ignore-signal', 'INT', '--', 'true']],
      ['-a', ['-a', '127.0.0.1', '--', 'true']],
      ['-c', ['-c', 'flom.conf', '--', 'true']],
      ['--config', ['--config', 'corral.yaml', '--', 'true']],
      ['-x', ['-x']],
      ['an option twice', ['-r', 'a', '-r', 'b', '--', 'true']],
      ['-o below -1', ['-o', '-2', '--', 'true']],
      ['-o not an integer', ['-o', '1e3', '--', 'true']],
      ['--on-lost other', ['--on-lost', 'ignore', '--', 'true']],
      ['no --', ['true']],
      ['no command', ['-r', 'a', '--']],
      ['a command that looks like an option', ['--', '-x']],
      ['a command that is not found', ['--', 'no-such-program-anywhere']],
      ['a command that is not executable', ['--', notExecutable]],
      ['a script whose interpreter is missing', ['--', noInterpreter]],
      ['no socket there (the full path starts a daemon)', ['-s', path.join(td.dir, 'nothing.sock'), '--', 'true']],
      ...(process.getuid?.() === 0 ? [['another user’s socket', ['-s', others, '--', 'true']] as [string, string[]]] : []),
      ['a directory', ['--', '/tmp']],
      ['a cluster ($CORRAL_CONFIG)', ['--', 'true'], { CORRAL_CONFIG: '/etc/corral/corral.yaml' }],
      ['CORRAL_LOCK_FAST=0', ['--', 'true'], { CORRAL_LOCK_FAST: '0' }],
      ['the test stops of the full path', ['--', 'true'], { CORRAL_LOCK_TEST_STOP_AT: 'granted' }],
      ['no PATH for a bare name', ['--', 'true'], { PATH: undefined }],
    ];
    for (const [what, args, more] of handed) assert.equal(take(args, more), undefined, what);
    // With PATH unset, a command with a slash is still found.
    assert.deepEqual(take(['--', '/bin/true'], { PATH: undefined })?.command, ['/bin/true']);
  });
});

describe('corral lock on the fast path, against a real private daemon', { concurrency: 4, timeout: 120_000 }, () => {
  const socket = td.socket();
  const lock = (args: string[], env: NodeJS.ProcessEnv = {}): ReturnType<LockTestDir['corral']> => td.corral(['lock', '-s', socket, ...args], { env });
  const FULL = { CORRAL_LOCK_FAST: '0' };
  before(async () => {
    const r = await td.corral(['lock', '-s', socket, '-d', '-1', '--', 'true']);
    assert.equal(r.code, 0, r.stderr);
  });

  it('runs CMD as the leader of its own group, with CORRAL_FENCE and without the gate secret; exits with its status', async () => {
    const show = 'read -r stat < /proc/$$/stat; set -- ${stat#*) }; echo "$$ $2 $3 $4 ${CORRAL_FENCE:-none} ${CORRAL_LOCK_GATE:-none} ${CORRAL_LOCK_VALUE:-none}"';
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await lock(['-r', 'fp1', '--', 'sh', '-c', show], { CORRAL_LOCK_VALUE: 'inherited' }));
    const fences: bigint[] = [];
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      const [pid, , pgid, session, fence, secret, value] = r.stdout.trim().split(' ');
      assert.equal(pgid, pid, 'CMD leads its group: the trampoline exec’d it (the fast path)');
      assert.equal(session, pid, 'in a session of its own');
      assert.equal(secret, 'none', 'the gate secret is not passed on to CMD');
      assert.equal(value, 'none', 'no inherited CORRAL_LOCK_VALUE');
      fences.push(BigInt(fence as string));
    }
    assert.ok(fences[0]! < fences[1]! && fences[1]! < fences[2]!, `tokens rise: ${fences.join(' ')}`);
    assert.equal((await lock(['-r', 'fp1', '--', 'sh', '-c', 'exit 7'])).code, 7);
    assert.equal((await lock(['-r', 'fp1', '--', 'sh', '-c', 'kill -TERM $$'])).code, 128 + 15);
    // Released each time: nothing held now.
    assert.equal((await lock(['-r', 'fp1', '-o', '0', '--', 'true'])).code, 0);
  });

  it('says busy and timed out as the full path does (exit 98)', async () => {
    const go = path.join(td.dir, 'fp2.go');
    const readyFile = path.join(td.dir, 'fp2.ready');
    const holder = td.start(['lock', '-s', socket, '-r', 'fp2', '--', 'sh', '-c', `touch ${readyFile}; while [ ! -e ${go} ]; do sleep 0.02; done`]);
    try {
      await waitUntil('the holder to run', () => Promise.resolve(existsSync(readyFile) ? true : undefined), 15_000, 10);
      const fast = [await lock(['-r', 'fp2', '-o', '0', '--', 'true']), await lock(['-r', 'fp2', '-o', '300', '--', 'true'])];
      const full = [await lock(['-r', 'fp2', '-o', '0', '--', 'true'], FULL), await lock(['-r', 'fp2', '-o', '300', '--', 'true'], FULL)];
      for (const [i, r] of [...fast, ...full].entries()) assert.equal(r.code, 98, `${i}: ${r.stderr}`);
      assert.match(fast[0]!.stderr, /\[LOCK_BUSY\]\n$/);
      assert.equal(fast[0]!.stderr, full[0]!.stderr);
      assert.equal(fast[1]!.stderr, 'corral lock: The lock on fp2 was not obtained because timeout (300 milliseconds) expired [LOCK_TIMEOUT]\n');
      assert.equal(fast[1]!.stderr, full[1]!.stderr);
    } finally {
      writeFileSync(go, '');
    }
    assert.equal((await holder.exited).code, 0);
  });

  it('killed while waiting: CMD never runs, its trampoline is gone, and the next in line gets the lock', async () => {
    const go = path.join(td.dir, 'fp3.go');
    const readyFile = path.join(td.dir, 'fp3.ready');
    const never = path.join(td.dir, 'fp3.never');
    const holder = td.start(['lock', '-s', socket, '-r', 'fp3', '--', 'sh', '-c', `touch ${readyFile}; while [ ! -e ${go} ]; do sleep 0.02; done`]);
    await waitUntil('the holder to run', () => Promise.resolve(existsSync(readyFile) ? true : undefined), 15_000, 10);
    const waiter = td.start(['lock', '-s', socket, '-r', 'fp3', '--', 'touch', never]);
    /** Live processes but the waiter whose command line names `never` (its trampoline, then CMD). */
    const running = (): number[] =>
      readdirSync('/proc')
        .filter((e) => /^\d+$/.test(e) && Number(e) !== waiter.pid)
        .filter((e) => {
          try {
            const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
            return readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(never) && stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
          } catch {
            return false;
          }
        })
        .map(Number);
    // (Between fork and exec the child still shows the waiter's node command line: wait for the exec.)
    const argv0 = (pid: number): string | undefined => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
      } catch {
        return undefined;
      }
    };
    await waitUntil('the waiter’s trampoline', () => Promise.resolve(running().some((pid) => argv0(pid) === '/bin/sh') ? true : undefined), 15_000, 10);
    assert.deepEqual(running().map(argv0), ['/bin/sh'], 'only the trampoline, waiting: CMD has not run');
    await sleep(200); // queued behind the holder
    process.kill(waiter.pid, 'SIGKILL');
    await waiter.exited;
    await waitUntil('the trampoline to exit', () => Promise.resolve(running().length === 0 ? true : undefined), 5000, 10);
    const next = td.start(['lock', '-s', socket, '-r', 'fp3', '--', 'true']);
    writeFileSync(go, '');
    assert.equal((await holder.exited).code, 0);
    assert.equal((await next.exited).code, 0, next.stderr());
    assert.ok(!existsSync(never), 'the killed waiter’s CMD never ran');
  });

  it('hands over to the full path: no daemon yet (started), -d 0 without a daemon, a CMD that cannot run', async () => {
    const fresh = td.socket();
    const started = await td.corral(['lock', '-s', fresh, '-d', '2000', '--', 'sh', '-c', 'echo "$$ $(cut -d" " -f5 /proc/$$/stat)"']);
    assert.equal(started.code, 0, started.stderr);
    const [pid, pgid] = started.stdout.trim().split(' ');
    assert.notEqual(pid, pgid, 'the full path ran it (its node gate leads the group)');
    assert.equal(td.daemonPids(fresh).length, 1, 'it started the daemon');

    const none = await td.corral(['lock', '-s', td.socket(), '-d', '0', '--', 'true']);
    assert.equal(none.code, 99);
    assert.match(none.stderr, /no lock daemon answers on .* and -d 0 forbids starting one/);

    const script = path.join(td.dir, 'fp4-not-executable.sh');
    writeFileSync(script, '#!/bin/sh\necho hi\n');
    chmodSync(script, 0o644);
    const denied = await lock(['-r', 'fp4', '--', script]);
    assert.equal(denied.code, 97);
    assert.match(denied.stderr, /Unable to execute command .*EACCES/);
    const interpreterless = path.join(td.dir, 'fp4-no-interpreter.sh');
    writeFileSync(interpreterless, '#!/no/such/interpreter\necho hi\n', { mode: 0o755 });
    const missing = await lock(['-r', 'fp4', '--', interpreterless]);
    assert.equal(missing.code, 97);
    assert.match(missing.stderr, /Unable to execute command .*ENOENT/);
  });

  it('-o at the largest value waits, rather than timing out at once (both paths)', async () => {
    for (const [i, env] of [{}, FULL].entries()) {
      const go = path.join(td.dir, `fp6-${i}.go`);
      const readyFile = path.join(td.dir, `fp6-${i}.ready`);
      const holder = td.start(['lock', '-s', socket, '-r', 'fp6', '--', 'sh', '-c', `touch ${readyFile}; while [ ! -e ${go} ]; do sleep 0.02; done`]);
      await waitUntil('the holder to run', () => Promise.resolve(existsSync(readyFile) ? true : undefined), 15_000, 10);
      const waiter = td.start(['lock', '-s', socket, '-r', 'fp6', '-o', '2147483647', '--', 'true'], { env });
      await sleep(500);
      const waiting = waiter.child.exitCode === null;
      writeFileSync(go, '');
      const done = await waiter.exited;
      assert.ok(waiting, `still waiting after 500 ms (exited ${done.code}: ${waiter.stderr()})`);
      assert.equal(done.code, 0, waiter.stderr());
      assert.doesNotMatch(waiter.stderr(), /TimeoutOverflowWarning/);
      assert.equal((await holder.exited).code, 0);
    }
  });

  it('fast and full path holders exclude each other', async () => {
    const log = path.join(td.dir, 'fp5.log');
    const body = `echo "in $$ $(cut -d' ' -f5 /proc/$$/stat)" >> ${log}; sleep 0.05; echo "out $$" >> ${log}`;
    const runs = await Promise.all(Array.from({ length: 8 }, (_, i) => lock(['-r', 'fp5', '--', 'sh', '-c', body], i % 2 === 0 ? {} : FULL)));
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    assert.equal(lines.length, 16);
    for (let i = 0; i < lines.length; i += 2) {
      const [a, b] = [lines[i]!.split(' '), lines[i + 1]!.split(' ')];
      assert.deepEqual([a[0], b[0], a[1]], ['in', 'out', b[1]], `holder ${a[1]} was alone from in to out: ${lines.join(', ')}`);
    }
    // Half of them on each path: CMD leads its group on the fast path only.
    assert.equal(lines.filter((l) => l.startsWith('in ') && l.split(' ')[1] === l.split(' ')[2]).length, 4, lines.join(', '));
  });
});
