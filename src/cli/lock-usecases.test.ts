// FLoM's "by examples" use cases (flom.md §13), each against the real `corral lock`, with flom's
// commands changed by one word, on both backends: a private daemon on the embedded store (-s), and
// a local cluster whose store is a real etcd (--config), one etcd per file. Use cases 7, 8 and 9
// (distributed) are in lock-cluster.test.ts. Timings are shortened; holders wait on files, not on
// sleeps, so a loaded machine cannot reorder what a test asserts.

import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CORRAL } from '../testkit/cli.js';
import { EtcdLockCluster, LockTestDir } from '../testkit/lock.js';
import { sleep, waitUntil } from '../testkit/local.js';

const td = new LockTestDir();
after(() => td.destroy());

let gates = 0;

/** A command that touches `ready` under the lock and holds on until `release()`. */
function gate(): { script: string; ready: string; release(): void; waitReady(): Promise<void> } {
  const base = path.join(td.dir, `uc-gate${++gates}`);
  const [readyFile, go] = [`${base}.ready`, `${base}.go`];
  return {
    script: `touch ${readyFile}; while [ ! -e ${go} ]; do sleep 0.02; done`,
    ready: readyFile,
    release: () => writeFileSync(go, ''),
    waitReady: async () => {
      await waitUntil(`${path.basename(readyFile)}`, () => Promise.resolve(existsSync(readyFile) ? true : undefined), 15_000, 10);
    },
  };
}

/** Appends "<tag> <event>" lines to a log shared by the holders of one test. */
function journalIn(name: string): { file: string; line(tag: string, event: string): string; read(): string[] } {
  const file = path.join(td.dir, `${name}.log`);
  return {
    file,
    line: (tag, event) => `echo "${tag} ${event}" >> ${file}`,
    read: () => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean) : []),
  };
}

/** The most holders inside at once, from enter/leave lines. */
function peak(lines: string[]): number {
  let inside = 0;
  let most = 0;
  for (const l of lines) {
    if (l.endsWith(' enter')) most = Math.max(most, ++inside);
    if (l.endsWith(' leave')) inside--;
  }
  return most;
}

for (const backend of ['embedded', 'etcd'] as const) {
  describe(`FLoM's use cases with corral lock on the ${backend} store`, { concurrency: 6, timeout: 180_000 }, () => {
    const socket = td.socket();
    const cluster = backend === 'etcd' ? new EtcdLockCluster(1) : undefined;
    /** Where the lock lives: the private daemon on `socket`, or the cluster on etcd. */
    const where = (): string[] => (cluster ? ['--config', cluster.config] : ['-s', socket]);
    const lock = (args: string[]): ReturnType<LockTestDir['corral']> => td.corral(['lock', ...where(), ...args]);
    const start = (args: string[]): ReturnType<LockTestDir['start']> => td.start(['lock', ...where(), ...args]);
    const locks = (): ReturnType<LockTestDir['corral']> => td.corral(['locks', ...where(), '--json']);
    /** This backend's own file names: both runs share td.dir. */
    const journal = (name: string): ReturnType<typeof journalIn> => journalIn(`${backend}-${name}`);
    /** Whether `holder` is still waiting `ms` from now (it has not exited). */
    const stillWaiting = async (holder: ReturnType<LockTestDir['start']>, ms = 300): Promise<boolean> =>
      Promise.race([holder.exited.then(() => false), sleep(ms).then(() => true)]);
    before(async () => {
      if (cluster) await cluster.start();
      else assert.equal((await lock(['-d', '-1', '--', 'true'])).code, 0);
    });
    after(() => cluster?.stop());

    it('1: user command synchronization — `corral lock -- ls` waits for `corral lock -- sleep`', async () => {
      const g = gate();
      const j = journal('uc1');
      const first = start(['--', 'sh', '-c', `${j.line('sleep', 'enter')}; ${g.script}; ${j.line('sleep', 'leave')}`]);
      await g.waitReady();
      const second = start(['--', 'sh', '-c', j.line('ls', 'ran')]);
      assert.ok(await stillWaiting(second), 'ls waits while sleep holds the default resource');
      g.release();
      assert.equal((await first.exited).code, 0);
      assert.equal((await second.exited).code, 0);
      assert.deepEqual(j.read(), ['sleep enter', 'sleep leave', 'ls ran']);
    });

    it('2: multiple independent resources — -r R1 and -r R2 run in parallel, each name serializes', async () => {
      const g = gate();
      const r1 = start(['-r', 'R1', '--', 'sh', '-c', g.script]);
      await g.waitReady();
      assert.equal((await lock(['-r', 'R2', '-o', '0', '--', 'true'])).code, 0, 'R2 is free while R1 is held');
      assert.equal((await lock(['-r', 'R1', '-o', '0', '--', 'true'])).code, 98, 'R1 is not');
      g.release();
      assert.equal((await r1.exited).code, 0);
    });

    it("3: don't wait if busy — --resource-timeout=0 exits 98 at once", async () => {
      const g = gate();
      const holder = start(['--resource-name=UC3', '--', 'sh', '-c', g.script]);
      await g.waitReady();
      const r = await lock(['--resource-name=UC3', '--resource-timeout=0', '--', 'true']);
      assert.equal(r.code, 98);
      assert.match(r.stderr, /already locked, the lock cannot be obtained/);
      g.release();
      await holder.exited;
    });

    it('4: timeout — --resource-timeout=1000 gives up after a second with 98', async () => {
      const g = gate();
      const holder = start(['-r', 'UC4', '--', 'sh', '-c', g.script]);
      await g.waitReady();
      const t0 = performance.now();
      const r = await lock(['-r', 'UC4', '--resource-timeout=1000', '--', 'true']);
      const ms = performance.now() - t0;
      assert.equal(r.code, 98);
      assert.match(r.stderr, /timeout \(1000 milliseconds\) expired/);
      // The upper bound allows for a slow process start on a loaded machine; the deadline itself is 1 s.
      assert.ok(ms >= 1000 && ms < 10_000, `${ms} ms`);
      g.release();
      await holder.exited;
    });

    it('5: non-exclusive locking — PR readers share, EX waits; a waiting writer is not starved (corral is FIFO, flom is not)', async () => {
      const g1 = gate();
      const reader1 = start(['--lock-mode=PR', '-r', 'UC5', '--', 'sh', '-c', g1.script]);
      await g1.waitReady();
      assert.equal((await lock(['--lock-mode=ProtectedRead', '-r', 'UC5', '-o', '0', '--', 'true'])).code, 0, 'readers share');
      assert.equal((await lock(['-l', 'EX', '-r', 'UC5', '-o', '0', '--', 'true'])).code, 98, 'a writer does not get in');
      const j = journal('uc5');
      const writer = start(['-l', 'PW', '-r', 'UC5', '--', 'sh', '-c', j.line('PW', 'ran')]);
      await waitUntil('the writer in line', async () => {
        const r = await locks();
        return r.stdout.includes('"PW"') ? true : undefined;
      }, 15_000);
      // flom grants this reader at once (its test "Use case 5 (1/9)"): readers can starve the writer.
      const reader2 = start(['-l', 'PR', '-r', 'UC5', '--', 'sh', '-c', j.line('PR2', 'ran')]);
      assert.ok(await stillWaiting(reader2), 'the second reader queues behind the waiting writer');
      g1.release();
      await Promise.all([reader1.exited, writer.exited, reader2.exited]);
      assert.deepEqual(j.read(), ['PW ran', 'PR2 ran']);
    });

    // Use cases 6, 6b and 6c are about the private daemon itself: who shares its socket, which
    // runtime directory finds it, a shared socket's daemon restarted on its store. A cluster on etcd
    // has no such daemon (its agents are started by `corral local up`/systemd), so they run on the
    // embedded backend only; so do the daemon's -d lifespan and -x/-X (lock.test.ts). Every use case
    // about lock semantics (kinds, modes, timeouts, exit codes, values, fencing) runs on both.
    if (backend === 'embedded') {
      it('6: multi-user synchronization — callers with different runtime directories share a lock on one --socket-name', async () => {
        const shared = td.socket();
        const userA = { CORRAL_RUNTIME_DIR: path.join(td.runtime, 'corral') };
        const userB = { CORRAL_RUNTIME_DIR: path.join(td.dir, 'run-b') };
        const g = gate();
        const a = td.start(['lock', `--socket-name=${shared}`, '-d', '2000', '--', 'sh', '-c', g.script], { env: userA });
        await g.waitReady();
        const b = await td.corral(['lock', `--socket-name=${shared}`, '-o', '0', '--', 'true'], { env: userB });
        assert.equal(b.code, 98, 'the second user sees the first one’s lock');
        // An explicit socket is created as the umask allows (flom's use case: `umask 0` for everyone).
        assert.equal(statSync(shared).mode & 0o777, 0o666 & ~process.umask());
        g.release();
        await a.exited;
      });

      it('6b: the daemon of a shared socket dies under a holder: a caller from another runtime directory restarts it on the same store and is not let in', async () => {
        const shared = td.socket();
        const g = gate();
        const a = td.start(['lock', `--socket-name=${shared}`, '-d', '-1', '--', 'sh', '-c', g.script], { env: { CORRAL_RUNTIME_DIR: path.join(td.dir, 'run-a') } });
        await g.waitReady();
        process.kill(await td.daemonPid(shared), 'SIGKILL');
        const b = await td.corral(['lock', `--socket-name=${shared}`, '-o', '0', '--', 'true'], { env: { CORRAL_RUNTIME_DIR: path.join(td.dir, 'run-b') } });
        assert.equal(b.code, 98, `the restarted daemon still knows the first holder: ${b.stderr}`);
        g.release();
        await a.exited;
      });

      it('6c: the default socket does not depend on XDG_RUNTIME_DIR: a cron job and a login shell of one user exclude each other', async () => {
        const g = gate();
        const a = td.start(['lock', '-r', 'uc6c', '--', 'sh', '-c', g.script], { env: { XDG_RUNTIME_DIR: path.join(td.dir, 'xdg-login') } });
        await g.waitReady();
        const cron = await td.corral(['lock', '-r', 'uc6c', '-o', '0', '--', 'true'], { env: { XDG_RUNTIME_DIR: '' } });
        assert.equal(cron.code, 98, cron.stderr);
        g.release();
        assert.equal((await a.exited).code, 0);
      });
    }

    it('10: at most N parallel processes — -r ping[2] -q 1', async () => {
      const j = journal('uc10');
      const holders = Array.from({ length: 5 }, (_, i) => start(['-r', 'ping[2]', '-q', '1', '--', 'sh', '-c', `${j.line(`p${i}`, 'enter')}; sleep 0.3; ${j.line(`p${i}`, 'leave')}`]));
      for (const h of holders) assert.equal((await h.exited).code, 0);
      assert.equal(peak(j.read()), 2);
      // foo[2] and foo[3] are two resources.
      const g = gate();
      const two = start(['-r', 'foo[2]', '-q', '2', '--', 'sh', '-c', g.script]);
      await g.waitReady();
      assert.equal((await lock(['-r', 'foo[3]', '-q', '3', '-o', '0', '--', 'true'])).code, 0);
      assert.equal((await lock(['-r', 'foo[2]', '-o', '0', '--', 'true'])).code, 98);
      g.release();
      await two.exited;
    });

    it('11: one writer, at most N readers — nested: `corral lock -l CR -- corral lock -r rd[2] -- reader`', async () => {
      const j = journal('uc11');
      // Readers hold until the gate opens, so that two are inside together however slowly the
      // nested corral lock processes start on a loaded machine.
      const g = gate();
      const nested = (i: number): string[] => ['-l', 'CR', '-r', 'UC11', '--', CORRAL, 'lock', ...where(), '-r', 'rd[2]', '--', 'sh', '-c', `${j.line(`r${i}`, 'enter')}; ${g.script}; sleep 0.1; ${j.line(`r${i}`, 'leave')}`];
      // A writer takes PW (compatible with CR readers, exclusive among writers).
      const w = (i: number): string[] => ['-l', 'PW', '-r', 'UC11', '--', 'sh', '-c', `${j.line(`w${i}`, 'enter')}; sleep 0.3; ${j.line(`w${i}`, 'leave')}`];
      const readers = Array.from({ length: 4 }, (_, i) => start(nested(i)));
      const writers = [start(w(0)), start(w(1))];
      const readersIn = (): number => peak(j.read().filter((l) => l.startsWith('r')));
      await waitUntil('two readers inside', () => Promise.resolve(readersIn() >= 2 ? true : undefined), 30_000, 20);
      await sleep(300);
      assert.equal(readersIn(), 2, 'no third reader while two hold rd[2]');
      g.release();
      for (const h of [...readers, ...writers]) assert.equal((await h.exited).code, 0, h.stderr());
      const lines = j.read();
      assert.equal(peak(lines.filter((l) => l.startsWith('r'))), 2, 'at most two readers at once');
      assert.equal(peak(lines.filter((l) => l.startsWith('w'))), 1, 'one writer at a time');
    });

    it('12: resource set — concurrent holders get red, green, blue; kept state goes round robin; forgotten, it starts over', async () => {
      const gates3 = [gate(), gate(), gate()];
      const holders = gates3.map((g) => start(['-r', 'red.green.blue', '--', 'sh', '-c', `echo "$CORRAL_LOCK_VALUE" > ${g.ready}.value; ${g.script}`]));
      for (const g of gates3) await g.waitReady();
      const values = gates3.map((g) => readFileSync(`${g.ready}.value`, 'utf8').trim()).sort();
      assert.deepEqual(values, ['blue', 'green', 'red']);
      for (const g of gates3) g.release();
      await Promise.all(holders.map((h) => h.exited));
      // With an idle lifespan the index survives between holders (flom keeps it while its locker
      // lives). Long enough that a loaded machine's slow process starts do not outlast it.
      const seq: string[] = [];
      for (let i = 0; i < 4; i++) seq.push((await lock(['-r', 'one.two.three', '-i', '10000', '--', 'echo'])).stdout.trim());
      assert.deepEqual(seq, ['one', 'two', 'three', 'one']);
      // Forgotten once the idle lifespan has passed (flom: after its daemon exits): it starts over.
      assert.equal((await lock(['-r', 'uno.dos.tres', '-i', '1000', '--', 'echo'])).stdout.trim(), 'uno');
      await waitUntil('uno.dos.tres to be forgotten', async () => {
        const listing = JSON.parse((await locks()).stdout) as { resources: { name: string }[] };
        return listing.resources.some((r) => r.name === 'uno.dos.tres') ? undefined : true;
      }, 15_000, 100);
      assert.equal((await lock(['-r', 'uno.dos.tres', '--', 'echo'])).stdout.trim(), 'uno', 'forgotten once the idle lifespan has passed');
    });

    it('13: passing the set element as an argument — the script gets it last; a 4th requester with -o 0 fails', async () => {
      const script = path.join(td.dir, `${backend}-uc13.sh`);
      writeFileSync(script, `#!/bin/sh\necho "$1 $2" > "$0.$2"\nwhile [ ! -e "$0.go" ]; do sleep 0.02; done\n`, { mode: 0o755 });
      const holders = [0, 1, 2].map(() => start(['-r', 'alpha.beta.gamma', '--', script, 'first-arg']));
      await waitUntil('three elements handed out', () => Promise.resolve(['alpha', 'beta', 'gamma'].every((e) => existsSync(`${script}.${e}`)) ? true : undefined), 15_000);
      assert.equal(readFileSync(`${script}.beta`, 'utf8'), 'first-arg beta\n');
      assert.equal((await lock(['-r', 'alpha.beta.gamma', '-o', '0', '--', script])).code, 98);
      writeFileSync(`${script}.go`, '');
      for (const h of holders) assert.equal((await h.exited).code, 0);
    });

    it('14: hierarchical resources for files — any path; the same file serializes, another does not', async () => {
      const g = gate();
      const holder = start(['-r', '/var/data/report 2024 (final).txt', '--', 'sh', '-c', g.script]);
      await g.waitReady();
      assert.equal((await lock(['-r', '/var/data/report 2024 (final).txt', '-o', '0', '--', 'true'])).code, 98);
      assert.equal((await lock(['-r', '/var/data/other.txt', '-o', '0', '--', 'true'])).code, 0);
      g.release();
      await holder.exited;
    });

    it('15: hierarchical locks — ancestors and descendants conflict, siblings do not', async () => {
      const g = gate();
      const reader = start(['-l', 'PR', '-r', '/foo/bar', '--', 'sh', '-c', g.script]);
      await g.waitReady();
      const attempt = async (mode: string, res: string): Promise<number | null> => (await lock(['-l', mode, '-r', res, '-o', '0', '--', 'true'])).code;
      assert.equal(await attempt('EX', '/foo/blue/apple'), 0, 'a sibling branch is free');
      assert.equal(await attempt('EX', '/foo/bar/apple'), 98, 'a descendant conflicts');
      assert.equal(await attempt('PR', '/foo'), 0, 'a PR backup of the ancestor shares with PR');
      assert.equal(await attempt('EX', '/foo'), 98, 'an EX on the ancestor conflicts');
      assert.equal(await attempt('PR', '/foo/bar'), 0);
      g.release();
      await reader.exited;
    });

    it('16: wait for a task not yet started — --resource-create=no waits until someone creates the resource', async () => {
      const j = journal('uc16');
      const consumer = start(['-r', 'UC16', '--resource-create=no', '--', 'sh', '-c', j.line('consumer', 'ran')]);
      assert.ok(await stillWaiting(consumer, 500), 'waits for the resource to exist');
      assert.equal((await lock(['-r', 'UC16', '-e', 'no', '-o', '0', '--', 'true'])).code, 96, 'one that may not wait: 96');
      const producer = await lock(['-r', 'UC16', '--', 'sh', '-c', `${j.line('producer', 'ran')}; sleep 0.2`]);
      assert.equal(producer.code, 0, producer.stderr);
      assert.equal((await consumer.exited).code, 0, consumer.stderr());
      assert.deepEqual(j.read(), ['producer ran', 'consumer ran']);
    });

    it('17: long-term resources — --resource-idle-lifespan keeps the resource for a later -e no consumer', async () => {
      assert.equal((await lock(['-r', 'UC17', '--resource-idle-lifespan=5000', '--', 'true'])).code, 0);
      const released = performance.now();
      const again = await lock(['-r', 'UC17', '-e', 'no', '-o', '0', '--', 'true']);
      const kept = performance.now();
      assert.equal(again.code, 0, `kept within its lifespan (asked ${Math.round(kept - released)} ms after the release): ${again.stderr}`);
      const lastUse = performance.now();
      assert.ok(kept - released < 5000);
      // Kept at least 5 s after its last use, then forgotten (watched without using it: a use would
      // keep it longer). Lease expiry is in whole seconds.
      await waitUntil('UC17 to be forgotten', async () => {
        const listing = JSON.parse((await locks()).stdout) as { resources: { name: string }[] };
        return listing.resources.some((r) => r.name === 'UC17') ? undefined : true;
      }, 15_000, 200);
      assert.ok(performance.now() - lastUse >= 4500, `forgotten ${performance.now() - lastUse} ms after its last use`);
      assert.equal((await lock(['-r', 'UC17', '-e', 'no', '-o', '0', '--', 'true'])).code, 96, 'gone after it');
    });

    it('18: sequences — _s_ values are consumed, _S_ values of failed commands are reused (flom’s own test)', async () => {
      const commands = ['true', 'true', 'true', 'echo', 'true', 'true', 'echo', 'false', 'echo', 'false', 'echo', 'true', 'echo'];
      const run = async (resource: string): Promise<string> => {
        let out = '';
        // The idle lifespan keeps the counter between runs, however slowly each corral lock starts.
        for (const c of commands) out += (await lock(['-r', resource, '-i', '10000', '--', c])).stdout;
        return out.trim().split('\n').join(' ');
      };
      const [transactional, plain] = await Promise.all([run('_S_uca[1]'), run('_s_ucb[1]')]);
      assert.equal(transactional, '4 7 8 9 11');
      assert.equal(plain, '4 7 9 11 13');
      // Multi-slot: three at once get three distinct numbers.
      const g = [gate(), gate(), gate()];
      const holders = g.map((x) => start(['-r', '_s_multi[3]', '--', 'sh', '-c', `echo $1 > ${x.ready}.n; ${x.script}`, 'sh']));
      for (const x of g) await x.waitReady();
      assert.deepEqual(g.map((x) => readFileSync(`${x.ready}.n`, 'utf8').trim()).sort(), ['1', '2', '3']);
      for (const x of g) x.release();
      await Promise.all(holders.map((h) => h.exited));
    });

    it('19: distinct timestamps — _t_FORMAT[N] with #f fractions never hands out one value twice', async () => {
      const runs = await Promise.all(Array.from({ length: 6 }, () => lock(['-r', '_t_%H:%M:%S#ff[2]', '--', 'echo'])));
      const values = runs.map((r) => r.stdout.trim());
      for (const r of runs) assert.equal(r.code, 0, r.stderr);
      for (const v of values) assert.match(v, /^\d\d:\d\d:\d\d\.\d\d$/);
      assert.equal(new Set(values).size, values.length, values.join(' '));
      const bad = await lock(['-r', '_t_%d[1]', '--', 'echo']);
      assert.equal(bad.code, 99, 'a format that changes less than hourly is refused');
    });
  });
}
