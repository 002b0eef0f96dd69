// The SSH fleet against a real OpenSSH server on loopback (Debian's openssh-server, started by the
// test with throwaway keys): three hosts 127.0.0.1-3, each starting its sessions in a directory of
// its own, and 127.0.0.9 on a closed port. ssh is pointed at the fixture's ssh_config through
// CORRAL_SSH_CONFIG, exactly as a user would.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ExecSpec, FanoutCallEvent, FanoutEvent, FanoutExecArgs, FileEntry, NodeListResult, NodeMkdirResult } from '../api/fanout-wire.js';
import { CorralError } from '../api/errors.js';
import { closedPort, sshdMissing, startSshd, type Sshd } from '../testkit/sshd.js';
import type { Fleet } from './fleet.js';
import { openSshFleet } from './ssh-fleet.js';

const missing = sshdMissing();
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];

interface NodeRun {
  out: string;
  err: string;
  start?: number;
  final?: FanoutEvent;
}

async function execAll(fleet: Fleet, exec: ExecSpec, opts: Partial<FanoutExecArgs> & { stdin?: Buffer; signal?: AbortSignal; onStart?: (node: string, pgid: number) => void } = {}): Promise<{ plan: string[]; nodes: Map<string, NodeRun> }> {
  const nodes = new Map<string, NodeRun>();
  let plan: string[] = [];
  const get = (n: string): NodeRun => nodes.get(n) ?? (nodes.set(n, { out: '', err: '' }).get(n) as NodeRun);
  const { stdin, signal, onStart, ...rest } = opts;
  for await (const ev of fleet.exec({ targets: {}, ...rest, exec }, stdin, signal ?? new AbortController().signal)) {
    if (ev.t === 'plan') {
      plan = ev.nodes;
      continue;
    }
    const r = get(ev.node);
    if (ev.t === 'out') r.out += Buffer.from(ev.b, 'base64').toString();
    else if (ev.t === 'err') r.err += Buffer.from(ev.b, 'base64').toString();
    else if (ev.t === 'start') {
      assert.equal(r.start, undefined, `${ev.node}: one start`);
      r.start = ev.pid;
      onStart?.(ev.node, ev.pid);
    } else {
      assert.equal(r.final, undefined, `${ev.node}: one final event`);
      r.final = ev;
    }
  }
  return { plan, nodes };
}

async function collect(events: AsyncIterable<FanoutCallEvent>): Promise<Map<string, FanoutCallEvent>> {
  const out = new Map<string, FanoutCallEvent>();
  for await (const ev of events) if (ev.t !== 'plan') out.set(ev.node, ev);
  return out;
}

/** Live processes (zombies are dead, only not yet reaped) as "pid pgid stat args". */
function processes(): string[] {
  const r = spawnSync('ps', ['-eo', 'pid=,pgid=,stat=,args='], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.trim() !== '' && !/^Z/.test(l.trim().split(/\s+/)[2] ?? '') && !l.includes('ps -eo'));
}

/** Processes whose command line contains `text` (this machine is also the remote side). */
function processesWith(text: string): string[] {
  return processes().filter((l) => l.includes(text));
}

function groupMembers(pgid: number): string[] {
  return processes().filter((l) => Number(l.trim().split(/\s+/)[1]) === pgid);
}

async function gone(check: () => string[], ms = 10_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  let left = check();
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = check();
  }
  return left;
}


function entry(rel: string, data: Buffer, mode = 0o644): FileEntry {
  return { path: rel, size: data.length, mode, sha256: createHash('sha256').update(data).digest('hex') };
}

async function* once(data: Buffer): AsyncGenerator<Buffer> {
  await Promise.resolve();
  yield data;
}

describe('the SSH fleet against a real sshd', { skip: missing, timeout: 300_000 }, () => {
  let sshd: Sshd;
  let hostsFile: string;
  let fleet: Fleet;
  const never = new AbortController().signal;

  before(async () => {
    sshd = await startSshd({ addresses: HOSTS, homes: true });
    hostsFile = sshd.hostsFile([`# three hosts and one that is down`, ...HOSTS, `127.0.0.9:${await closedPort('127.0.0.9')}`]);
    fleet = await openSshFleet(hostsFile, sshd.env);
  });

  after(async () => {
    await fleet?.close();
    await sshd?.stop();
  });

  it('runs a command on every host with CORRAL_NODE, RANK and SIZE in its start directory; a closed port is unreachable with ssh\'s own message', async () => {
    const marker = `corral-test-run-${randomBytes(6).toString('hex')}`;
    const { plan, nodes } = await execAll(fleet, { argv: ['sh', '-c', 'echo "$CORRAL_NODE $CORRAL_RANK/$CORRAL_SIZE $PWD"; echo to-stderr >&2; exit 3', marker] });
    assert.deepEqual(plan, [...HOSTS, '127.0.0.9']);
    HOSTS.forEach((h, i) => {
      const r = nodes.get(h) as NodeRun;
      assert.equal(r.out, `${h} ${i}/4 ${sshd.home(h)}\n`);
      assert.equal(r.err, 'to-stderr\n');
      assert.ok(r.start && r.start > 1);
      assert.deepEqual({ ...r.final, ms: 0 }, { node: h, t: 'exit', code: 3, signal: null, timedOut: false, ms: 0 });
    });
    const down = nodes.get('127.0.0.9')?.final;
    assert.equal(down?.t, 'unreachable');
    assert.match((down as { error: string }).error, /^ssh: connect to host 127\.0\.0\.9 port \d+: Connection refused$/);
    // The remote wrapper and its watchdog (both carry the command's arguments) are gone too.
    assert.deepEqual(await gone(() => processesWith(marker), 2000), []);
  });

  it('gives every argument to the command unchanged, whatever characters it holds; shell: true runs one line', async () => {
    const args = ['a b', "it's", '$HOME', '`id`', '"q"', '\\', '*', '; rm -rf /', 'new\nline', '-n', ''];
    const { nodes } = await execAll(fleet, { argv: ['printf', '[%s]', ...args] }, { targets: { nodes: '127.0.0.1' } });
    assert.equal(nodes.get('127.0.0.1')?.out, args.map((a) => `[${a}]`).join(''));
    const line = await execAll(fleet, { argv: ['echo one | tr a-z A-Z; echo "$0"'], shell: true, env: { X: "v'1" } }, { targets: { nodes: '127.0.0.2' } });
    assert.equal(line.nodes.get('127.0.0.2')?.out, 'ONE\n/bin/sh\n');
    const env = await execAll(fleet, { argv: ['sh', '-c', 'printf %s "$X"'], env: { X: "v'1 $y" } }, { targets: { nodes: '127.0.0.2' } });
    assert.equal(env.nodes.get('127.0.0.2')?.out, "v'1 $y");
  });

  it('reports exit statuses as the agents do: 255 is the command\'s, a signal is named, a missing command is 127', async () => {
    const r255 = await execAll(fleet, { argv: ['sh', '-c', 'exit 255'] }, { targets: { nodes: '127.0.0.1' } });
    assert.deepEqual({ ...r255.nodes.get('127.0.0.1')?.final, ms: 0 }, { node: '127.0.0.1', t: 'exit', code: 255, signal: null, timedOut: false, ms: 0 });
    const killed = await execAll(fleet, { argv: ['sh', '-c', 'kill -KILL $$'] }, { targets: { nodes: '127.0.0.1' } });
    assert.deepEqual({ ...killed.nodes.get('127.0.0.1')?.final, ms: 0 }, { node: '127.0.0.1', t: 'exit', code: null, signal: 'SIGKILL', timedOut: false, ms: 0 });
    const none = await execAll(fleet, { argv: ['no-such-command-corral'] }, { targets: { nodes: '127.0.0.1' } });
    const r = none.nodes.get('127.0.0.1') as NodeRun;
    assert.equal((r.final as { code: number }).code, 127);
    assert.equal(r.err, 'corral: no-such-command-corral: command not found\n');
  });

  it('a timeout ends the whole remote process group, leaving nothing behind', async () => {
    const marker = `corral-test-timeout-${randomBytes(6).toString('hex')}`;
    let pgid = 0;
    const t0 = performance.now();
    const { nodes } = await execAll(
      fleet,
      // A child that ignores SIGTERM, in the background, and a foreground sleep: both must go.
      { argv: ['sh', '-c', `sh -c 'trap "" TERM; sleep 300; : ${marker}' & sleep 300; : ${marker}`], timeoutMs: 800, killGraceMs: 500 },
      { targets: { nodes: '127.0.0.2' }, onStart: (_n, pid) => (pgid = pid) },
    );
    const final = nodes.get('127.0.0.2')?.final as Extract<FanoutEvent, { t: 'exit' }>;
    assert.equal(final.t, 'exit');
    assert.equal(final.timedOut, true);
    assert.equal(final.code, null);
    assert.ok(performance.now() - t0 < 20_000);
    assert.ok(pgid > 1);
    // The marker is in the command's arguments, so also in those of the remote wrapper and watchdog.
    assert.deepEqual(await gone(() => processesWith(marker), 2000), [], 'no process of the command is left');
    assert.deepEqual(await gone(() => groupMembers(pgid), 2000), [], 'its process group is empty');
  });

  it('aborting (Ctrl-C, --fail-fast) ends the remote commands, and nodes not yet started are cancelled', async () => {
    const marker = `corral-test-abort-${randomBytes(6).toString('hex')}`;
    const ac = new AbortController();
    const started: number[] = [];
    const { nodes } = await execAll(fleet, { argv: ['sh', '-c', `sleep 300; : ${marker}`] }, {
      targets: { nodes: '127.0.0.[1-3]' },
      fanout: 2,
      signal: ac.signal,
      onStart: (_n, pid) => {
        started.push(pid);
        if (started.length === 2) ac.abort();
      },
    });
    const finals = HOSTS.map((h) => nodes.get(h)?.final);
    assert.equal(finals.filter((f) => f?.t === 'exit' && f.signal === 'SIGTERM').length, 2, JSON.stringify(finals));
    assert.equal(finals.filter((f) => f?.t === 'cancelled').length, 1, JSON.stringify(finals));
    assert.deepEqual(await gone(() => processesWith(marker), 2000), []);
    for (const pgid of started) assert.deepEqual(await gone(() => groupMembers(pgid), 2000), []);
  });

  it('fail-fast stops the remaining hosts at the first failure', async () => {
    const { nodes } = await execAll(fleet, { argv: ['sh', '-c', 'test "$CORRAL_RANK" != 0 || exit 9; sleep 300'] }, { targets: { nodes: '127.0.0.[1-3]' }, fanout: 1, failFast: true });
    assert.equal((nodes.get('127.0.0.1')?.final as { code: number }).code, 9);
    assert.equal(nodes.get('127.0.0.2')?.final?.t, 'cancelled');
    assert.equal(nodes.get('127.0.0.3')?.final?.t, 'cancelled');
  });

  it('sends standard input to every host, and a script with its arguments (removed afterwards)', async () => {
    const input = Buffer.from('line one\nline two\n');
    const { nodes } = await execAll(fleet, { argv: ['wc', '-l'] }, { targets: { nodes: '127.0.0.[1-2]' }, stdin: input });
    assert.equal(nodes.get('127.0.0.1')?.out.trim(), '2');
    assert.equal(nodes.get('127.0.0.2')?.out.trim(), '2');
    const script = '#!/bin/sh\necho "script $# [$1] on $CORRAL_NODE"; cat\n';
    const run = await execAll(fleet, { argv: ['a b', 'c'], script: { name: 'job.sh', base64: Buffer.from(script).toString('base64') } }, { targets: { nodes: '127.0.0.3' }, stdin: Buffer.from('piped\n') });
    assert.equal(run.nodes.get('127.0.0.3')?.out, 'script 2 [a b] on 127.0.0.3\npiped\n');
    assert.deepEqual(readdirSync(path.join(sshd.home('127.0.0.3'), '.corral', 'scripts')), []);
  });

  it('mkdir, put, check, list and read handle names with spaces and shell metacharacters, with the agents\' results', async () => {
    const dir = "dir with space/$(touch pwned);'q'";
    const mk = await collect(fleet.call(['127.0.0.1', '127.0.0.2'], { path: '/v1/node/mkdir', body: { paths: [dir, '-dash'] } }, { signal: never }));
    for (const h of ['127.0.0.1', '127.0.0.2']) {
      const ev = mk.get(h) as Extract<FanoutCallEvent, { t: 'ok' }>;
      assert.equal(ev.t, 'ok', JSON.stringify(ev));
      assert.deepEqual((ev.result as NodeMkdirResult).dirs, [
        { path: path.join(sshd.home(h), dir), created: true },
        { path: path.join(sshd.home(h), '-dash'), created: true },
      ]);
      assert.ok(statSync(path.join(sshd.home(h), dir)).isDirectory());
    }
    const again = await collect(fleet.call(['127.0.0.1'], { path: '/v1/node/mkdir', body: { paths: [dir] } }, { signal: never }));
    assert.deepEqual(((again.get('127.0.0.1') as { result: NodeMkdirResult }).result).dirs[0]?.created, false);

    const data = Buffer.from('payload with\nnewlines and \0 a NUL\n');
    const name = "sub/file name `id` $HOME; echo x > y 'q'\n.txt";
    const file = entry(name, data, 0o640);
    const put = await fleet.put(['127.0.0.1', '127.0.0.2'], { dest: dir, file }, () => once(data), never);
    for (const ev of put) {
      assert.equal(ev.t, 'ok', JSON.stringify(ev));
      const target = path.join(sshd.home(ev.node), dir, name);
      assert.deepEqual(ev.t === 'ok' && ev.result, { path: target, bytes: data.length, sha256: file.sha256 });
      assert.deepEqual(readFileSync(target), data);
      assert.equal(statSync(target).mode & 0o777, 0o640);
    }
    for (const h of ['127.0.0.1', '127.0.0.2']) assert.equal(existsSync(path.join(sshd.home(h), 'pwned')), false, 'no name was run by a shell');

    const check = await collect(fleet.call(['127.0.0.1', '127.0.0.3'], { path: '/v1/node/check', body: { dest: dir, files: [file, entry('absent', data), { ...file, sha256: 'f'.repeat(64) }] } }, { signal: never }));
    assert.deepEqual((check.get('127.0.0.1') as { result: unknown }).result, { present: [true, false, false] });
    assert.deepEqual((check.get('127.0.0.3') as { result: unknown }).result, { present: [false, false, false] });

    const list = await collect(fleet.call(['127.0.0.2'], { path: '/v1/node/list', body: { path: dir } }, { signal: never }));
    const listed = (list.get('127.0.0.2') as { result: NodeListResult }).result;
    const base = path.basename(dir);
    assert.equal(listed.root, path.join(sshd.home('127.0.0.2'), dir));
    assert.deepEqual(listed.entries, [
      { path: base, type: 'dir', size: 0, mode: statSync(path.join(sshd.home('127.0.0.2'), dir)).mode & 0o777 },
      { path: `${base}/sub`, type: 'dir', size: 0, mode: statSync(path.join(sshd.home('127.0.0.2'), dir, 'sub')).mode & 0o777 },
      { path: `${base}/${name}`, type: 'file', size: data.length, mode: 0o640, sha256: file.sha256 },
    ]);

    const chunks: Buffer[] = [];
    for await (const c of await fleet.read('127.0.0.2', `${dir}/${name}`, never)) chunks.push(c);
    assert.deepEqual(Buffer.concat(chunks), data);
    const abs: Buffer[] = [];
    for await (const c of await fleet.read('127.0.0.2', path.join(sshd.home('127.0.0.2'), dir, name), never)) abs.push(c);
    assert.deepEqual(Buffer.concat(abs), data);
  });

  it('a 3 MiB binary file goes out and comes back byte for byte; a read left half way does not disturb the next', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 7);
    const file = entry('bin/data.bin', data, 0o600);
    const chunks = async function* (): AsyncGenerator<Buffer> {
      for (let i = 0; i < data.length; i += 100_000) {
        await Promise.resolve();
        yield data.subarray(i, i + 100_000);
      }
    };
    const put = await fleet.put(['127.0.0.1', '127.0.0.3'], { dest: 'big', file }, chunks, never);
    assert.deepEqual(put.map((e) => e.t), ['ok', 'ok'], JSON.stringify(put));
    const back: Buffer[] = [];
    for await (const c of await fleet.read('127.0.0.3', 'big/bin/data.bin', never)) back.push(c);
    assert.ok(Buffer.concat(back).equals(data));
    for await (const c of await fleet.read('127.0.0.1', 'big/bin/data.bin', never)) {
      assert.ok(c.length > 0);
      break;
    }
    const again: Buffer[] = [];
    for await (const c of await fleet.read('127.0.0.1', 'big/bin/data.bin', never)) again.push(c);
    assert.ok(Buffer.concat(again).equals(data));
    // A sender that stops short: nothing in place, no temporary left.
    const short = await fleet.put(['127.0.0.1'], { dest: 'big', file: { ...entry('short.bin', data), path: 'short.bin' } }, () => once(data.subarray(0, 1000)), never);
    assert.match(short[0]?.t === 'error' ? `${short[0].code} ${short[0].error}` : '', /^CHECKSUM_MISMATCH .*1000 of 3145735 bytes arrived \(the sender stopped\)/);
    assert.deepEqual(readdirSync(path.join(sshd.home('127.0.0.1'), 'big')).sort(), ['bin']);
  });

  it('a file whose bytes do not match the SHA-256 or the size it was sent with is not put in place (CHECKSUM_MISMATCH)', async () => {
    const data = Buffer.from('the real content\n');
    const good = entry('mismatch/f.txt', data);
    const wrongSha = await fleet.put(['127.0.0.1'], { dest: 'cm', file: { ...good, sha256: createHash('sha256').update('other').digest('hex') } }, () => once(data), never);
    assert.equal(wrongSha[0]?.t, 'error');
    assert.equal(wrongSha[0]?.t === 'error' && wrongSha[0].code, 'CHECKSUM_MISMATCH');
    assert.match(wrongSha[0]?.t === 'error' ? wrongSha[0].error : '', /cm\/mismatch\/f\.txt on 127\.0\.0\.1: SHA-256 [0-9a-f]{12}… does not match the sent [0-9a-f]{12}…; nothing was put in place/);
    const short = await fleet.put(['127.0.0.1'], { dest: 'cm', file: { ...good, size: data.length + 5 } }, () => once(data), never);
    assert.match(short[0]?.t === 'error' ? `${short[0].code} ${short[0].error}` : '', /^CHECKSUM_MISMATCH .* 17 of 22 bytes arrived/);
    const long = await fleet.put(['127.0.0.1'], { dest: 'cm', file: { ...good, size: 3 } }, () => once(data), never);
    assert.match(long[0]?.t === 'error' ? `${long[0].code} ${long[0].error}` : '', /^CHECKSUM_MISMATCH .*more bytes arrived than the 3 announced/);
    assert.deepEqual(readdirSync(path.join(sshd.home('127.0.0.1'), 'cm', 'mismatch')), [], 'neither the file nor a temporary is left');
  });

  it('file errors come back as FILE_ERROR worded as the agents word them; an unreachable host is UNAVAILABLE', async () => {
    const home = sshd.home('127.0.0.3');
    writeFileSync(path.join(home, 'plain'), 'x');
    mkdirSync(path.join(home, 'adir'), { recursive: true });
    const mk = await collect(fleet.call(['127.0.0.3', '127.0.0.9'], { path: '/v1/node/mkdir', body: { paths: ['plain'] } }, { signal: never }));
    assert.deepEqual(mk.get('127.0.0.3'), { ...mk.get('127.0.0.3'), t: 'error', code: 'FILE_ERROR', error: `mkdir ${path.join(home, 'plain')} on 127.0.0.3: something else already exists there` });
    const down = mk.get('127.0.0.9') as Extract<FanoutCallEvent, { t: 'error' }>;
    assert.equal(down.code, 'UNAVAILABLE');
    assert.match(down.error, /Connection refused/);
    const list = await collect(fleet.call(['127.0.0.3'], { path: '/v1/node/list', body: { path: 'nothing-here' } }, { signal: never }));
    assert.equal((list.get('127.0.0.3') as { error: string }).error, `gather ${path.join(home, 'nothing-here')} on 127.0.0.3: it does not exist`);
    await assert.rejects(fleet.read('127.0.0.3', 'adir', never), (e: unknown) => e instanceof CorralError && e.code === 'FILE_ERROR' && e.message === `reading ${path.join(home, 'adir')} on 127.0.0.3: it is a directory`);
    await assert.rejects(fleet.read('127.0.0.3', 'missing', never), (e: unknown) => e instanceof CorralError && e.message.endsWith(': it does not exist'));
    const put = await fleet.put(['127.0.0.3'], { dest: '/proc/1', file: entry('x', Buffer.from('x')) }, () => once(Buffer.from('x')), never);
    assert.equal(put[0]?.t === 'error' && put[0].code, 'FILE_ERROR', JSON.stringify(put));
  });

  it('many operations on a host cost one SSH handshake per host, and close() ends every ssh it started', async () => {
    const accepted = (): number => (sshd.log().match(/Accepted publickey/g) ?? []).length;
    const before = accepted();
    const own = await openSshFleet(hostsFile, sshd.env);
    const sshChildren = (): string[] => spawnSync('ps', ['--ppid', String(process.pid), '-o', 'pid=,args='], { encoding: 'utf8' }).stdout.split('\n').filter((l) => / ssh /.test(` ${l.trim()} `));
    const others = new Set(sshChildren());
    const children = (): string[] => sshChildren().filter((l) => !others.has(l));
    const targets = ['127.0.0.1', '127.0.0.2'];
    await collect(own.call(targets, { path: '/v1/node/mkdir', body: { paths: ['many'] } }, { signal: never }));
    const files = Array.from({ length: 20 }, (_, i) => entry(`f${i}`, Buffer.from(`file ${i}\n`)));
    await Promise.all(files.map((f, i) => own.put(targets, { dest: 'many', file: f }, () => once(Buffer.from(`file ${i}\n`)), never)));
    const check = await collect(own.call(targets, { path: '/v1/node/check', body: { dest: 'many', files } }, { signal: never }));
    for (const h of targets) assert.deepEqual((check.get(h) as { result: { present: boolean[] } }).result.present, files.map(() => true));
    await execAll(own, { argv: ['true'] }, { targets: { nodes: '127.0.0.1' } });
    assert.equal(accepted() - before, 2, 'one handshake per host');
    assert.ok(children().length >= 2, 'the masters run');
    await own.close();
    assert.deepEqual(children(), []);
  });

  it('refuses a host whose key does not match known_hosts', async () => {
    const other = (() => {
      spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(sshd.dir, 'other_key')]);
      return readFileSync(path.join(sshd.dir, 'other_key.pub'), 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
    })();
    const config = sshd.configWithKnownHosts(`[127.0.0.1]:${sshd.port} ${other}\n${sshd.knownHostsLines(['127.0.0.2'])}`, 'mismatch');
    const bad = await openSshFleet(hostsFile, { CORRAL_SSH_CONFIG: config });
    try {
      const { nodes } = await execAll(bad, { argv: ['touch', 'should-not-exist'] }, { targets: { nodes: '127.0.0.[1-2]' } });
      const refused = nodes.get('127.0.0.1')?.final as Extract<FanoutEvent, { t: 'unreachable' }>;
      assert.equal(refused.t, 'unreachable');
      assert.equal(refused.error, 'Host key verification failed.');
      assert.equal(existsSync(path.join(sshd.home('127.0.0.1'), 'should-not-exist')), false);
      assert.equal((nodes.get('127.0.0.2')?.final as { code: number }).code, 0);
      const mk = await collect(bad.call(['127.0.0.1'], { path: '/v1/node/mkdir', body: { paths: ['x'] } }, { signal: never }));
      assert.deepEqual([(mk.get('127.0.0.1') as { code: string }).code, (mk.get('127.0.0.1') as { error: string }).error], ['UNAVAILABLE', 'Host key verification failed.']);
    } finally {
      await bad.close();
    }
  });
});
