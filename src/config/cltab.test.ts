import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../api/errors.js';
import { cltabHasLevel, parseCltab } from './cltab.js';

/** t/cltab.master of Cluster::Init 0.215, verbatim (reference §1.4). */
const MASTER = `# resourcegroup:unique_tag:runlevel(s):mode:command
#
# Long (multicharacter) runlevel lebels can be used -- separate them
# with commas, as in the 'hellolong' entry below.  If you need only
# one long runlabel in an entry, end it with a comma, as shown in the
# 'hellolong3' entry below.
# 
# location of socket
:::socket:t/clinit.s
# location of status file
:::clstat:t/clstat
# location of log file
:::log:t/clinitlog
hellogrp:hello1:1:wait:/bin/echo "hello world!" > t/out
hellogrp:hello2:2:respawn:/bin/echo "hello world!" >> t/out
hellogrp:hello3:3:wait:/bin/sleep 5; cat /dev/null > t/out
hellogrp:hello4:4:once:/bin/echo 1 > t/out;/bin/sleep 4;/bin/echo 3 >> t/out
hellogrp:hello4a:4:wait:/bin/sleep 2; /bin/echo 2 >> t/out
hellogrp:hellolong:long1,long2,5:wait:/bin/echo long > t/out
hellogrp:hellolong3:long3,:wait:/bin/echo long3 > t/out
pidgrp:pid1:1:respawn:/bin/echo $$ > t/out; sleep 10
foogrp:foo1:12:once:/bin/echo foo1start >t/out;sleep 6;/bin/echo foo1end >t/out
foogrp:foo3:3:once:/bin/echo foo3 >t/out
bargrp:bar1:1:once:/bin/echo bar1start >t/out;sleep 6;/bin/echo bar1end >t/out
bazgrp:baz1:1:once:sleep 20; /bin/echo baz1 > t/out
scramjet:scram1:1:wait:date > t/out
# for 80test.t
hellogrp:htest1:f:test:/bin/true
hellogrp:htest2:f:test:/bin/false
hellogrp:htest3:t:test:/bin/true
# for 023*.t
test:test1:1:wait:sleep 3
test:test2:1:wait:sleep 2
test:test3:2:wait:sleep 2
test:test4:2:wait:sleep 3
test:test5:3:test:true
test:test6:3:test:sleep 1
`;

function invalid(text: string): string {
  try {
    parseCltab(text, '/etc/cltab');
  } catch (err) {
    assert.ok(isCorralError(err, 'CONFIG_INVALID'), String(err));
    return err.message;
  }
  assert.fail('parsed without error');
}

describe('the cltab parser', () => {
  it("reads Cluster::Init's t/cltab.master: settings, every entry in file order, groups by first appearance", () => {
    const tab = parseCltab(MASTER, 't/cltab.master');
    assert.equal(tab.socket, 't/clinit.s');
    assert.equal(tab.clstat, 't/clstat');
    assert.equal(tab.log, 't/clinitlog');
    assert.equal(tab.entries.length, 22);
    assert.deepEqual(tab.groups, ['hellogrp', 'pidgrp', 'foogrp', 'bargrp', 'bazgrp', 'scramjet', 'test']);
    assert.deepEqual(tab.entries[0], { group: 'hellogrp', tag: 'hello1', levels: '1', mode: 'wait', command: '/bin/echo "hello world!" > t/out', line: 14 });
    const hello4 = tab.entries.find((e) => e.tag === 'hello4');
    assert.equal(hello4?.command, '/bin/echo 1 > t/out;/bin/sleep 4;/bin/echo 3 >> t/out');
    assert.deepEqual(
      tab.entries.filter((e) => e.group === 'test').map((e) => `${e.tag}:${e.levels}:${e.mode}`),
      ['test1:1:wait', 'test2:1:wait', 'test3:2:wait', 'test4:2:wait', 'test5:3:test', 'test6:3:test'],
    );
  });

  it('keeps colons in the command (split on the first four only)', () => {
    const tab = parseCltab('g:t:1:once:echo a:b:c; date +%H:%M\n', 'x');
    assert.equal(tab.entries[0]?.command, 'echo a:b:c; date +%H:%M');
  });

  it('skips # in column 0 and blank lines, but not an indented #; a setting value may hold colons', () => {
    const tab = parseCltab('# comment\n\n   \n:::socket:/run/a:b.s\n:::custom:x\ng:t:1:once:true\n', 'x');
    assert.equal(tab.socket, '/run/a:b.s');
    assert.equal(tab.settings.custom, 'x');
    assert.equal(tab.entries.length, 1);
    assert.match(invalid(' # not a comment\n'), /^\/etc\/cltab:1: expected group:tag:levels:mode:command, found 1 field/);
  });

  it('matches levels exactly, then by comma list, then by single characters (never as a regex)', () => {
    assert.ok(cltabHasLevel('1', '1'));
    assert.ok(cltabHasLevel('12', '12') && cltabHasLevel('12', '1') && cltabHasLevel('12', '2'));
    assert.ok(!cltabHasLevel('12', '3'));
    assert.ok(cltabHasLevel('long1,long2,5', 'long2') && cltabHasLevel('long1,long2,5', '5'));
    assert.ok(!cltabHasLevel('long1,long2,5', 'long'), 'a comma list is not split into characters');
    assert.ok(cltabHasLevel('long3,', 'long3'), 'the trailing comma makes a one-label list');
    assert.ok(!cltabHasLevel('long3,', 'l'));
    assert.ok(cltabHasLevel('start', 'start') && cltabHasLevel('start', 's'), 'a word without a comma is also its letters');
    assert.ok(cltabHasLevel('0', '0'), 'level 0 is a level like any other');
    assert.ok(!cltabHasLevel('12', '.'), "'.' is a level name, not a pattern");
    assert.ok(!cltabHasLevel('ab', '*'));
  });

  it('accepts group and level 0', () => {
    const tab = parseCltab('0:zero:0:once:true\n', 'x');
    assert.deepEqual(tab.groups, ['0']);
    assert.equal(tab.entries[0]?.levels, '0');
  });

  it('refuses a duplicate tag, across groups too, naming both lines', () => {
    assert.equal(
      invalid('a:t1:1:once:true\nb:t2:1:once:true\n\nb:t1:2:once:true\n'),
      '/etc/cltab:4: entry has duplicate tag: t1 (first used at line 1; tags are unique across the file)',
    );
  });

  it('refuses an invalid mode, naming it and the valid ones', () => {
    assert.equal(invalid('g:t:1:respwn:true\n'), "/etc/cltab:1: invalid mode: 'respwn' (expected wait, once, respawn, test, off)");
    assert.match(invalid('g:t:1:wait :true\n'), /invalid mode: 'wait ' .*note the whitespace/);
  });

  it('refuses malformed lines: too few fields, empty group, tag, levels or command, whitespace in names', () => {
    assert.match(invalid('g:t:1:once\n'), /^\/etc\/cltab:1: expected group:tag:levels:mode:command, found 4 fields$/);
    assert.match(invalid('\n::override:socket:/tmp/x\n'), /^\/etc\/cltab:2: the group \(field 1\) is empty$/);
    assert.match(invalid('g::1:once:true\n'), /:1: the tag \(field 2\) is empty/);
    assert.match(invalid('g:t::once:true\n'), /:1: the levels \(field 3\) are empty/);
    assert.match(invalid('g:t:1:once:  \n'), /:1: the command \(field 5\) is empty/);
    assert.match(invalid('my g:t:1:once:true\n'), /:1: the group 'my g' contains whitespace/);
    assert.equal(parseCltab('g:t:1:off:\n', 'x').entries[0]?.mode, 'off', 'an off entry needs no command');
  });

  it("reads corral's settings: stop ladder and throttle per file or group, log rotation", () => {
    const tab = parseCltab(':::stop:2,4\n:::stop:web:0.5,1.5\n:::throttle:web:3,0.5,10\n:::logrotate:64k,3\nweb:w:1:respawn:x\n', 'x');
    assert.deepEqual(tab.stop.get(''), { termAfterMs: 2000, killAfterMs: 4000 });
    assert.deepEqual(tab.stop.get('web'), { termAfterMs: 500, killAfterMs: 1500 });
    assert.deepEqual(tab.throttle.get('web'), { limit: 3, windowMs: 500, pauseMs: 10_000 });
    assert.deepEqual(tab.logRotation, { maxBytes: 65536, keep: 3 });
    assert.match(invalid(':::stop:5\n'), /:1: :::stop: wants TERM,KILL/);
    assert.match(invalid(':::stop:9,3\n'), /:1: :::stop: the SIGKILL delay \(3\) must not be shorter/);
    assert.match(invalid(':::stop:nosuch:1,2\ng:t:1:once:x\n'), /:1: the setting names group 'nosuch', which has no entry/);
    assert.match(invalid(':::throttle:5,0,60\n'), /window must be more than 0/);
    assert.match(invalid(':::logrotate:1x,2\n'), /log size must be bytes/);
  });

  it('reads only settings for a client, whatever else the file holds', () => {
    const tab = parseCltab(':::socket:/s\n:::stop:bad\ng:t:1:nomode:x\n', 'x', { settingsOnly: true });
    assert.equal(tab.socket, '/s');
    assert.equal(tab.entries.length, 0);
  });

  it('ignores a CR before the newline', () => {
    assert.equal(parseCltab('g:t:1:once:echo hi\r\n', 'x').entries[0]?.command, 'echo hi');
  });
});
