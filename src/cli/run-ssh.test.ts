// `corral run --ssh --hosts FILE` through the real CLI against a real sshd on loopback (Debian's
// openssh-server with throwaway keys, started by the test). The CLI finds the fixture's ssh_config
// through CORRAL_SSH_CONFIG, which becomes `ssh -F FILE`.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CORRAL, runCorral, type RunResult } from '../testkit/cli.js';
import { closedPort, sshdMissing, startSshd, type Sshd } from '../testkit/sshd.js';

const missing = sshdMissing();


/** Live processes (not zombies) whose command line holds `text`. */
function processesWith(text: string): string[] {
  const r = spawnSync('ps', ['-eo', 'pid=,stat=,args='], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.includes(text) && !l.includes('ps -eo') && !/^Z/.test(l.trim().split(/\s+/)[1] ?? ''));
}

async function gone(text: string, ms: number): Promise<string[]> {
  const deadline = Date.now() + ms;
  let left = processesWith(text);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = processesWith(text);
  }
  return left;
}

describe('corral run --ssh through the CLI', { skip: missing, timeout: 300_000 }, () => {
  let sshd: Sshd;
  let hosts: string;
  let withDown: string;
  const corral = (args: string[], timeoutMs = 60_000): Promise<RunResult> => runCorral(args, { env: sshd.env, timeoutMs });

  before(async () => {
    sshd = await startSshd({ addresses: ['127.0.0.1', '127.0.0.2'], homes: true });
    hosts = sshd.hostsFile(['127.0.0.1', '127.0.0.2']);
    withDown = sshd.hostsFile(['127.0.0.1', '127.0.0.2', `127.0.0.9:${await closedPort('127.0.0.9')}`], 'hosts-down');
  });

  after(async () => {
    await sshd?.stop();
  });

  it('prints whole lines prefixed by the node and a summary, and exits 0', async () => {
    const r = await corral(['run', '--ssh', '--hosts', hosts, '--', 'sh', '-c', 'echo "hello from $CORRAL_NODE"; echo two']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n').filter(Boolean).sort();
    assert.deepEqual(lines, ['127.0.0.1: hello from 127.0.0.1', '127.0.0.1: two', '127.0.0.2: hello from 127.0.0.2', '127.0.0.2: two']);
    assert.match(r.stderr, /^ok: 2 \(127\.0\.0\.\[1-2\]\)$/m);
  });

  it('-b gathers nodes with identical output; -w selects; an unknown node is a usage error', async () => {
    const r = await corral(['run', '--ssh', '--hosts', hosts, '-b', '--', 'echo', 'same']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^127\.0\.0\.\[1-2\] \(2 nodes, exit 0\)\n-+\nsame\n$/m);
    const one = await corral(['run', '--ssh', '--hosts', hosts, '-w', '127.0.0.2', '--', 'echo', 'only']);
    assert.equal(one.stdout, '127.0.0.2: only\n');
    const unknown = await corral(['run', '--ssh', '--hosts', hosts, '-w', 'web9', '--', 'true']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown node web9/);
  });

  it('exits 1 when a command fails, and -S with the largest remote code', async () => {
    const r = await corral(['run', '--ssh', '--hosts', hosts, '--', 'sh', '-c', 'test "$CORRAL_RANK" = 0 || exit 7']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /failed: 1 \(127\.0\.0\.2: exit 7\)/);
    const s = await corral(['run', '--ssh', '--hosts', hosts, '-S', '--', 'sh', '-c', 'exit $((CORRAL_RANK + 5))']);
    assert.equal(s.code, 6, s.stderr);
  });

  it('exits 3 on a timeout, and the remote command is gone afterwards', async () => {
    const marker = `corral-cli-timeout-${randomBytes(6).toString('hex')}`;
    // A background child (with the marker too) and the foreground sleep: the whole group must go.
    const r = await corral(['run', '--ssh', '--hosts', hosts, '--timeout', '1', '--', 'sh', '-c', `sh -c 'sleep 300; : ${marker}' & sleep 300; : ${marker}`]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /timed out: 2 \(127\.0\.0\.\[1-2\]\)/);
    assert.deepEqual(await gone(marker, 2000), []);
  });

  it('exits 4 when a host is unreachable, naming ssh\'s reason', async () => {
    const r = await corral(['run', '--ssh', '--hosts', withDown, '--', 'true']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /^ok: 2 /m);
    assert.match(r.stderr, /unreachable: 1 \(127\.0\.0\.9: ssh: connect to host 127\.0\.0\.9 port \d+: Connection refused\)/);
  });

  it('refuses a malformed or duplicated hosts file with FILE:LINE and exit 2, and --ssh without --hosts', async () => {
    const bad = sshd.hostsFile(['web1', '# comment', 'web2 web3'], 'bad-hosts');
    const r = await corral(['run', '--ssh', '--hosts', bad, '--', 'true']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${bad}:3: .*one host per line`));
    const dup = sshd.hostsFile(['web1', 'root@web1'], 'dup-hosts');
    const d = await corral(['run', '--ssh', '--hosts', dup, '--', 'true']);
    assert.equal(d.code, 2);
    assert.match(d.stderr, new RegExp(`${dup}:2: web1 is already listed on line 1`));
    const none = await corral(['run', '--ssh', '--', 'true']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--ssh needs --hosts FILE/);
  });

  it('Ctrl-C stops the remote commands and still prints the summary; a killed corral leaves nothing behind either', async () => {
    const marker = `corral-cli-int-${randomBytes(6).toString('hex')}`;
    const child = spawn(process.execPath, [CORRAL, 'run', '--ssh', '--hosts', hosts, '--', 'sh', '-c', `echo started; sleep 300; : ${marker}`], {
      env: { ...process.env, ...sshd.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const deadline = Date.now() + 30_000;
    while ((out.match(/started/g) ?? []).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal((out.match(/started/g) ?? []).length, 2, err);
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await exited;
    clearTimeout(timer);
    assert.equal(code, 130, err);
    assert.match(err, /^interrupted: /m);
    assert.deepEqual(await gone(marker, 2000), []);

    // SIGKILL gives corral no chance to clean up: the remote watchdog sees the session's input
    // end and ends the command's group.
    const killedMarker = `corral-cli-kill-${randomBytes(6).toString('hex')}`;
    const victim = spawn(process.execPath, [CORRAL, 'run', '--ssh', '--hosts', hosts, '--', 'sh', '-c', `echo started; sleep 300; : ${killedMarker}`], {
      env: { ...process.env, ...sshd.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let vout = '';
    victim.stdout.on('data', (d: Buffer) => (vout += d.toString()));
    const vdone = new Promise<void>((resolve) => victim.on('close', () => resolve()));
    const vdeadline = Date.now() + 30_000;
    while ((vout.match(/started/g) ?? []).length < 2 && Date.now() < vdeadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(processesWith(killedMarker).length >= 2, true, 'the commands run');
    // The socket directory corral would have removed (read from its ssh processes' arguments).
    const dirs = new Set(
      spawnSync('ps', ['--ppid', String(victim.pid), '-o', 'args='], { encoding: 'utf8' })
        .stdout.split('\n')
        .flatMap((l) => /ControlPath=(\S+)\/[^/\s]+/.exec(l)?.[1] ?? []),
    );
    victim.kill('SIGKILL');
    await vdone;
    assert.deepEqual(await gone(killedMarker, 15_000), []);
    assert.equal(dirs.size, 1);
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
});
