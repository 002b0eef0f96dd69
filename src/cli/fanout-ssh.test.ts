// mkdir, push, scatter and gather with --ssh through the real CLI (issue 6, point 10, the SSH
// half): a real sshd on loopback (Debian's openssh-server, throwaway keys) serving 127.0.0.1-3,
// each address a host whose sessions start in a directory of its own. The CLI reaches it through
// CORRAL_SSH_CONFIG (ssh -F FILE). CORRAL_FAULT_CORRUPT_PUT=corrupt-me makes the CLI flip a byte
// of every file whose name holds "corrupt-me" on its way, as a bad link or disk would.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCorral, type RunResult } from '../testkit/cli.js';
import { closedPort, sshdMissing, startSshd, type Sshd } from '../testkit/sshd.js';

const missing = sshdMissing();
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');


describe('mkdir, push, scatter and gather over --ssh', { skip: missing, timeout: 400_000 }, () => {
  let sshd: Sshd;
  let hosts: string;
  let src: string;
  const home = (h: string): string => sshd.home(h);
  const corral = (verb: string, args: string[], opts: { hostsFile?: string; timeoutMs?: number } = {}): Promise<RunResult> =>
    runCorral([verb, '--ssh', '--hosts', opts.hostsFile ?? hosts, ...args], { env: { ...sshd.env, CORRAL_FAULT_CORRUPT_PUT: 'corrupt-me' }, timeoutMs: opts.timeoutMs ?? 60_000 });

  before(async () => {
    sshd = await startSshd({ addresses: HOSTS, homes: true });
    hosts = sshd.hostsFile(HOSTS);
    src = mkdtempSync(path.join(os.tmpdir(), 'corral-fanout-ssh-src-'));
  });
  after(async () => {
    await sshd?.stop();
    if (src) rmSync(src, { recursive: true, force: true });
  });

  it('mkdir: parents created relative to the login directory, reported per host', async () => {
    const r = await corral('mkdir', ['a/b c/d', 'other']);
    assert.equal(r.code, 0, r.stderr);
    for (const h of HOSTS) assert.ok(statSync(path.join(home(h), 'a/b c/d')).isDirectory());
    assert.match(r.stdout, /127\.0\.0\.2: created .*a\/b c\/d/);
    const again = await corral('mkdir', ['-w', '127.0.0.1', 'a/b c/d']);
    assert.match(again.stdout, /127\.0\.0\.1: exists/);
  });

  it('push: checksummed copies with modes kept, awkward names intact, unchanged files skipped, a damaged copy re-sent', async () => {
    const dir = path.join(src, 'tree');
    mkdirSync(path.join(dir, 'sub dir', 'empty'), { recursive: true });
    const weird = "we ird $(x);'n` &\\.txt";
    writeFileSync(path.join(dir, 'sub dir', weird), 'weird content\n');
    writeFileSync(path.join(dir, 'run.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(path.join(dir, 'run.sh'), 0o750);
    writeFileSync(path.join(src, 'big.bin'), Buffer.alloc(3_000_000, 9));
    const r = await corral('push', [dir, path.join(src, 'big.bin'), 'dest']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    for (const h of HOSTS) {
      const d = path.join(home(h), 'dest');
      assert.equal(readFileSync(path.join(d, 'tree', 'sub dir', weird), 'utf8'), 'weird content\n');
      assert.equal(statSync(path.join(d, 'tree', 'run.sh')).mode & 0o777, 0o750);
      assert.ok(statSync(path.join(d, 'tree', 'sub dir', 'empty')).isDirectory());
      assert.equal(sha(path.join(d, 'big.bin')), sha(path.join(src, 'big.bin')));
      assert.match(r.stdout, new RegExp(`${h.replace(/\./g, '\\.')}: ok, 3 sent`));
    }
    const again = await corral('push', [dir, path.join(src, 'big.bin'), 'dest']);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /127\.0\.0\.2: ok, 0 sent \(0 B\), 3 unchanged/);
    writeFileSync(path.join(home('127.0.0.2'), 'dest', 'big.bin'), Buffer.alloc(3_000_000, 8));
    const repair = await corral('push', [dir, path.join(src, 'big.bin'), 'dest']);
    assert.match(repair.stdout, /127\.0\.0\.2: ok, 1 sent \(3\.0 MB\), 2 unchanged/);
    assert.match(repair.stdout, /127\.0\.0\.1: ok, 0 sent/);
    assert.equal(sha(path.join(home('127.0.0.2'), 'dest', 'big.bin')), sha(path.join(src, 'big.bin')));
  });

  it('push: a file corrupted on its way is refused on every host, nothing half-written is left', async () => {
    writeFileSync(path.join(src, 'corrupt-me.dat'), 'payload that will be damaged in flight\n');
    writeFileSync(path.join(src, 'fine.dat'), 'fine\n');
    const r = await corral('push', [path.join(src, 'corrupt-me.dat'), path.join(src, 'fine.dat'), 'cdest']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /FAILED 1, 1 sent .*does not match/);
    for (const h of HOSTS) assert.deepEqual(readdirSync(path.join(home(h), 'cdest')), ['fine.dat'], 'no corrupted file and no temporary left behind');
  });

  it('scatter by suffix with manifests, a re-run sends nothing; gather brings the files back verified', async () => {
    const dir = path.join(src, 'shards');
    mkdirSync(dir, { recursive: true });
    for (let i = 1; i <= 7; i++) writeFileSync(path.join(dir, `part_${i}.txt`), `shard ${i}\n`);
    const r = await corral('scatter', [dir, 'shards', '--by', 'suffix']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const expect: Record<string, string[]> = { '127.0.0.1': ['part_1.txt', 'part_4.txt', 'part_7.txt'], '127.0.0.2': ['part_2.txt', 'part_5.txt'], '127.0.0.3': ['part_3.txt', 'part_6.txt'] };
    for (const [h, files] of Object.entries(expect)) {
      const d = path.join(home(h), 'shards');
      assert.deepEqual(readdirSync(d).filter((f) => f.endsWith('.txt')).sort(), files);
      assert.equal(readFileSync(path.join(d, '.corral-manifest.tsv'), 'utf8').trim().split('\n').length, files.length + 1);
    }
    const again = await corral('scatter', [dir, 'shards', '--by', 'suffix']);
    assert.match(again.stdout, /127\.0\.0\.1: ok, 0 sent \(0 B\), 3 unchanged/);

    const into = path.join(src, 'gathered');
    const g = await corral('gather', ['shards', into]);
    assert.equal(g.code, 0, g.stdout + g.stderr);
    for (const [h, files] of Object.entries(expect)) {
      for (const f of files) assert.equal(readFileSync(path.join(into, h, 'shards', f), 'utf8'), readFileSync(path.join(dir, f), 'utf8'));
    }
    const twice = await corral('gather', ['shards', into]);
    assert.match(twice.stdout, /127\.0\.0\.3: ok, 0 fetched \(0 B\), 3 unchanged/);
    const none = await corral('gather', ['-w', '127.0.0.1', 'no/such/file', into]);
    assert.equal(none.code, 1);
    assert.match(none.stdout, /does not exist/);
  });

  it('a host that is down: push reports it unreachable (exit 4); a re-run once it answers sends only what it lacks', async () => {
    const downHosts = sshd.hostsFile(['127.0.0.1', `127.0.0.3:${await closedPort('127.0.0.3')}`], 'hosts-down');
    const upHosts = sshd.hostsFile(['127.0.0.1', '127.0.0.3'], 'hosts-up');
    writeFileSync(path.join(src, 'late.txt'), 'late\n');
    const p = await corral('push', [path.join(src, 'late.txt'), 'late'], { hostsFile: downHosts });
    assert.equal(p.code, 4, p.stdout);
    assert.match(p.stdout, /127\.0\.0\.3:\s+UNREACHABLE.*Connection refused/);
    assert.equal(readFileSync(path.join(home('127.0.0.1'), 'late', 'late.txt'), 'utf8'), 'late\n');
    const again = await corral('push', [path.join(src, 'late.txt'), 'late'], { hostsFile: upHosts });
    assert.equal(again.code, 0, again.stdout);
    assert.match(again.stdout, /127\.0\.0\.1: ok, 0 sent \(0 B\), 1 unchanged/);
    assert.match(again.stdout, /127\.0\.0\.3: ok, 1 sent/);
  });

  it('10,000 small files scatter over SSH, each verified on its host, and a re-run sends nothing', async () => {
    const dir = path.join(src, 'many');
    mkdirSync(dir, { recursive: true });
    for (let i = 1; i <= 10_000; i++) writeFileSync(path.join(dir, `f_${i}.dat`), `file ${i}\n`);
    const r = await corral('scatter', [dir, 'many', '--by', 'round-robin'], { timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /10000 of 10000 files verified/);
    const counts = HOSTS.map((h) => readdirSync(path.join(home(h), 'many')).filter((f) => f.endsWith('.dat')).length);
    assert.equal(counts.reduce((a, b) => a + b, 0), 10_000);
    assert.ok(counts.every((c) => c >= 3333 && c <= 3334), String(counts));
    const again = await corral('scatter', [dir, 'many', '--by', 'round-robin'], { timeoutMs: 300_000 });
    assert.equal(again.code, 0, again.stderr + again.stdout);
    assert.match(again.stdout, /127\.0\.0\.1: ok, 0 sent \(0 B\), 333[34] unchanged/);
  });
});
