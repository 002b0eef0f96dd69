// A node receiving a batch of files in one stream (put-batch): every file is judged alone (a
// corrupted one, one outside the write roots, one whose sender stopped), large files stream to
// disk as they arrive, and nothing half-written is left behind. Real files in a temporary
// directory; the input is the same framed byte stream the relay sends.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { NodePutBatchEvent } from '../api/fanout-wire.js';
import { frameHeader } from './frames.js';
import { NodeOps } from './node-ops.js';

interface Sent {
  path: string;
  data: Buffer;
  mode?: number;
  /** Announce this hash instead of the real one. */
  sha256?: string;
}

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

function frames(files: Sent[]): Buffer[] {
  return files.flatMap((f, i) => [frameHeader({ i, path: f.path, size: f.data.length, mode: f.mode ?? 0o644, sha256: f.sha256 ?? sha(f.data) }), f.data]);
}

async function* stream(chunks: Buffer[]): AsyncGenerator<Buffer> {
  for (const c of chunks) {
    await Promise.resolve();
    yield c;
  }
}

async function answers(events: AsyncIterable<NodePutBatchEvent>): Promise<Map<number, NodePutBatchEvent>> {
  const byIndex = new Map<number, NodePutBatchEvent>();
  for await (const ev of events) {
    assert.equal(byIndex.has(ev.i), false, `file ${ev.i} answered twice`);
    byIndex.set(ev.i, ev);
  }
  return byIndex;
}

/** Every file under `dir`, temporaries included, relative. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (abs: string, rel: string): void => {
    for (const name of readdirSync(abs).sort()) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      if (statSync(path.join(abs, name)).isDirectory()) walk(path.join(abs, name), childRel);
      else out.push(childRel);
    }
  };
  walk(dir, '');
  return out;
}

describe('put-batch: many files in one stream, each judged alone', () => {
  let dir: string;
  let work: string;
  let outside: string;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'corral-batch-'));
    work = path.join(dir, 'work');
    outside = path.join(dir, 'outside');
    mkdirSync(work);
    mkdirSync(outside);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a corrupted file and a file with a wrong hash are refused; the files around them land, modes kept, no temporary left', async () => {
    const ops = new NodeOps({ node: 'n1', workDir: work, corruptPutsMatching: 'corrupt-me' });
    const files: Sent[] = [
      { path: 'a.txt', data: Buffer.from('first\n') },
      { path: 'sub/corrupt-me.bin', data: Buffer.from('damaged on arrival\n') },
      { path: 'sub/run.sh', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o750 },
      { path: 'liar.txt', data: Buffer.from('the sender announced another hash\n'), sha256: sha(Buffer.from('something else')) },
      { path: 'empty', data: Buffer.alloc(0) },
    ];
    const got = await answers(ops.putBatch({ dest: 'd1' }, stream(frames(files))));
    assert.equal(got.size, files.length, 'one answer per file');
    for (const i of [0, 2, 4]) assert.equal(got.get(i)?.t, 'ok', JSON.stringify(got.get(i)));
    for (const i of [1, 3]) {
      const ev = got.get(i);
      assert.equal(ev?.t, 'error');
      assert.equal(ev.t === 'error' && ev.code, 'CHECKSUM_MISMATCH');
    }
    const d = path.join(work, 'd1');
    assert.deepEqual(tree(d), ['a.txt', 'empty', 'sub/run.sh'], 'only the verified files, and no .part file');
    assert.equal(readFileSync(path.join(d, 'sub/run.sh'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(statSync(path.join(d, 'sub/run.sh')).mode & 0o777, 0o750);
    assert.equal(statSync(path.join(d, 'a.txt')).mode & 0o777, 0o644);
  });

  it('a file whose directory leads out of the write roots is refused with PATH_REFUSED; the others land and nothing is written outside', async () => {
    const ops = new NodeOps({ node: 'n1', workDir: work });
    const d = path.join(work, 'd2');
    mkdirSync(d);
    symlinkSync(outside, path.join(d, 'escape'));
    writeFileSync(path.join(outside, 'victim'), 'untouched\n');
    symlinkSync(path.join(outside, 'victim'), path.join(d, 'link-to-victim'));
    const files: Sent[] = [
      { path: 'ok-1.txt', data: Buffer.from('one\n') },
      { path: 'escape/x.txt', data: Buffer.from('must not land outside\n') },
      { path: 'link-to-victim', data: Buffer.from('must not replace a link leading out\n') },
      { path: 'deeper/ok-2.txt', data: Buffer.from('two\n') },
    ];
    const got = await answers(ops.putBatch({ dest: 'd2' }, stream(frames(files))));
    assert.equal(got.get(0)?.t, 'ok');
    assert.equal(got.get(3)?.t, 'ok');
    for (const i of [1, 2]) {
      const ev = got.get(i);
      assert.equal(ev?.t === 'error' && ev.code, 'PATH_REFUSED', JSON.stringify(ev));
      assert.match(ev?.t === 'error' ? ev.error : '', /writeRoots/);
    }
    assert.deepEqual(readdirSync(outside), ['victim']);
    assert.equal(readFileSync(path.join(outside, 'victim'), 'utf8'), 'untouched\n');
    assert.equal(readFileSync(path.join(d, 'deeper/ok-2.txt'), 'utf8'), 'two\n');
  });

  it('a large file among small ones is written to disk while it arrives, then verified; the small ones after it land too', async () => {
    const ops = new NodeOps({ node: 'n1', workDir: work });
    const big = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
    const files: Sent[] = [
      { path: 'small-1', data: Buffer.from('before\n') },
      { path: 'big.bin', data: big },
      { path: 'small-2', data: Buffer.from('after\n') },
    ];
    const d = path.join(work, 'd3');
    const temps = (): string[] => (existsSync(d) ? readdirSync(d).filter((n) => n.startsWith('.big.bin.corral-')) : []);
    let seenOnDisk = 0;
    async function* input(): AsyncGenerator<Buffer> {
      const [h1, b1, h2, , h3, b3] = frames(files) as [Buffer, Buffer, Buffer, Buffer, Buffer, Buffer];
      yield* [h1, b1, h2];
      // The first 3 MiB, then wait until the node has written part of it under a temporary name:
      // a node that held the file in memory until its end would never get there.
      for (let at = 0; at < 3 * 1024 * 1024; at += 64 * 1024) yield big.subarray(at, at + 64 * 1024);
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        const t = temps()[0];
        seenOnDisk = t === undefined ? 0 : statSync(path.join(d, t)).size;
        if (seenOnDisk >= 1024 * 1024) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(seenOnDisk >= 1024 * 1024, `the node had written ${seenOnDisk} bytes of the large file after receiving 3 MiB`);
      yield big.subarray(3 * 1024 * 1024);
      yield* [h3, b3];
    }
    const got = await answers(ops.putBatch({ dest: 'd3' }, input()));
    assert.deepEqual([...got.values()].map((e) => e.t), ['ok', 'ok', 'ok']);
    assert.ok(seenOnDisk > 0 && seenOnDisk < big.length);
    assert.equal(sha(readFileSync(path.join(d, 'big.bin'))), sha(big));
    assert.equal(readFileSync(path.join(d, 'small-2'), 'utf8'), 'after\n');
    assert.deepEqual(temps(), []);
  });

  it('a sender that stops inside a file: that file fails, nothing is left half-written', async () => {
    const ops = new NodeOps({ node: 'n1', workDir: work });
    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    const [h1, b1, h2] = frames([
      { path: 'whole', data: Buffer.from('whole\n') },
      { path: 'cut.bin', data: big },
    ]) as [Buffer, Buffer, Buffer];
    const got = await answers(ops.putBatch({ dest: 'd4' }, stream([h1, b1, h2, big.subarray(0, 1_500_000)])));
    assert.equal(got.get(0)?.t, 'ok');
    const cut = got.get(1);
    assert.equal(cut?.t === 'error' && cut.code, 'CHECKSUM_MISMATCH');
    assert.match(cut?.t === 'error' ? cut.error : '', /1500000 of 2097152 bytes arrived/);
    assert.deepEqual(tree(path.join(work, 'd4')), ['whole']);
  });

  it('a bad path is answered for that file alone; a header without a size ends the batch with BAD_REQUEST', async () => {
    const ops = new NodeOps({ node: 'n1', workDir: work });
    const got = await answers(
      ops.putBatch(
        { dest: 'd5' },
        stream(frames([
          { path: '../up.txt', data: Buffer.from('no\n') },
          { path: 'fine.txt', data: Buffer.from('yes\n') },
        ])),
      ),
    );
    const bad = got.get(0);
    assert.equal(bad?.t === 'error' && bad.code, 'BAD_REQUEST');
    assert.equal(got.get(1)?.t, 'ok');
    assert.equal(existsSync(path.join(work, 'up.txt')), false);
    await assert.rejects(answers(ops.putBatch({ dest: 'd5' }, stream([Buffer.from('{"i":0,"path":"x"}\n')]))), (err: Error & { code?: string }) => err.code === 'BAD_REQUEST');
  });

  it("a batch sweeps the temporaries an earlier agent of this node left in the directories it writes, and only those", async () => {
    const d = path.join(work, 'd6');
    mkdirSync(path.join(d, 'sub'), { recursive: true });
    // A killed agent of n1 left these (another process: another 8-hex prefix than the live one's).
    const stale = ['.a.bin.corral-n1-00000000a.part', 'sub/.b.bin.corral-n1-11111111z3.part'];
    // Not n1's earlier agents': another node sharing the directory, the format before node names,
    // a user's file that only looks alike, and a directory the batch does not write into.
    const kept = ['.a.bin.corral-n2-00000000a.part', '.a.bin.corral-00000000a.part', '.x.corral-n1-notours.part', '.y.corral-n1-0000000-a.part'];
    mkdirSync(path.join(d, 'untouched'));
    const elsewhere = 'untouched/.c.bin.corral-n1-22222222b.part';
    for (const f of [...stale, ...kept, elsewhere]) writeFileSync(path.join(d, f), 'half a file');
    const ops = new NodeOps({ node: 'n1', workDir: work });
    const got = await answers(ops.putBatch({ dest: 'd6' }, stream(frames([{ path: 'a.bin', data: Buffer.from('A') }, { path: 'sub/b.bin', data: Buffer.from('B') }]))));
    assert.deepEqual([...got.values()].map((e) => e.t), ['ok', 'ok']);
    assert.deepEqual(tree(d), [...kept, 'a.bin', 'sub/b.bin', elsewhere].sort());
    // A single put sweeps its directory too.
    writeFileSync(path.join(d, stale[0] as string), 'half a file');
    await ops.put({ dest: 'd6', file: { path: 'c.bin', size: 1, mode: 0o644, sha256: sha(Buffer.from('C')) } }, stream([Buffer.from('C')]));
    assert.equal(existsSync(path.join(d, stale[0] as string)), false);
    assert.equal(readFileSync(path.join(d, 'c.bin'), 'utf8'), 'C');
  });
});
