// Cluster::Init's defects, fixed, and what corral adds, through the real `corral clinit`: halts
// from every group state, the timed stop ladder to whole process groups, invalid cltabs refused
// with FILE:LINE while the configuration in force stays, graceful stops of deleted and edited
// entries, `off` without a spin, clients that cannot wedge the daemon, a SIGKILLed daemon
// leaving no process behind, per-process logs with rotation.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runCorral } from '../testkit/cli.js';
import { alive, ClinitFixture, sleep, waitUntil, withClinit } from './fixtures.js';

const LOOP_INT = (file: string): string => `trap 'echo INT >> t/${file}; exit 0' INT; while :; do sleep 0.05; done`;

describe('clinit: fixed defects and robustness', { concurrency: 4 }, () => {
  it('halts from every group state (PASSED and FAILED included), gracefully, and exits only when the last process has stopped', async () => {
    await withClinit(
      `gstart:st1:1:wait:${LOOP_INT('gstart')}
gdone:dn1:1:respawn:${LOOP_INT('gdone')}
gpass:ps1:1:test:true
gfail:fl1:1:test:false
gfail:fl2:1:respawn:${LOOP_INT('gfail')}
gstop:sp1:1:respawn:trap 'echo INT >> t/gstop' INT; while :; do sleep 0.05; done
gconf:cf1:1:once:true
`,
      async (f) => {
        const daemon = await f.start();
        // CHECKING and DUMPING are passed through within one transition (the verdict and the
        // clean-up need no waiting), so no halt can find a group in them.
        await Promise.all(['gstart', 'gdone', 'gpass', 'gfail', 'gstop'].map((g) => f.tell(g, '1')));
        await f.waitFor('gstart 1 STARTING');
        await f.waitFor('gdone 1 DONE');
        await f.waitFor('gpass 1 PASSED');
        await f.waitFor('gfail 1 FAILED');
        await f.waitFor('gstop 1 DONE');
        await f.tell('gstop', '2');
        await f.waitFor('gstop 2 STOPPING'); // sp1 ignores SIGINT: held until SIGTERM at 1.5 s
        const t0 = performance.now();
        const k = await f.clinit(['-k', '-v']);
        assert.equal(k.code, 0);
        assert.match(k.stdout, /^gdone 1 (HALTING|CONFIGURED)\n/m, '-v prints the status after the command (the halt has begun)');
        assert.doesNotMatch(k.stdout, /gconf/, 'a group never told has no status line');
        await f.waitFor('gstop 2 HALTING', 2_000);
        const again = await f.clinit(['-k']);
        assert.equal(again.code, 0, 'a second -k while HALTING is harmless');
        assert.equal(await daemon.exited, 0);
        assert.ok(performance.now() - t0 >= 700, 'the daemon waited for the process that needed SIGTERM');
        for (const g of ['gstart', 'gdone', 'gfail', 'gstop']) assert.match(f.read(`t/${g}`), /^INT\n/, `${g}: stopped with SIGINT first`);
        assert.equal(existsSync(f.clstat), false);
        assert.deepEqual(f.processes(), [], 'nothing left running (the guard included)');
      },
      [':::stop:0.5,1', ':::stop:gstop:1.5,2.5'],
    );
  });

  it('stops a process group with SIGINT, SIGTERM after the TERM delay, SIGKILL after the KILL delay', async () => {
    await withClinit(
      `esc:e1:1:respawn:trap 'echo INT $(date +%s%N) >> t/sig' INT; trap 'echo TERM $(date +%s%N) >> t/sig' TERM; echo $$ > t/pid; while :; do sleep 0.05; done
esc:e2:1:once:sh -c 'trap "echo INT >> t/inner; exit 0" INT; while :; do sleep 0.05; done'; echo never
`,
      async (f) => {
        await f.start();
        await f.tell('esc', '1');
        await f.waitFor('esc 1 DONE');
        const pid = await f.pidFrom('t/pid');
        await waitUntil('the inner shell', () => f.processes().length >= 5);
        await f.tell('esc', '2');
        let diedAt = 0;
        await waitUntil('the leader to die', () => !alive(pid) && (diedAt = Date.now()) > 0, 5_000, 10);
        const sig = Object.fromEntries(
          f
            .read('t/sig')
            .trim()
            .split('\n')
            .map((l) => l.split(' '))
            .map(([name, ns]) => [name, Number(BigInt(ns ?? '0') / 1_000_000n)]),
        ) as Record<string, number>;
        const { INT, TERM } = sig;
        assert.ok(INT && TERM, `both signals recorded: ${f.read('t/sig')}`);
        assert.ok(TERM - INT >= 550 && TERM - INT < 1_000, `SIGTERM ${TERM - INT} ms after SIGINT (0.6 s configured)`);
        assert.ok(diedAt - INT >= 1_150 && diedAt - INT < 1_900, `SIGKILL ${diedAt - INT} ms after SIGINT (1.2 s configured)`);
        await f.waitFor('esc 2 DONE');
        await waitUntil('the process the leader started to get the SIGINT too (the whole group is signalled)', () => f.read('t/inner') === 'INT\n');
      },
      [':::stop:0.6,1.2'],
    );
  });

  it('refuses an invalid cltab with FILE:LINE: at start (no daemon), and while running (the configuration in force stays)', async () => {
    await withClinit('g:t1:1:respawn:/bin/echo $$ > t/pid; exec sleep 30\n', async (f) => {
      const dup = path.join(f.dir, 'dup.cltab');
      writeFileSync(dup, `:::socket:${f.dir}/dup.s\n:::clstat:${f.dir}/dupstat\ng:a:1:once:true\ng:a:2:once:true\n`);
      const r = await runCorral(['clinit', '-d', '-c', dup]);
      assert.equal(r.code, 78);
      assert.equal(r.stderr, `corral clinit: ${dup}:4: entry has duplicate tag: a (first used at line 3; tags are unique across the file) [CONFIG_INVALID]\n`);
      assert.equal(existsSync(`${f.dir}/dup.s`), false, 'no socket: the daemon did not start');

      await f.start();
      await f.tell('g', '1');
      await f.waitFor('g 1 DONE');
      const pid = await f.pidFrom('t/pid');
      for (const [body, line, what] of [
        ['g:t1:1:respawn:/bin/echo $$ > t/pid; exec sleep 30\ng:t2:1:respwan:true\n', 6, /invalid mode: 'respwan'/],
        ['g:t1:1:respawn:/bin/echo $$ > t/pid; exec sleep 30\nthis line is not an entry\n', 6, /expected group:tag:levels:mode:command, found 1 field/],
        ['g:t1:1:respawn:/bin/echo $$ > t/pid; exec sleep 30\nh:t1:1:once:true\n', 6, /entry has duplicate tag: t1 \(first used at line 5/],
      ] as const) {
        f.writeCltab(body);
        for (const args of [['g', '2'], []]) {
          const refused = await f.clinit(args);
          assert.equal(refused.code, 78, `clinit ${args.join(' ')}: ${refused.stderr}`);
          assert.match(refused.stderr, new RegExp(`^corral clinit: ${f.cltab}:${line}: ${what.source}.*\\[CONFIG_INVALID\\]\\n$`));
        }
        assert.equal(f.line('g'), 'g 1 DONE', 'the tell was refused');
        assert.ok(alive(pid), 'the configuration in force stays');
      }
      f.writeCltab('g:t1:1:respawn:/bin/echo $$ > t/pid; exec sleep 30\n');
      await f.tell('g', '2');
      await f.waitFor('g 2 DONE');
      assert.ok(!alive(pid));
    });
  });

  it('a group deleted from the cltab is stopped with the ladder (SIGINT first, to its whole process group) and leaves clstat', async () => {
    await withClinit(
      `del:d1:1:respawn:sh -c '${LOOP_INT('d1').replace(/'/g, '"')}'; echo never
keep:k1:1:respawn:/bin/echo $$ > t/keep; exec sleep 30
`,
      async (f) => {
        await f.start();
        await f.tell('del', '1');
        await f.tell('keep', '1');
        await f.waitFor('del 1 DONE');
        const keep = await f.pidFrom('t/keep');
        f.writeCltab('keep:k1:1:respawn:/bin/echo $$ > t/keep; exec sleep 30\n');
        const reread = await f.clinit([]);
        assert.equal(reread.code, 0);
        assert.equal(reread.stdout, '', 'a re-read prints nothing');
        await waitUntil('the deleted group to leave clstat', () => f.line('del') === undefined);
        await waitUntil('SIGINT (not SIGKILL) to reach the process inside the group', () => f.read('t/d1') === 'INT\n');
        assert.ok(alive(keep), 'the other group is untouched');
        assert.equal(f.line('keep'), 'keep 1 DONE');
        const gone = await f.clinit(['del', '1']);
        assert.equal(gone.stdout, 'no such group: del\n');
      },
    );
  });

  it('a re-read applies edits: an edited entry is stopped gracefully and started anew, an added one starts, unchanged ones keep running', async () => {
    const edit = (version: string, extra = ''): string =>
      `ed:e1:1:respawn:trap 'echo INT-${version} >> t/e1; exit 0' INT; echo ${version} >> t/e1; while :; do sleep 0.05; done
ed:keep:1:respawn:/bin/echo $$ > t/keep; exec sleep 30
${extra}`;
    await withClinit(edit('v1'), async (f) => {
      await f.start();
      await f.tell('ed', '1');
      await f.waitFor('ed 1 DONE');
      const keep = await f.pidFrom('t/keep');
      await waitUntil('v1', () => f.read('t/e1') === 'v1\n');
      f.writeCltab(edit('v2', 'ed:added:1:once:/bin/echo added > t/added\n'));
      assert.equal((await f.clinit([])).code, 0);
      await waitUntil('v2 to replace v1', () => f.read('t/e1') === 'v1\nINT-v1\nv2\n');
      await waitUntil('the added entry', () => f.read('t/added') === 'added\n');
      await f.waitFor('ed 1 DONE');
      assert.ok(alive(keep), 'the unchanged entry kept running');
      assert.equal(f.read('t/keep').trim(), String(keep));
    });
  });

  it('48off: off is satisfied without running or spinning; changing an entry to off stops its process gracefully', async () => {
    const tab = (mode: string): string => `offgrp:o1:1:${mode}:${LOOP_INT('o1')}
offgrp:o2:1:off:/bin/echo never > t/never
`;
    await withClinit(tab('once'), async (f) => {
      await f.start();
      await f.tell('offgrp', '1');
      await f.waitFor('offgrp 1 DONE');
      await waitUntil('o1 to run', () => f.processes().length >= 3);
      const cpu0 = f.daemonCpuSeconds();
      await sleep(1_000);
      assert.ok(f.daemonCpuSeconds() - cpu0 < 0.15, 'the daemon idles (0.215 spun on an off entry)');
      assert.equal(f.read('t/never'), '');
      f.writeCltab(tab('off'));
      await f.tell('offgrp', '1');
      await waitUntil('o1 stopped with SIGINT', () => f.read('t/o1') === 'INT\n');
      await f.waitFor('offgrp 1 DONE');
      const cpu1 = f.daemonCpuSeconds();
      await sleep(500);
      assert.ok(f.daemonCpuSeconds() - cpu1 < 0.1);
    });
  });

  it('no client wedges the daemon: silent, garbage, slow and oversized requests while others are served', async () => {
    await withClinit('g:t1:1:once:true\ng:t2:2:once:true\n', async (f) => {
      await f.start();
      const open = (): Socket => connect(f.socket).on('error', () => undefined).resume();
      const silent = Array.from({ length: 20 }, open);
      const garbage = open();
      garbage.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x13garbage');
      const slow = open();
      slow.write('{"op":"te');
      const t0 = performance.now();
      await f.tell('g', '1');
      await f.waitFor('g 1 DONE');
      const v = await f.clinit(['-v']);
      assert.equal(v.stdout, 'g 1 DONE\n');
      assert.ok(performance.now() - t0 < 4_000, 'served while the others hang');
      const ask = (payload: string): Promise<string> =>
        new Promise((resolve) => {
          const s = open();
          let reply = '';
          s.on('data', (d: Buffer) => (reply += d.toString()));
          s.on('close', () => resolve(reply));
          s.end(payload);
        });
      assert.match(await ask('{not json\n'), /"code":"BAD_REQUEST".*not JSON/);
      assert.match(await ask('{"op":"tell","group":0,"level":["x"]}\n'), /"code":"BAD_REQUEST","message":"result unknown/);
      assert.match(await ask('x'.repeat(70_000)), /"code":"TOO_LARGE"/);
      assert.match(await ask('{"op":"tell","group":"nosuch","level":"1"}'), /"code":"NOT_FOUND","message":"no such group: nosuch"/);
      await waitUntil('the hanging connections to be dropped at their deadline', () => [...silent, garbage, slow].every((s) => s.destroyed), 7_000, 100);
      await f.tell('g', '2');
      await f.waitFor('g 2 DONE');
    });
  });

  it('a SIGKILLed daemon leaves no process running: its guard stops every group with the ladder', async () => {
    await withClinit(
      `k:k1:1:respawn:trap 'echo INT >> t/k1; exit 0' INT; echo $$ > t/k1.pid; while :; do sleep 0.05; done
k:k2:1:once:sh -c '${LOOP_INT('k2').replace(/'/g, '"')}'; echo never
k:k3:1:wait:trap '' INT; echo $$ > t/k3.pid; exec sleep 30
`,
      async (f) => {
        const daemon = await f.start();
        await f.tell('k', '1');
        await f.waitFor('k 1 STARTING');
        const k3 = await f.pidFrom('t/k3.pid');
        await waitUntil('every process up', () => f.processes().length >= 6);
        assert.ok(
          f.processes().some((p) => readCmd(p).includes('guard.js')),
          'the guard runs beside the daemon',
        );
        daemon.child.kill('SIGKILL');
        await daemon.exited;
        const t0 = performance.now();
        await waitUntil('k3 (SIGINT ignored) to end', () => !alive(k3), 5_000, 10);
        assert.ok(performance.now() - t0 >= 350, 'k3 ignores SIGINT and needed the SIGTERM at 0.5 s');
        await waitUntil('every process, the guard too, to end', () => f.processes().length === 0, 5_000);
        assert.equal(f.read('t/k1'), 'INT\n');
        assert.equal(f.read('t/k2'), 'INT\n');
      },
    );
  });

  it("writes each process's stdout and stderr to LOGDIR/GROUP/TAG.log, rotated by size", async () => {
    await withClinit(
      `lg:talk:1:wait:i=0; while [ $i -lt 300 ]; do echo "line $i out"; echo "line $i err" >&2; i=$((i+1)); done
lg:quiet:1:once:echo hello; echo oops >&2
`,
      async (f) => {
        await f.start();
        await f.tell('lg', '1');
        await f.waitFor('lg 1 DONE');
        const dir = path.join(f.logDir, 'lg');
        await waitUntil('quiet.log', () => f.read('log/lg/quiet.log').split('\n').length === 3);
        assert.deepEqual(f.read('log/lg/quiet.log').split('\n').sort(), ['', 'hello', 'oops']);
        assert.deepEqual(readdirSync(dir).sort(), ['quiet.log', 'talk.log', 'talk.log.1', 'talk.log.2'], 'keep 2 rotated files');
        for (const name of ['talk.log.1', 'talk.log.2']) assert.ok(statSync(path.join(dir, name)).size <= 2048, `${name} within the size`);
        const all = ['talk.log.2', 'talk.log.1', 'talk.log'].map((n) => f.read(`log/lg/${n}`)).join('');
        assert.match(all, /^line 299 out$/m);
        assert.match(all, /^line 299 err$/m);
        assert.doesNotMatch(all, /^line 0 out$/m, 'the oldest output was rotated away');
      },
      [':::stop:0.5,1', ':::logrotate:2k,2'],
    );
  });

  it('SIGHUP re-reads, a second daemon cannot take the socket over, SIGTERM halts gracefully; help documents the exit codes', async () => {
    const f = new ClinitFixture(`g:t1:1:respawn:${LOOP_INT('int')}\n`);
    try {
      const daemon = await f.start();
      const second = await runCorral(['clinit', '-d', '-c', f.cltab], { cwd: f.dir });
      assert.equal(second.code, 1);
      assert.match(second.stderr, /already listening on .*clinit\.s.*\[ALREADY_RUNNING\]/);
      await f.tell('g', '1');
      await f.waitFor('g 1 DONE');
      f.writeCltab('h:h1:1:respawn:exec sleep 30\n');
      daemon.child.kill('SIGHUP');
      await waitUntil('g to be removed after SIGHUP', () => f.line('g') === undefined);
      assert.equal(f.read('t/int'), 'INT\n');
      await f.tell('h', '1');
      await f.waitFor('h 1 DONE');
      daemon.child.kill('SIGTERM');
      assert.equal(await daemon.exited, 0);
      assert.equal(existsSync(f.clstat), false);
      assert.equal(existsSync(f.socket), false);
      const help = await runCorral(['help', 'clinit']);
      assert.match(help.stdout, /^Usage: corral clinit \[-d\] \[-k\] \[-v\] \[-c CLTAB\] \[-s SOCKET\] \[GROUP\] \[LEVEL\]/);
      assert.match(help.stdout, /Exit codes:\n(.*\n)*\s+69 {2}no daemon answers/);
    } finally {
      await f.close();
    }
  });
});

function readCmd(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}
