// The hosts file of --ssh: one [user@]host[:port] per line, comments and blanks ignored, and every
// mistake named by file and line.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CorralError } from '../api/errors.js';
import { parseHosts } from './ssh-hosts.js';
import { MarkerScanner, remoteCommand, shq, statusOf } from './ssh-remote.js';
import { spawnSync } from 'node:child_process';

function usage(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof CorralError && err.code === 'USAGE' && err.exitCode === 2 && pattern.test(err.message));
}

describe('the --ssh hosts file', () => {
  it('reads [user@]host[:port] lines and skips comments and blank lines', () => {
    const hosts = parseHosts('# cluster\n\nweb1\n  alice@db.example.org:2222   # the database\nbob@10.0.0.7\n', 'h');
    assert.deepEqual(
      hosts.map(({ name, host, user, port, line }) => ({ name, host, user, port, line })),
      [
        { name: 'web1', host: 'web1', user: undefined, port: undefined, line: 3 },
        { name: 'db.example.org', host: 'db.example.org', user: 'alice', port: 2222, line: 4 },
        { name: '10.0.0.7', host: '10.0.0.7', user: 'bob', port: undefined, line: 5 },
      ],
    );
  });

  it('names entries that share a host by host-PORT, which a node set can select', () => {
    const hosts = parseHosts('gw:2201\ngw:2202\nsolo:22\n', 'h');
    assert.deepEqual(hosts.map((h) => h.name), ['gw-2201', 'gw-2202', 'solo']);
  });

  it('refuses a malformed line with the file and line number', () => {
    usage(() => parseHosts('ok\nweb1 web2\n', 'hosts.txt'), /^hosts\.txt:2: .*one host per line/);
    usage(() => parseHosts('web1:http\n', 'hosts.txt'), /^hosts\.txt:1: "http" is not a port/);
    usage(() => parseHosts('web1:70000\n', 'hosts.txt'), /^hosts\.txt:1: "70000" is not a port/);
    usage(() => parseHosts('\n\n-oProxyCommand=x\n', 'hosts.txt'), /^hosts\.txt:3: .*is not a host name/);
    usage(() => parseHosts('a b@web1\n', 'hosts.txt'), /^hosts\.txt:1: /);
    usage(() => parseHosts('[::1]:22\n', 'hosts.txt'), /^hosts\.txt:1: IPv6 addresses are not accepted here.*Host alias/);
  });

  it('refuses a host listed twice, naming both lines', () => {
    usage(() => parseHosts('web1\n# again\nalice@web1\n', 'h'), /^h:3: web1 is already listed on line 1/);
    usage(() => parseHosts('web1:22\nweb1:22\n', 'h'), /^h:2: web1:22 is already listed on line 1/);
  });

  it('refuses a file without hosts', () => {
    usage(() => parseHosts('# nothing\n\n', 'empty'), /^empty lists no hosts/);
  });
});

describe('the remote side of --ssh', () => {
  it('quotes every word so that sh gives it back unchanged', () => {
    const words = ['plain', 'a b', "it's", '$HOME', '`id`', '"q"', '\\', '*', ';rm -rf /', 'new\nline', '-n', ''];
    const r = spawnSync('/bin/sh', ['-c', remoteCommand('printf "%s\\0" "$@"', words)], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\0').slice(0, -1), words);
    assert.equal(shq("a'b"), `'a'\\''b'`);
  });

  it('finds its marker lines anywhere in the stream, also when a chunk cuts them', () => {
    const scanner = new MarkerScanner('abc123');
    const text = 'before\ncorral-abc123 start 42\nmiddle corral-abc1';
    const first = scanner.push(Buffer.from(text));
    assert.equal(first.data.toString(), 'before\nmiddle ');
    assert.deepEqual(first.markers, [{ word: 'start', value: '42' }]);
    const second = scanner.push(Buffer.from('23 exit 7\ncorral-abX tail'));
    assert.equal(second.data.toString(), 'corral-abX tail');
    assert.deepEqual(second.markers, [{ word: 'exit', value: '7' }]);
    assert.equal(scanner.end().length, 0);
  });

  it("reads a shell's 129 to 143 as a death by signal", () => {
    assert.deepEqual(statusOf(0), { code: 0, signal: null });
    assert.deepEqual(statusOf(127), { code: 127, signal: null });
    assert.deepEqual(statusOf(143), { code: null, signal: 'SIGTERM' });
    assert.deepEqual(statusOf(137), { code: null, signal: 'SIGKILL' });
    assert.deepEqual(statusOf(200), { code: 200, signal: null });
  });
});
