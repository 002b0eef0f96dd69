// Cluster::Init's own test suite (t/*.t of 0.215), scenario by scenario, through the real
// `corral clinit`: a daemon per test in a temporary directory, its commands writing to t/FILE as
// the originals did, with the sleeps shortened. Each test checks at the end that every process
// the daemon started is gone.

import assert from 'node:assert/strict';
import os from 'node:os';
import { describe, it } from 'node:test';
import { alive, sleep, waitUntil, withClinit } from './fixtures.js';

const HOST = os.hostname().split('.')[0] as string;

describe('clinit: the scenarios of Cluster::Init’s test suite', { concurrency: 4 }, () => {
  it('70clinit: the round trip: -d, GROUP LEVEL, LEVEL for this host, -v, no such group, -k, clstat removed', async () => {
    await withClinit(
      `pidgrp:pid1:1:respawn:/bin/echo $$ > t/out; exec sleep 30
${HOST}:host1:up:once:echo up > t/host
`,
      async (f) => {
        const daemon = await f.start();
        await f.tell('pidgrp', '1');
        await waitUntil('clinit -v to show pidgrp 1 DONE', () => f.line('pidgrp') === 'pidgrp 1 DONE');
        const v = await f.clinit(['-v']);
        assert.equal(v.code, 0);
        assert.equal(v.stdout, 'pidgrp 1 DONE\n', 'no arguments re-reads and prints nothing; -v prints GROUP LEVEL STATE');
        const host = await f.clinit(['up']);
        assert.equal(host.stdout, 'level transition started\n', 'one argument: the group named like this host');
        await f.waitFor(`${HOST} up DONE`);
        await waitUntil('the once entry of this host', () => f.read('t/host') === 'up\n');
        const none = await f.clinit(['nosuch', '1']);
        assert.equal(none.stdout, 'no such group: nosuch\n');
        assert.equal(none.code, 1);
        const pid = await f.pidFrom('t/out');
        assert.ok(alive(pid));
        const k = await f.clinit(['-k']);
        assert.equal(k.code, 0);
        assert.equal(k.stdout, '', '-k prints nothing without -v');
        assert.equal(await daemon.exited, 0);
        assert.deepEqual(f.lines(), [], 'clstat removed at shutdown');
        assert.ok(!alive(pid), 'the daemon exits only after its processes');
        const after = await f.clinit(['pidgrp', '1']);
        assert.equal(after.code, 69);
        assert.match(after.stderr, /no clinit daemon answers on .*clinit\.s.*\[UNAVAILABLE\]/);
      },
    );
  });

  it('20wait: a wait entry blocks the entries after it; a re-tell of the current level does not re-run finished entries', async () => {
    await withClinit(
      `hellogrp:hello1:1:wait:/bin/echo "hello world!" > t/out
hellogrp:hello3:3:wait:/bin/sleep 1; cat /dev/null > t/out
hellogrp:hello3b:3:once:/bin/echo after >> t/after
`,
      async (f) => {
        await f.start();
        await f.tell('hellogrp', '1');
        await f.waitFor('hellogrp 1 DONE');
        assert.equal(f.read('t/out'), 'hello world!\n');
        await (await import('node:fs/promises')).writeFile(f.path('t/out'), '');
        await f.tell('hellogrp', '1');
        await f.waitFor('hellogrp 1 DONE');
        await sleep(200);
        assert.equal(f.read('t/out'), '', 'the finished wait entry was not run again');
        const t0 = performance.now();
        await f.tell('hellogrp', '3');
        await f.waitFor('hellogrp 3 STARTING');
        assert.equal(f.read('t/after'), '', 'the once entry waits behind the running wait entry');
        await f.waitFor('hellogrp 3 DONE', 5_000);
        assert.ok(performance.now() - t0 >= 950, 'DONE only once the wait entry exited');
        await waitUntil('the once entry after it', () => f.read('t/after') === 'after\n');
      },
    );
  });

  it('hello4: a once entry does not block, a wait entry does; the group is DONE when the wait entry ends', async () => {
    await withClinit(
      `hellogrp:hello4:4:once:/bin/echo 1 > t/out;/bin/sleep 1.5;/bin/echo 3 >> t/out
hellogrp:hello4a:4:wait:/bin/sleep 0.5; /bin/echo 2 >> t/out
`,
      async (f) => {
        await f.start();
        const t0 = performance.now();
        await f.tell('hellogrp', '4');
        await f.waitFor('hellogrp 4 DONE');
        assert.ok(performance.now() - t0 >= 450, 'DONE only after the wait entry (0.5 s)');
        assert.equal(f.read('t/out'), '1\n2\n', 'DONE when the wait entry ended, while the once entry still runs');
        await waitUntil('the once entry to finish', () => f.read('t/out') === '1\n2\n3\n', 5_000);
      },
    );
  });

  it('60multichar: comma lists, one long label with a trailing comma, words as letters; an entry in both levels keeps running', async () => {
    await withClinit(
      `hellogrp:hellolong:long1,long2,5:wait:/bin/echo long >> t/out
hellogrp:hellolong3:long3,:wait:/bin/echo long3 >> t/out
hellogrp:hellostart:start:wait:/bin/echo start >> t/out
foogrp:foo1:12:once:/bin/echo foo1start >> t/foo; echo $$ > t/foo.pid; sleep 1; /bin/echo foo1end >> t/foo
foogrp:foo3:3:once:/bin/echo foo3 >> t/foo
`,
      async (f) => {
        await f.start();
        await f.tell('hellogrp', 'long1');
        await f.waitFor('hellogrp long1 DONE');
        assert.equal(f.read('t/out'), 'long\n');
        await f.tell('hellogrp', 'long2');
        await f.waitFor('hellogrp long2 DONE');
        assert.equal(f.read('t/out'), 'long\n', 'hellolong has long1 and long2: kept, not run again');
        await f.tell('hellogrp', 'long3');
        await f.waitFor('hellogrp long3 DONE');
        assert.equal(f.read('t/out'), 'long\nlong3\n');
        await f.tell('hellogrp', 's');
        await f.waitFor('hellogrp s DONE');
        assert.equal(f.read('t/out'), 'long\nlong3\nstart\n', "'start' without a comma is also the letters s, t, a, r");
        await f.tell('hellogrp', '99');
        await f.waitFor('hellogrp 99 DONE', 5_000);

        await f.tell('foogrp', '1');
        const pid = await f.pidFrom('t/foo.pid');
        await f.tell('foogrp', '2');
        await f.waitFor('foogrp 2 DONE');
        assert.ok(alive(pid), 'foo1 (levels 12) keeps running from level 1 to level 2');
        await waitUntil('foo1 to finish', () => f.read('t/foo') === 'foo1start\nfoo1end\n');
        await f.tell('foogrp', '3');
        await f.waitFor('foogrp 3 DONE');
        await waitUntil('foo3', () => f.read('t/foo').endsWith('foo3\n'));
      },
    );
  });

  it('pidgrp: a respawn entry killed with kill -9 is started again', async () => {
    await withClinit('pidgrp:pid1:1:respawn:/bin/echo $$ > t/out; exec sleep 30\n', async (f) => {
      await f.start();
      await f.tell('pidgrp', '1');
      const first = await f.pidFrom('t/out');
      process.kill(first, 'SIGKILL');
      await waitUntil('a new pid', () => f.read('t/out').trim() !== String(first) && /^\d+$/.test(f.read('t/out').trim()));
      const second = Number(f.read('t/out').trim());
      assert.ok(alive(second));
      assert.equal(f.line('pidgrp'), 'pidgrp 1 DONE', 'respawns under a DONE group do not change its state');
    });
  });

  it('40respawn: more than 5 respawns each within 1 s of the last pause the entry, with the warning naming the tag', async () => {
    await withClinit(
      'hellogrp:hello2:2:respawn:/bin/echo "hello world!" >> t/out\n',
      async (f) => {
        const daemon = await f.start();
        await f.tell('hellogrp', '2');
        await waitUntil('the throttle warning', () => daemon.output().includes('hello2 respawning too rapidly: sleeping 1.5 seconds'));
        const lines = (): number => f.read('t/out').split('\n').length - 1;
        assert.equal(lines(), 7, 'the first run and 6 quick respawns, then the pause');
        await sleep(1_000);
        assert.equal(lines(), 7, 'nothing runs during the pause');
        await waitUntil('the runs after the pause', () => lines() === 9, 3_000);
        await sleep(300);
        assert.equal(lines(), 9, 'after the pause: one run, one quick respawn, then paused again (about two runs per pause)');
        await f.tell('hellogrp', '99');
        await f.waitFor('hellogrp 99 DONE');
      },
      [':::stop:0.5,1', ':::throttle:5,1,1.5'],
    );
  });

  it('45init0: level 0 and group 0 work like any other (and are written to clstat)', async () => {
    await withClinit(
      `0:zero:0:respawn:/bin/echo $$ > t/zero; exec sleep 30
0:one:1:wait:/bin/echo one >> t/one
`,
      async (f) => {
        await f.start();
        await f.tell('0', '0');
        await f.waitFor('0 0 DONE');
        const pid = await f.pidFrom('t/zero');
        await f.tell('0', '1');
        await f.waitFor('0 1 DONE');
        assert.ok(!alive(pid), 'level 1 stopped the level-0 entry');
        assert.equal(f.read('t/one'), 'one\n');
        await f.tell('0', '0');
        await f.waitFor('0 0 DONE');
        await waitUntil('a new level-0 process', () => f.read('t/zero').trim() !== String(pid));
      },
    );
  });

  it('50multigrp: groups are independent: a tell moves only its group', async () => {
    await withClinit(
      `foogrp:foo1:1:respawn:/bin/echo $$ > t/foo; exec sleep 30
bargrp:bar1:1:respawn:/bin/echo $$ > t/bar; exec sleep 30
bazgrp:baz1:1:wait:exec sleep 30
`,
      async (f) => {
        await f.start();
        await Promise.all([f.tell('foogrp', '1'), f.tell('bargrp', '1'), f.tell('bazgrp', '1')]);
        await f.waitFor('foogrp 1 DONE');
        await f.waitFor('bargrp 1 DONE');
        await f.waitFor('bazgrp 1 STARTING');
        const [foo, bar] = [await f.pidFrom('t/foo'), await f.pidFrom('t/bar')];
        await f.tell('foogrp', '2');
        await f.waitFor('foogrp 2 DONE');
        assert.ok(!alive(foo));
        assert.ok(alive(bar), 'bargrp untouched');
        assert.equal(f.read('t/bar').trim(), String(bar));
        assert.equal(f.line('bazgrp'), 'bazgrp 1 STARTING', 'bazgrp untouched');
      },
    );
  });

  it('80test: all tests passing is PASSED, any failing is FAILED (later entries still start), tests mixed with others is DONE', async () => {
    await withClinit(
      `hellogrp:htest1:f:test:/bin/true
hellogrp:htest2:f:test:/bin/false
hellogrp:hafter:f:once:/bin/echo started > t/after
hellogrp:htest3:t:test:/bin/true
hellogrp:htest4:t:test:sleep 0.4
hellogrp:hmix1:m:test:true
hellogrp:hmix2:m:wait:true
`,
      async (f) => {
        await f.start();
        await f.tell('hellogrp', 'f');
        await f.waitFor('hellogrp f FAILED');
        await waitUntil('the entry after the failed test (a failed test does not gate it)', () => f.read('t/after') === 'started\n');
        await f.tell('hellogrp', 't');
        await f.waitFor('hellogrp t STARTING');
        await f.waitFor('hellogrp t PASSED');
        await f.tell('hellogrp', 'm');
        await f.waitFor('hellogrp m DONE');
      },
    );
  });

  it('0233passfail: entries added to the cltab for the current level start on the next tell; test entries pass', async () => {
    await withClinit('test:test1:1:wait:true\n', async (f) => {
      await f.start();
      await f.tell('test', '1');
      await f.waitFor('test 1 DONE');
      f.writeCltab('test:test1:1:wait:true\ntest:test2:1:wait:/bin/echo added > t/added\ntest:test5:3:test:true\ntest:test6:3:test:sleep 0.3\n');
      await f.tell('test', '1');
      await f.waitFor('test 1 DONE');
      await waitUntil('the added entry', () => f.read('t/added') === 'added\n');
      await f.tell('test', '3');
      await f.waitFor('test 3 PASSED');
    });
  });

  it('0232stop: a tell during STARTING preempts the transition (the wait entry is stopped, later entries never start)', async () => {
    await withClinit(
      `test:test1:1:wait:/bin/echo > t/test1; exec sleep 3
test:test2:1:wait:/bin/echo > t/test2; exec sleep 2
test:test3:2:wait:sleep 0.3
test:test4:2:wait:/bin/echo t4 > t/t4
`,
      async (f) => {
        await f.start();
        const t0 = performance.now();
        await f.tell('test', '1');
        await f.waitFor('test 1 STARTING');
        await waitUntil('test1 to run', () => f.read('t/test1') !== '');
        await f.tell('test', '2');
        await f.waitFor('test 2 DONE');
        assert.ok(performance.now() - t0 < 2_900, 'test1 (sleep 3) was stopped, not waited for');
        assert.equal(f.read('t/test2'), '', 'test2 of the abandoned level never started');
        assert.equal(f.read('t/t4'), 't4\n');
      },
    );
  });

  it('0232stop: a tell during STOPPING retargets the group (it goes to the newest level once the old processes are gone)', async () => {
    await withClinit(
      `slow:s1:1:respawn:trap "echo INT >> t/s1" INT; while :; do sleep 0.05; done
slow:s2:2:once:/bin/echo two > t/two
slow:s3:3:once:/bin/echo three > t/three
`,
      async (f) => {
        await f.start();
        await f.tell('slow', '1');
        await f.waitFor('slow 1 DONE');
        await f.tell('slow', '2');
        await f.waitFor('slow 2 STOPPING');
        await f.tell('slow', '3');
        await f.waitFor('slow 3 DONE', 5_000);
        assert.match(f.read('t/s1'), /^INT\n/, 'SIGINT first');
        await waitUntil('the level-3 entry', () => f.read('t/three') === 'three\n');
        assert.equal(f.read('t/two'), '', 'level 2 was abandoned before it started');
      },
      [':::stop:0.6,1.2'],
    );
  });
});
