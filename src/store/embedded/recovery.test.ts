// Journal and snapshot recovery: a torn tail is cut off (with a warning naming file and offset),
// damage before the end stops start-up with JOURNAL_CORRUPT and changes nothing.

import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import type { Logger } from '../../util/log.js';
import { openEmbeddedStore } from './embedded-store.js';
import { memoryLogger, withStore, withTempDir } from './fixtures.js';
import { HEADER_SIZE, fileHeader, frame, scanFrames } from './framing.js';
import { JOURNAL_MAGIC, listSegments, segmentName, type Segment } from './journal.js';
import { encodeRecord } from './records.js';
import { listSnapshots } from './snapshot.js';

const GOOD_KEYS = ['k0', 'k1', 'k2', 'k3'];

/** A journal of four puts, then a fifth whose record the test damages; returns where it starts. */
async function journalWithLastRecord(dataDir: string): Promise<{ segment: Segment; full: Buffer; lastStart: number }> {
  await withStore({ dataDir }, async (store) => {
    for (const k of GOOD_KEYS) await store.put(k, `value of ${k}`);
  });
  const [segment] = await listSegments(dataDir);
  assert.ok(segment !== undefined);
  const lastStart = (await stat(segment.path)).size;
  await withStore({ dataDir }, async (store) => {
    await store.put('last', 'the record that gets damaged');
  });
  return { segment, full: await readFile(segment.path), lastStart };
}

/** Opens the store and checks it holds exactly the four good records. */
async function assertRecoversGoodPrefix(dataDir: string, logger: Logger, what: string): Promise<void> {
  await withStore({ dataDir, logger }, async (store) => {
    assert.equal(await store.revision(), 4n, what);
    const kvs = (await store.range('')).kvs;
    assert.deepEqual(
      kvs.map((kv) => [kv.key, kv.value, kv.modRevision]),
      GOOD_KEYS.map((k, i) => [k, `value of ${k}`, BigInt(i + 1)]),
      what,
    );
  });
}

function assertWarnedAbout(logger: ReturnType<typeof memoryLogger>, file: string, offset: number, what: string): void {
  const warning = logger.entries.find((e) => e.level === 'warn' && e.msg.includes(file) && e.msg.includes(`offset ${offset}`));
  assert.ok(warning, `${what}: expected a warning naming ${file} and offset ${offset}; got ${JSON.stringify(logger.entries)}`);
}

async function openFails(dataDir: string, code: 'JOURNAL_CORRUPT', mustMention: string[]): Promise<void> {
  await assert.rejects(openEmbeddedStore({ dataDir }), (err: unknown) => {
    assert.ok(isCorralError(err, code), `expected ${code}, got ${String(err)}`);
    for (const m of mustMention) assert.ok(err.message.includes(m), `message should mention ${m}: ${err.message}`);
    return true;
  });
}

describe('journal recovery', () => {
  it('truncates a last record torn at every byte offset, recovering exactly the records before it', () =>
    withTempDir(async (dataDir) => {
      const { segment, full, lastStart } = await journalWithLastRecord(dataDir);
      assert.ok(full.length - lastStart > 40, 'the last record is long enough to be interesting');
      for (let cut = lastStart; cut < full.length; cut++) {
        await writeFile(segment.path, full.subarray(0, cut));
        const logger = memoryLogger();
        await assertRecoversGoodPrefix(dataDir, logger, `cut at ${cut}`);
        assert.equal((await stat(segment.path)).size, lastStart, `cut at ${cut}: the file is truncated to the good records`);
        if (cut > lastStart) assertWarnedAbout(logger, segment.path, lastStart, `cut at ${cut}`);
        else assert.equal(logger.entries.filter((e) => e.level === 'warn').length, 0, 'an intact journal draws no warning');
      }
    }));

  it('truncates a zero-filled tail, whatever the point where the zeros start', () =>
    withTempDir(async (dataDir) => {
      const { segment, full, lastStart } = await journalWithLastRecord(dataDir);
      for (let from = lastStart; from < full.length; from++) {
        const damaged = Buffer.from(full);
        damaged.fill(0, from);
        await writeFile(segment.path, damaged);
        const logger = memoryLogger();
        await assertRecoversGoodPrefix(dataDir, logger, `zeros from ${from}`);
        assertWarnedAbout(logger, segment.path, lastStart, `zeros from ${from}`);
      }
    }));

  it('truncates a last record with any single damaged byte (bad CRC or length, nothing valid after it)', () =>
    withTempDir(async (dataDir) => {
      const { segment, full, lastStart } = await journalWithLastRecord(dataDir);
      for (let at = lastStart; at < full.length; at++) {
        const damaged = Buffer.from(full);
        damaged[at] = (damaged[at] as number) ^ 0x5a;
        await writeFile(segment.path, damaged);
        const logger = memoryLogger();
        await assertRecoversGoodPrefix(dataDir, logger, `byte ${at} damaged`);
        assertWarnedAbout(logger, segment.path, lastStart, `byte ${at} damaged`);
      }
    }));

  it('keeps accepting writes after cutting a torn tail, and a later restart sees them', () =>
    withTempDir(async (dataDir) => {
      const { segment, full, lastStart } = await journalWithLastRecord(dataDir);
      await writeFile(segment.path, full.subarray(0, lastStart + 11));
      await withStore({ dataDir }, async (store) => {
        assert.equal((await store.put('after', 'x')).revision, 5n);
      });
      await withStore({ dataDir }, async (store) => {
        assert.equal(await store.revision(), 5n);
        assert.equal((await store.get('after')).kv?.value, 'x');
        assert.equal((await store.get('last')).kv, undefined);
      });
    }));

  it('refuses to start when a record before the end is damaged, naming file and offset, and changes nothing', () =>
    withTempDir(async (dataDir) => {
      const { segment, full } = await journalWithLastRecord(dataDir);
      const frames = scanFrames(full, HEADER_SIZE).frames;
      const victim = frames[1];
      assert.ok(victim !== undefined && frames.length === 5);
      const damages: [string, (b: Buffer) => void][] = [
        ['a payload byte', (b) => void (b[victim.offset + 12] = 0x20)],
        ['the CRC', (b) => void (b[victim.offset + 5] = (b[victim.offset + 5] as number) ^ 1)],
        ['the length (too long)', (b) => b.writeUInt32LE(0x7fffffff, victim.offset)],
        ['the length (too short)', (b) => b.writeUInt32LE(3, victim.offset)],
        ['a zeroed record', (b) => b.fill(0, victim.offset, frames[2]?.offset)],
      ];
      for (const [what, damage] of damages) {
        const damaged = Buffer.from(full);
        damage(damaged);
        await writeFile(segment.path, damaged);
        await openFails(dataDir, 'JOURNAL_CORRUPT', [segment.path, `offset ${victim.offset}`]);
        assert.deepEqual(await readFile(segment.path), damaged, `${what}: the journal was left as it was`);
        // The failed start released the data-directory lock: a second attempt fails the same way.
        await openFails(dataDir, 'JOURNAL_CORRUPT', [segment.path]);
      }
    }));

  it('treats damage at the end of a segment that is not the last as corruption', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store) => {
        for (const k of ['a', 'b', 'c']) await store.put(k, 'x');
      });
      const [first] = await listSegments(dataDir);
      assert.ok(first !== undefined);
      const firstBytes = await readFile(first.path);
      await writeFile(first.path, Buffer.concat([firstBytes, Buffer.from([9, 0, 0, 0, 1, 2])]));
      await writeSegment(dataDir, 4, [putRecord(4, 'd')]);
      await openFails(dataDir, 'JOURNAL_CORRUPT', [first.path, `offset ${firstBytes.length}`]);
    }));

  it('treats a gap in the record sequence (a missing segment) as corruption', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store) => {
        for (const k of ['a', 'b', 'c']) await store.put(k, 'x');
      });
      const later = await writeSegment(dataDir, 6, [putRecord(6, 'f')]);
      await openFails(dataDir, 'JOURNAL_CORRUPT', [later, 'offset 12', 'does not follow']);
    }));

  it('refuses a journal with a foreign header, and rewrites an incomplete header of the last segment', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir }, async (store) => void (await store.put('a', 'x')));
      const [segment] = await listSegments(dataDir);
      assert.ok(segment !== undefined);
      const good = await readFile(segment.path);
      const foreign = Buffer.from(good);
      foreign.write('NOTCORRL', 0, 'latin1');
      await writeFile(segment.path, foreign);
      await openFails(dataDir, 'JOURNAL_CORRUPT', [segment.path, 'offset 0']);
      await writeFile(segment.path, good);
      // A crash right after creating the next segment leaves part of its header.
      const next = join(dataDir, segmentName(2));
      await writeFile(next, fileHeader(JOURNAL_MAGIC).subarray(0, 5));
      const logger = memoryLogger();
      await withStore({ dataDir, logger }, async (store) => {
        assert.equal((await store.get('a')).kv?.value, 'x');
        await store.put('b', 'y');
      });
      assertWarnedAbout(logger, next, 0, 'incomplete header');
      await withStore({ dataDir }, async (store) => assert.equal((await store.get('b')).kv?.modRevision, 2n));
    }));

  it('refuses to start from a damaged snapshot, naming it', () =>
    withTempDir(async (dataDir) => {
      await withStore({ dataDir, snapshotEveryRecords: 3 }, async (store) => {
        for (const k of ['a', 'b', 'c', 'd']) await store.put(k, 'x');
      });
      const [snap] = await listSnapshots(dataDir);
      assert.ok(snap !== undefined, 'a snapshot was written');
      const good = await readFile(snap.path);
      const flipped = Buffer.from(good);
      flipped[good.length - 10] = (flipped[good.length - 10] as number) ^ 0x01;
      for (const damaged of [flipped, good.subarray(0, good.length - 1), Buffer.concat([good, Buffer.from('x')])]) {
        await writeFile(snap.path, damaged);
        await openFails(dataDir, 'JOURNAL_CORRUPT', [snap.path]);
      }
      await writeFile(snap.path, good);
      await withStore({ dataDir }, async (store) => assert.equal(await store.revision(), 4n));
    }));
});

function putRecord(seq: number, key: string): string {
  return encodeRecord({ seq, type: 'txn', rev: BigInt(seq), muts: [{ op: 'put', key, value: 'x', lease: 0n }] });
}

async function writeSegment(dir: string, firstSeq: number, records: string[]): Promise<string> {
  const path = join(dir, segmentName(firstSeq));
  const frames = records.flatMap((r) => frame(Buffer.from(r)));
  await writeFile(path, Buffer.concat([fileHeader(JOURNAL_MAGIC), ...frames]));
  return path;
}
