// Fan-out through the real CLI on a local 3-node cluster (issue 6): run (output, gathering,
// files, JSON, exit categories, timeouts that leave no process behind, stdin, scripts, fail-fast),
// mkdir, push (checksums, modes, awkward names, re-runs, corruption), scatter, gather, and a node
// that is down. Agents run with a test-only fault: files whose name holds "corrupt-me" arrive with
// one byte flipped, as a bad disk or memory would deliver them.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadClusterConfig, type ClusterConfig } from '../config/cluster-config.js';
import { CORRAL } from '../testkit/cli.js';
import { LocalClusterFixture, waitUntil } from '../testkit/local.js';
import { isProcessAlive } from '../util/process.js';

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Pids of live processes whose command line contains `marker`. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (cmd.includes(marker) && state !== 'Z') found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe('fan-out on a local 3-node cluster', { timeout: 300_000 }, () => {
  const lc = new LocalClusterFixture(3);
  let config: ClusterConfig;
  const work = (node: string): string => config.nodes.find((n) => n.name === node)?.workDir as string;
  const corral = (args: string[], opts: { timeoutMs?: number } = {}): ReturnType<LocalClusterFixture['corral']> =>
    lc.corral(args, { timeoutMs: opts.timeoutMs ?? 60_000, env: { CORRAL_FAULT_CORRUPT_PUT: 'corrupt-me' } });
  const src = (): string => path.join(lc.dir, 'src');

  before(async () => {
    const r = await corral(['local', 'up', '-n', '3', '--dir', lc.dir], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, r.stderr);
    config = loadClusterConfig(lc.config);
  });
  after(async () => {
    await lc.destroy();
  });

  it('run: whole prefixed lines from every node, argv passed without a shell, per-node environment', async () => {
    const r = await corral(['run', '--', 'sh', '-c', 'printf "%s|%s|%s|%s\\n" "$CORRAL_NODE" "$CORRAL_RANK" "$CORRAL_SIZE" "$1"; pwd; echo oops >&2', 'sh', 'a b;$(touch pwned)*']);
    assert.equal(r.code, 0, r.stderr);
    for (const [i, n] of ['n1', 'n2', 'n3'].entries()) {
      assert.ok(r.stdout.includes(`${n}: ${n}|${i}|3|a b;$(touch pwned)*\n`), r.stdout);
      assert.ok(r.stdout.includes(`${n}: ${work(n)}\n`), r.stdout);
      assert.ok(r.stderr.includes(`${n}: oops\n`), r.stderr);
      assert.equal(existsSync(path.join(work(n), 'pwned')), false, 'an argument was run by a shell');
    }
    assert.match(r.stderr, /ok: 3 \(n\[1-3\]\)/);
    // Every stdout line is whole and prefixed, even for a long line written in pieces.
    const long = await corral(['run', '-w', 'n2', '--shell', '--', 'head -c 200000 /dev/zero | tr "\\0" x; echo; echo end']);
    assert.equal(long.code, 0, long.stderr);
    const lines = long.stdout.split('\n').filter((l) => l !== '');
    assert.deepEqual(lines.map((l) => l.length), [4 + 200_000, 4 + 3]);
  });

  it('run: -b gathers identical output and status, -o writes per-node files, --json and --ndjson describe every node', async () => {
    const cmd = ['sh', '-c', 'if [ "$CORRAL_NODE" = n3 ]; then echo different; exit 3; fi; echo same'];
    const b = await corral(['run', '-b', '--', ...cmd]);
    assert.equal(b.code, 1);
    assert.match(b.stdout, /n\[1-2\] \(2 nodes, exit 0\)\n-+\nsame\n/);
    assert.match(b.stdout, /n3 \(1 node, exit 3\)\n-+\ndifferent\n/);
    assert.match(b.stderr, /failed: 1 \(n3: exit 3\)/);
    const maxrc = await corral(['run', '-S', '--', ...cmd]);
    assert.equal(maxrc.code, 3, 'with -S the largest remote exit code');
    const out = path.join(lc.dir, 'out');
    const o = await corral(['run', '-o', out, '--', ...cmd]);
    assert.equal(o.code, 1);
    assert.equal(readFileSync(path.join(out, 'n1', 'stdout'), 'utf8'), 'same\n');
    assert.equal(readFileSync(path.join(out, 'n3', 'rc'), 'utf8'), '3\n');
    assert.equal(readFileSync(path.join(out, 'n2', 'stderr'), 'utf8'), '');
    const j = await corral(['run', '--json', '--', ...cmd]);
    const doc = JSON.parse(j.stdout) as { nodes: { node: string; status: string; code: number; stdout: string }[]; exitCode: number };
    assert.equal(doc.exitCode, 1);
    assert.deepEqual(doc.nodes.map((n) => [n.node, n.status, n.code, n.stdout]), [
      ['n1', 'ok', 0, 'same\n'],
      ['n2', 'ok', 0, 'same\n'],
      ['n3', 'failed', 3, 'different\n'],
    ]);
    const nd = await corral(['run', '--ndjson', '-w', 'n1', '--', 'echo', 'hi']);
    const events = nd.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; node?: string; line?: string; code?: number });
    assert.deepEqual(events.map((e) => e.type), ['plan', 'stdout', 'exit', 'summary']);
    assert.equal(events[1]?.line, 'hi');
  });

  it('run: usage errors name the problem (unknown node, empty set) and exit 2', async () => {
    const unknown = await corral(['run', '-w', 'n[1-2],nope', '--', 'true']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown node nope/);
    const empty = await corral(['run', '-w', 'n1', '-x', 'n1', '--', 'true']);
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /empty/);
    const none = await corral(['run']);
    assert.equal(none.code, 2);
  });

  it('run: --timeout kills the whole remote process group and exits 3', async () => {
    const marker = `corral-timeout-${process.pid}-${Date.now()}`;
    const r = await corral(['run', '-w', 'n[2-3]', '-t', '1', '--kill-grace', '300', '--', 'sh', '-c', `sleep 300 & sleep 301; echo ${marker}`, marker]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /timed out: 2 \(n\[2-3\]\)/);
    // The background child was in the same group: nothing with the marker survives.
    const deadline = Date.now() + 5000;
    while (processesWith(marker).length > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.deepEqual(processesWith(marker), []);
  });

  it('run: --stdin reaches every node, --script runs a copied script, --fail-fast stops the rest', async () => {
    const stdin = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      void import('node:child_process').then(({ spawn }) => {
        const child = spawn(process.execPath, [CORRAL, 'run', '--stdin', '--', 'wc', '-c'], { env: { ...process.env, CORRAL_CONFIG: lc.config } });
        let stdout = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, stdout }));
        child.stdin.end('x'.repeat(100_000));
      });
    });
    assert.equal(stdin.code, 0);
    for (const n of ['n1', 'n2', 'n3']) assert.ok(stdin.stdout.includes(`${n}: 100000\n`), stdin.stdout);
    const script = path.join(lc.dir, 'job.sh');
    writeFileSync(script, '#!/bin/sh\necho "job on $CORRAL_NODE with $# args: $*"\n');
    const out = path.join(lc.dir, 'script-out');
    const s = await corral(['run', '--script', script, '-o', out, '--', 'one', 'two words']);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(readFileSync(path.join(out, 'n2', 'stdout'), 'utf8'), 'job on n2 with 2 args: one two words\n');
    assert.deepEqual(readdirSync(path.join(work('n2'), '.corral', 'scripts')), [], 'the script is removed after the run');
    const ff = await corral(['run', '--fail-fast', '--fanout', '1', '--', 'sh', '-c', '[ "$CORRAL_NODE" != n1 ]']);
    assert.equal(ff.code, 1);
    assert.match(ff.stderr, /failed: 1 \(n1: exit 1\)/);
    assert.match(ff.stderr, /cancelled: 2 \(n\[2-3\]\)/);
  });

  it('mkdir: parents created and reported per node; a path outside the write roots is refused', async () => {
    const r = await corral(['mkdir', 'a/b c/d', 'other']);
    assert.equal(r.code, 0, r.stderr);
    for (const n of ['n1', 'n2', 'n3']) assert.ok(statSync(path.join(work(n), 'a/b c/d')).isDirectory());
    assert.match(r.stdout, /n2: created .*a\/b c\/d/);
    const again = await corral(['mkdir', '-w', 'n1', 'a/b c/d']);
    assert.match(again.stdout, /n1: exists/);
    const outside = await corral(['mkdir', '-w', 'n1', '/tmp/corral-should-not-exist', '--json']);
    assert.equal(outside.code, 1);
    assert.match(outside.stdout, /outside/);
    assert.equal(existsSync('/tmp/corral-should-not-exist'), false);
    const escape = await corral(['mkdir', '-w', 'n1', '../../escape']);
    assert.equal(escape.code, 1);
  });

  it('push: checksummed copies with modes kept, awkward names intact, unchanged files skipped, a damaged copy re-sent', async () => {
    const dir = path.join(src(), 'tree');
    mkdirSync(path.join(dir, 'sub dir', 'empty'), { recursive: true });
    const weird = "we ird $(x);'n` &.txt";
    writeFileSync(path.join(dir, 'sub dir', weird), 'weird content\n');
    writeFileSync(path.join(dir, 'run.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(path.join(dir, 'run.sh'), 0o750);
    writeFileSync(path.join(src(), 'big.bin'), Buffer.alloc(3_000_000, 9));
    const r = await corral(['push', dir, path.join(src(), 'big.bin'), 'dest']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    for (const n of ['n1', 'n2', 'n3']) {
      const d = path.join(work(n), 'dest');
      assert.equal(readFileSync(path.join(d, 'tree', 'sub dir', weird), 'utf8'), 'weird content\n');
      assert.equal(statSync(path.join(d, 'tree', 'run.sh')).mode & 0o777, 0o750);
      assert.ok(statSync(path.join(d, 'tree', 'sub dir', 'empty')).isDirectory());
      assert.equal(sha(path.join(d, 'big.bin')), sha(path.join(src(), 'big.bin')));
      assert.match(r.stdout, new RegExp(`${n}: ok, 3 sent`));
    }
    const again = await corral(['push', dir, path.join(src(), 'big.bin'), 'dest']);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /n2: ok, 0 sent \(0 B\), 3 unchanged/);
    // A copy damaged on n2 after it arrived is noticed and replaced; the others are left alone.
    writeFileSync(path.join(work('n2'), 'dest', 'big.bin'), Buffer.alloc(3_000_000, 8));
    const repair = await corral(['push', dir, path.join(src(), 'big.bin'), 'dest']);
    assert.match(repair.stdout, /n2: ok, 1 sent \(3\.0 MB\), 2 unchanged/);
    assert.match(repair.stdout, /n1: ok, 0 sent/);
    assert.equal(sha(path.join(work('n2'), 'dest', 'big.bin')), sha(path.join(src(), 'big.bin')));
  });

  it('push: a file that arrives corrupted is refused on every node, nothing half-written is left', async () => {
    writeFileSync(path.join(src(), 'corrupt-me.dat'), 'payload that will be damaged in flight\n');
    writeFileSync(path.join(src(), 'fine.dat'), 'fine\n');
    const r = await corral(['push', path.join(src(), 'corrupt-me.dat'), path.join(src(), 'fine.dat'), 'cdest']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /FAILED 1, 1 sent .*does not match/);
    for (const n of ['n1', 'n2', 'n3']) {
      const d = path.join(work(n), 'cdest');
      assert.deepEqual(readdirSync(d), ['fine.dat'], 'no corrupted file and no temporary left behind');
    }
  });

  it('scatter: by suffix as distsys, manifests on every node and locally, a re-run sends nothing, --move deletes only verified sources', async () => {
    const dir = path.join(src(), 'shards');
    mkdirSync(dir, { recursive: true });
    for (let i = 1; i <= 7; i++) writeFileSync(path.join(dir, `part_${i}.txt`), `shard ${i}\n`);
    writeFileSync(path.join(dir, 'README'), 'no number\n');
    const r = await corral(['scatter', dir, 'shards', '--by', 'suffix']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stderr, /README: no _N number/);
    const expect: Record<string, string[]> = { n1: ['part_1.txt', 'part_4.txt', 'part_7.txt'], n2: ['part_2.txt', 'part_5.txt'], n3: ['part_3.txt', 'part_6.txt'] };
    for (const [n, files] of Object.entries(expect)) {
      const d = path.join(work(n), 'shards');
      assert.deepEqual(readdirSync(d).filter((f) => f.endsWith('.txt')).sort(), files);
      const manifest = readFileSync(path.join(d, '.corral-manifest.tsv'), 'utf8').trim().split('\n');
      assert.equal(manifest.length, files.length + 1);
      assert.match(manifest[1] as string, new RegExp(`^${files[0] as string}\\t${n}\\t8\\t[0-9a-f]{64}$`));
    }
    const local = readFileSync(path.join(dir, '.corral-manifest.tsv'), 'utf8');
    assert.equal(local.trim().split('\n').length, 8);
    const again = await corral(['scatter', dir, 'shards', '--by', 'suffix']);
    assert.match(again.stdout, /n1: ok, 0 sent \(0 B\), 3 unchanged/);
    const moved = await corral(['scatter', dir, 'shards', '--by', 'suffix', '--move']);
    assert.equal(moved.code, 0);
    assert.deepEqual(readdirSync(dir).sort(), ['.corral-manifest.tsv', 'README']);
    assert.equal(readFileSync(path.join(dir, '.corral-manifest.tsv'), 'utf8'), local, 'the manifest keeps the moved files');
    // hash: the same file always lands on the same node.
    const h1 = await corral(['scatter', path.join(src(), 'tree'), 'h1', '--by', 'hash', '--json']);
    const h2 = await corral(['scatter', path.join(src(), 'tree'), 'h2', '--by', 'hash', '--json']);
    const where = (j: string): string[] => (JSON.parse(j) as { nodes: { node: string; sent: number }[] }).nodes.map((n) => `${n.node}:${n.sent}`);
    assert.deepEqual(where(h1.stdout), where(h2.stdout));
  });

  it('gather: a directory from every node into LOCALDIR/NODE, verified, then skipped when unchanged', async () => {
    const into = path.join(lc.dir, 'gathered');
    const r = await corral(['gather', 'dest/tree', into]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const n of ['n1', 'n2', 'n3']) {
      assert.equal(readFileSync(path.join(into, n, 'tree', 'sub dir', "we ird $(x);'n` &.txt"), 'utf8'), 'weird content\n');
      assert.equal(statSync(path.join(into, n, 'tree', 'run.sh')).mode & 0o777, 0o750);
    }
    const again = await corral(['gather', 'dest/tree', into]);
    assert.match(again.stdout, /n3: ok, 0 fetched \(0 B\), 2 unchanged/);
    const missing = await corral(['gather', '-w', 'n1', 'no/such/file', into]);
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /does not exist/);
  });

  it('10,000 small files scatter, each verified on its node', async () => {
    const dir = path.join(src(), 'many');
    mkdirSync(dir, { recursive: true });
    for (let i = 1; i <= 10_000; i++) writeFileSync(path.join(dir, `f_${i}.dat`), `file ${i}\n`);
    const r = await corral(['scatter', dir, 'many', '--by', 'round-robin'], { timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /10000 of 10000 files verified/);
    const counts = ['n1', 'n2', 'n3'].map((n) => readdirSync(path.join(work(n), 'many')).filter((f) => f.endsWith('.dat')).length);
    assert.equal(counts.reduce((a, b) => a + b, 0), 10_000);
    assert.ok(counts.every((c) => c >= 3333 && c <= 3334), String(counts));
  });

  it('a node that is down: run and push report it unreachable (exit 4); a re-run after it returns sends only what it lacks', async () => {
    const pid = lc.pid('n3');
    process.kill(pid, 'SIGKILL');
    await lc.waitForDeath(pid);
    const r = await corral(['run', '--', 'true']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /ok: 2 \(n\[1-2\]\)/);
    assert.match(r.stderr, /unreachable: 1 \(n3: /);
    writeFileSync(path.join(src(), 'late.txt'), 'late\n');
    const p = await corral(['push', path.join(src(), 'late.txt'), 'late']);
    assert.equal(p.code, 4, p.stdout);
    assert.match(p.stdout, /n3:\s+UNREACHABLE/);
    assert.equal(readFileSync(path.join(work('n1'), 'late', 'late.txt'), 'utf8'), 'late\n');
    const up = await corral(['local', 'up', '-n', '3', '--dir', lc.dir], { timeoutMs: 90_000 });
    assert.equal(up.code, 0, up.stderr);
    assert.ok(isProcessAlive(lc.pid('n3')));
    // `local up` may return while the dead agent's membership has not expired yet: wait until the
    // new agent answers end to end.
    await waitUntil('n3 to answer a command', async () => ((await corral(['run', '-w', 'n3', '--', 'true'])).code === 0 ? true : undefined), 30_000, 200);
    const again = await corral(['push', path.join(src(), 'late.txt'), 'late']);
    assert.equal(again.code, 0, again.stdout);
    assert.match(again.stdout, /n1: ok, 0 sent \(0 B\), 1 unchanged/);
    assert.match(again.stdout, /n3: ok, 1 sent/);
  });
});
