// Fan-out over agents when things go wrong or a person watches (issue 6, points 9 and 10): the
// progress bar of push on a terminal (script(1) gives the CLI one), Ctrl-C on a run that stops the
// remote process groups and still prints the summary, and a node killed in the middle of a push.
// The agents run with CORRAL_FAULT_SLOW_PUT_MS, a test-only hook that holds each received file for
// a moment before it is renamed into place, so that a transfer lasts long enough to be watched and
// interrupted on any machine.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadClusterConfig, type ClusterConfig } from '../config/cluster-config.js';
import { CORRAL } from '../testkit/cli.js';
import { LocalClusterFixture, waitUntil } from '../testkit/local.js';
import { runCorralInTty, scriptMissing } from '../testkit/tty.js';

const SLOW_PUT_MS = 40;
const ESC = '\u001b';
const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Every file under `dir` (relative paths), hidden ones included. */
function walk(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`]));
}

/** Live processes whose environment holds `needle` (NAME=VALUE), with their CORRAL_NODE. */
function processesWithEnv(needle: string): { pid: number; node: string }[] {
  const found: { pid: number; node: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (!env.includes(needle)) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      found.push({ pid: Number(entry), node: env.find((v) => v.startsWith('CORRAL_NODE='))?.slice('CORRAL_NODE='.length) ?? '?' });
    } catch {
      // gone meanwhile, or not ours
    }
  }
  return found;
}

describe('fan-out over agents: progress on a terminal, Ctrl-C, a node lost during a push', { timeout: 180_000 }, () => {
  const lc = new LocalClusterFixture(3);
  const env = { CORRAL_FAULT_SLOW_PUT_MS: String(SLOW_PUT_MS) };
  let config: ClusterConfig;
  const work = (node: string): string => config.nodes.find((n) => n.name === node)?.workDir as string;
  const corral = (args: string[], timeoutMs = 30_000): ReturnType<LocalClusterFixture['corral']> => lc.corral(args, { timeoutMs, env });
  const src = (...parts: string[]): string => path.join(lc.dir, 'src', ...parts);

  before(async () => {
    const r = await corral(['local', 'up', '-n', '3', '--dir', lc.dir], 90_000);
    assert.equal(r.code, 0, r.stderr);
    config = loadClusterConfig(lc.config);
  });
  after(async () => {
    await lc.destroy();
  });

  it('push draws its progress bar (files, bytes, rate, ETA) on a terminal only, without colour codes under NO_COLOR', { skip: scriptMissing() }, async () => {
    const dir = src('bar');
    mkdirSync(dir, { recursive: true });
    for (let i = 0; i < 40; i++) writeFileSync(path.join(dir, `f${i}.dat`), Buffer.alloc(50_000, i));
    const bar = /push \[[#.]{24}\] (\d+)\/40 files {2}[\d.]+ [kMG]?B\/6\.0 MB {2}[\d.]+ [kMG]?B\/s {2}ETA (\d\d:\d\d|--:--)/g;
    const tty = await runCorralInTty(['push', `${dir}/`, 'bar1'], { env: { CORRAL_CONFIG: lc.config }, timeoutMs: 30_000 });
    assert.equal(tty.code, 0, tty.stdout);
    const drawn = [...tty.stdout.matchAll(bar)].map((m) => Number(m[1]));
    assert.ok(drawn.length >= 2, `the bar was drawn ${drawn.length} times: ${JSON.stringify(tty.stdout.slice(0, 2000))}`);
    assert.ok(drawn.some((n) => n < 40), `no bar before the end: ${drawn.join(',')}`);
    assert.equal(drawn[drawn.length - 1], 40);
    assert.ok(tty.stdout.includes(`\r${ESC}[Kn1: ok, 40 sent`), 'the bar is cleared before the report');
    for (const n of ['n1', 'n2', 'n3']) assert.match(tty.stdout, new RegExp(`${n}: ok, 40 sent`));

    const plain = await corral(['push', `${dir}/`, 'bar2']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.doesNotMatch(plain.stdout + plain.stderr, /files {2}|ETA|\r/, 'no bar without a terminal');

    // The bar is drawn only when stdout is a terminal too: with it in a file, not even on stderr's terminal.
    const outFile = path.join(dir, '..', 'bar-stdout.txt');
    const redirected = await runCorralInTty(['push', `${dir}/`, 'bar4'], { env: { CORRAL_CONFIG: lc.config }, timeoutMs: 30_000, stdoutTo: outFile });
    assert.equal(redirected.code, 0, redirected.stdout);
    assert.doesNotMatch(redirected.stdout, /files {2}|ETA/, 'no bar when stdout is not a terminal');
    assert.match(readFileSync(outFile, 'utf8'), /n1: ok, 40 sent/);

    const noColour = await runCorralInTty(['push', `${dir}/`, 'bar3'], { env: { CORRAL_CONFIG: lc.config, NO_COLOR: '1' }, timeoutMs: 30_000 });
    assert.equal(noColour.code, 0, noColour.stdout);
    assert.ok([...noColour.stdout.matchAll(bar)].length >= 1, 'the bar is not colour: NO_COLOR keeps it');
    assert.doesNotMatch(noColour.stdout, new RegExp(`${ESC}\\[[0-9;]*m`), 'no colour code with NO_COLOR');
  });

  it('Ctrl-C on a run: exit 130, the summary still printed, every remote process group gone', async () => {
    const marker = `CORRAL_TEST_MARK=ctrlc-${process.pid}-${Date.now()}`;
    const child = spawn(process.execPath, [CORRAL, 'run', '-e', marker, '--', 'sh', '-c', 'sleep 30 & sleep 31; wait'], {
      env: { ...process.env, NO_COLOR: '1', CORRAL_CONFIG: lc.config },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    try {
      // Both sleeps and their shell on every node.
      await waitUntil(
        'the command to run on every node',
        () => {
          const nodes = processesWithEnv(marker).map((p) => p.node);
          return Promise.resolve(['n1', 'n2', 'n3'].every((n) => nodes.filter((x) => x === n).length >= 3) ? true : undefined);
        },
        15_000,
        50,
      );
      const t0 = performance.now();
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const { code, signal } = await exited;
      clearTimeout(timer);
      assert.equal(signal, null, `the CLI was killed (${String(signal)}), it did not exit after Ctrl-C: ${stderr}`);
      assert.equal(code, 130, stderr);
      assert.match(stderr, /interrupted: ok: 0\n/);
      assert.match(stderr, /(cancelled|killed): 3/);
      await waitUntil('the remote processes to be gone', () => Promise.resolve(processesWithEnv(marker).length === 0 ? true : undefined), 5000, 50);
      const took = performance.now() - t0;
      assert.ok(took < 8000, `Ctrl-C took ${took.toFixed(0)} ms to clear the nodes`);
    } finally {
      child.kill('SIGKILL');
      for (const p of processesWithEnv(marker)) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  });

  // Known bug (issue 6): since small files are batched, a push whose node dies mid-batch has once
  // hung until the test's 60 s limit (fresh-clone CI, 2026-11-22; it passed in the other runs).
  // The test still runs and reports; `todo` keeps that open bug from failing the suite until fixed.
  it('a node killed in the middle of a push: the others finish verified, it is unreachable (exit 4); a re-run sends it only what it lacks', async () => {
    const dir = src('mid');
    mkdirSync(dir, { recursive: true });
    const COUNT = 240;
    const names = Array.from({ length: COUNT }, (_, i) => `part_${String(i).padStart(3, '0')}.bin`);
    for (const [i, name] of names.entries()) writeFileSync(path.join(dir, name), Buffer.alloc(64 * 1024, i % 251));
    const expected = new Map(names.map((n) => [n, sha(path.join(dir, n))]));
    const dest = (node: string): string => path.join(work(node), 'mid');
    const pid = lc.pid('n3');

    const push = corral(['push', `${dir}/`, 'mid'], 60_000);
    // Kill n3 once some files are in place there (a name without the leading dot of a temporary).
    const { value: arrived } = await waitUntil(
      'files to arrive on n3',
      () => {
        const placed = walk(dest('n3')).filter((f) => !f.startsWith('.')).length;
        return Promise.resolve(placed >= 20 ? placed : undefined);
      },
      20_000,
      5,
    );
    process.kill(pid, 'SIGKILL');
    const r = await push;
    assert.ok(arrived < COUNT, `n3 had every file (${arrived}) before it was killed: the push was too quick to test`);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stdout, /n3:\s+UNREACHABLE/);
    for (const n of ['n1', 'n2']) {
      assert.match(r.stdout, new RegExp(`${n}: ok, ${COUNT} sent`));
      const files = walk(dest(n));
      assert.deepEqual(files.filter((f) => /\.corral-.*\.part$/.test(f)), [], `temporary files left on ${n}`);
      assert.deepEqual(files.sort(), [...names].sort());
      for (const name of names) assert.equal(sha(path.join(dest(n), name)), expected.get(name), `${name} on ${n}`);
    }
    const beforeRerun = walk(dest('n3')).filter((f) => !f.startsWith('.'));
    assert.ok(beforeRerun.length >= arrived && beforeRerun.length < COUNT, `n3 holds ${beforeRerun.length} files`);

    const up = await corral(['local', 'up', '-n', '3', '--dir', lc.dir], 90_000);
    assert.equal(up.code, 0, up.stderr);
    await waitUntil('n3 to be ON', async () => ((await corral(['ping', '-w', 'n3', '-t', '2'])).code === 0 ? true : undefined), 30_000, 200);
    const again = await corral(['push', `${dir}/`, 'mid'], 60_000);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stdout, new RegExp(`n1: ok, 0 sent \\(0 B\\), ${COUNT} unchanged`));
    assert.match(again.stdout, new RegExp(`n2: ok, 0 sent \\(0 B\\), ${COUNT} unchanged`));
    const m = /n3: ok, (\d+) sent \([^)]*\), (\d+) unchanged/.exec(again.stdout);
    assert.ok(m, again.stdout);
    const [sent, unchanged] = [Number(m[1]), Number(m[2])];
    assert.equal(sent + unchanged, COUNT);
    assert.equal(unchanged, beforeRerun.length, 'every file n3 already held was kept, only the others were sent');
    for (const name of names) assert.equal(sha(path.join(dest('n3'), name)), expected.get(name), `${name} on n3`);
    // The temporaries the killed agent left (files held before their rename) went with the re-run.
    assert.deepEqual(walk(dest('n3')).filter((f) => /\.corral-.*\.part$/.test(f)), [], 'temporaries of the killed agent left on n3');
  });
});
