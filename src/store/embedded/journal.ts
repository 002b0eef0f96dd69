// The append-only journal: segment files of framed records, written with group commit.
//
// Every record appended while a flush is in progress (or in the same event-loop turn) joins one
// batch: one durable write, then every waiter of the batch is released. A caller learns its record
// is durable only through the promise append() returns. Segments are open with O_DSYNC, so each
// write returns once its data is on disk as fdatasync would make it: one system call (and one trip
// to libuv's thread pool) per batch instead of two.
//
// A lone writer (one request at a time, each waiting for the previous: a single lock client) gains
// nothing from the thread pool, whose two thread switches cost about as much as the write itself
// on a VM. Once several writes in a row saw nothing else arrive while they were in flight, a batch
// of one record is written synchronously; every 16th such batch goes through the pool again, to
// notice company (a record appended meanwhile ends the streak), and so does every larger batch.
// A synchronous write that takes long (a slow or stalled disk) turns this off for a while, so the
// event loop is never held for a disk's bad moments.
//
// Segments are named after the sequence number of their first record (wal-<seq>.log). A segment
// is fdatasynced completely before the next one is created, so only the last segment can have a
// torn tail; damage anywhere else is corruption.

import { constants, writeSync } from 'node:fs';
import { open, readFile, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { CorralError } from '../../api/errors.js';
import type { Logger } from '../../util/log.js';
import { HEADER_SIZE, fileHeader, headerProblem, scanFrames, type Frame } from './framing.js';
import { deferred, fsyncDir, writeAll, type Deferred } from './fs-util.js';

export const JOURNAL_MAGIC = 'CORRALWL';
const SEGMENT_NAME = /^wal-(\d{16})\.log$/;

export function segmentName(firstSeq: number): string {
  return `wal-${String(firstSeq).padStart(16, '0')}.log`;
}

export interface Segment {
  firstSeq: number;
  path: string;
}

export interface FrameLocation {
  file: string;
  offset: number;
}

export interface RecoveredJournal {
  segments: Segment[];
  /** The last segment and its length after any torn tail was cut off. */
  tail: { path: string; size: number } | undefined;
}

/** The journal segments in the directory, oldest first. */
export async function listSegments(dir: string): Promise<Segment[]> {
  const segments: Segment[] = [];
  for (const name of await readdir(dir)) {
    const match = SEGMENT_NAME.exec(name);
    if (match) segments.push({ firstSeq: Number(match[1]), path: join(dir, name) });
  }
  return segments.sort((a, b) => a.firstSeq - b.firstSeq);
}

/**
 * Reads every segment and hands each record to `onFrame`, in order. A torn tail of the last
 * segment is cut off (with a warning); any other damage throws JOURNAL_CORRUPT and changes nothing.
 */
export async function recoverJournal(opts: {
  dir: string;
  logger: Logger;
  onFrame: (payload: Buffer, where: FrameLocation) => void;
}): Promise<RecoveredJournal> {
  const segments = await listSegments(opts.dir);
  let tail: RecoveredJournal['tail'];
  for (const [i, segment] of segments.entries()) {
    const isLast = i === segments.length - 1;
    const buf = await readFile(segment.path);
    const frames = await readSegment(segment.path, buf, isLast, opts.logger);
    for (const f of frames.frames) deliver(opts.onFrame, f, segment.path);
    if (isLast) tail = { path: segment.path, size: frames.size };
  }
  return { segments, tail };
}

function deliver(onFrame: (payload: Buffer, where: FrameLocation) => void, f: Frame, file: string): void {
  try {
    onFrame(f.payload, { file, offset: f.offset });
  } catch (err) {
    if (err instanceof CorralError) throw err;
    throw corrupt(file, f.offset, `its record does not apply (${(err as Error).message})`);
  }
}

async function readSegment(path: string, buf: Buffer, isLast: boolean, logger: Logger): Promise<{ frames: Frame[]; size: number }> {
  if (buf.length < HEADER_SIZE && isLast) {
    // A crash while creating the segment: it holds no records yet.
    logger.warn({ file: path, offset: 0 }, `journal ${path} has an incomplete header (offset 0, ${buf.length} bytes); rewriting it: it holds no records`);
    await rewrite(path, 0, fileHeader(JOURNAL_MAGIC));
    return { frames: [], size: HEADER_SIZE };
  }
  const problem = headerProblem(buf, JOURNAL_MAGIC);
  if (problem !== undefined) throw corrupt(path, 0, problem);
  const scan = scanFrames(buf, HEADER_SIZE);
  if (scan.damage === undefined) return { frames: scan.frames, size: scan.end };
  const { offset, validFrameAfter } = scan.damage;
  if (validFrameAfter !== undefined) {
    throw corrupt(path, offset, `a damaged record is followed by a valid one at offset ${validFrameAfter}, so this is not a torn write`);
  }
  if (!isLast) throw corrupt(path, offset, 'the segment ends in a damaged record but later segments exist');
  logger.warn(
    { file: path, offset, discardedBytes: buf.length - offset },
    `journal ${path} has a torn record at offset ${offset} (a write interrupted by a crash); truncating to the last good record`,
  );
  await rewrite(path, offset);
  return { frames: scan.frames, size: offset };
}

// Truncates a file to `size` (then writes `data` at the end, if given) and makes it durable.
async function rewrite(path: string, size: number, data?: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.truncate(size);
    if (data !== undefined) await fh.write(data, 0, data.length, size);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

export function corrupt(file: string, offset: number, why: string): CorralError {
  return new CorralError(
    'JOURNAL_CORRUPT',
    `${file} is corrupt at offset ${offset}: ${why}. Nothing was changed. Restore the data directory from a backup, ` +
      `or, to knowingly drop every record from that offset on, truncate the file (truncate -s ${offset} ${file}) and start again`,
  );
}

interface Batch {
  chunks: Buffer[];
  bytes: number;
  records: number;
  /** Opaque caller tag of the batch's last record (the store passes its revision). */
  tag: bigint;
  done: Deferred;
  /** Set when the segment must be switched after this batch: the first sequence number of the next one. */
  rotateTo?: number;
  rotated?: Deferred;
}

export interface JournalCounters {
  /** Records appended since open. */
  records: number;
  /** Of the batches, those written synchronously (a lone writer's). */
  syncWrites: number;
  /** Durable (O_DSYNC) writes to segment files since open: what fdatasync calls would have been. */
  fsyncs: number;
  /** Batches flushed (one write each). */
  batches: number;
  bytes: number;
  largestBatch: number;
  segments: number;
}

export interface JournalOptions {
  dir: string;
  logger: Logger;
  recovered: RecoveredJournal;
  /** Sequence number of the next record, for naming a first segment. */
  nextSeq: number;
  /** Called after each batch is durable, with the batch's tag, before its waiters resume. */
  onDurable: (tag: bigint) => void;
  /** Called once if a write or fsync fails; the journal then refuses everything. */
  onFailure: (err: CorralError) => void;
  /** Write a lone writer's batches synchronously (default true; see above). */
  syncLoneWrites?: boolean;
  /** A synchronous write slower than this (default 20 ms) pauses synchronous writes for a second. */
  slowSyncMs?: number;
}

/** Writes in a row that saw no company before a lone writer's batches are written synchronously. */
const LONE_AFTER = 3;
/** Every this many synchronous batches, one goes through the thread pool to look for company. */
const PROBE_EVERY = 16;
/**
 * A synchronous write slower than slowSyncMs (default this: a stalling disk, not the few-ms blips
 * a shared disk has every second or so, no longer than a GC pause) turns them off for SYNC_PAUSE_MS.
 */
const SLOW_SYNC_MS = 20;
const SYNC_PAUSE_MS = 1_000;

export class Journal {
  private open: Batch | undefined;
  private readonly sealed: Batch[] = [];
  private inFlight: Batch | undefined;
  private flushing = false;
  private scheduled = false;
  private flushTask: Promise<void> | undefined;
  private failure: CorralError | undefined;
  private closed = false;
  private readonly counters: JournalCounters;
  /** Thread-pool writes in a row during which nothing was appended. */
  private lonely = 0;
  /** Synchronous batches since the last thread-pool write. */
  private syncRun = 0;
  /** performance.now() before which no synchronous write is tried (after a slow one). */
  private syncPausedUntil = 0;

  private constructor(
    private readonly opts: JournalOptions,
    private fh: FileHandle,
    private pos: number,
    private readonly segments: Segment[],
  ) {
    this.counters = { records: 0, syncWrites: 0, fsyncs: 0, batches: 0, bytes: 0, largestBatch: 0, segments: segments.length };
  }

  static async open(opts: JournalOptions): Promise<Journal> {
    const { tail, segments } = opts.recovered;
    if (tail === undefined) {
      const segment = { firstSeq: opts.nextSeq, path: join(opts.dir, segmentName(opts.nextSeq)) };
      const fh = await createSegment(opts.dir, segment.path);
      return new Journal(opts, fh, HEADER_SIZE, [...segments, segment]);
    }
    const fh = await open(tail.path, constants.O_RDWR | constants.O_DSYNC);
    // What recovery read may still be only in the page cache; make it durable before serving it.
    await fh.datasync();
    return new Journal(opts, fh, tail.size, [...segments]);
  }

  stats(): JournalCounters {
    return { ...this.counters, segments: this.segments.length };
  }

  /** Queues one framed record; resolves once it is on disk. */
  append(chunks: readonly Buffer[], tag: bigint): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new CorralError('STORE_UNAVAILABLE', 'the store journal is closed'));
    const batch = (this.open ??= newBatch());
    for (const c of chunks) {
      batch.chunks.push(c);
      batch.bytes += c.length;
    }
    batch.records++;
    batch.tag = tag;
    this.counters.records++;
    this.schedule();
    return batch.done.promise;
  }

  /** Resolves once everything appended so far is durable. */
  whenDurable(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const last = this.open ?? this.sealed.at(-1) ?? this.inFlight;
    return last === undefined ? Promise.resolve() : last.done.promise;
  }

  /** True when every appended record is durable (nothing is waiting for a flush). */
  get idle(): boolean {
    return this.open === undefined && this.sealed.length === 0 && this.inFlight === undefined;
  }

  /**
   * Ends the current segment after the records appended so far and starts a new one whose first
   * record will be `firstSeq`. Resolves once the old segment is durable and the new one exists.
   */
  rotate(firstSeq: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const batch = this.open ?? newBatch();
    this.open = undefined;
    batch.rotateTo = firstSeq;
    batch.rotated = deferred();
    this.sealed.push(batch);
    this.schedule();
    return batch.rotated.promise;
  }

  /** Removes the segments whose records all precede `seq` (a snapshot covers them). */
  async removeSegmentsBefore(seq: number): Promise<void> {
    const current = this.segments.at(-1);
    const doomed = this.segments.filter((s) => s !== current && s.firstSeq < seq);
    for (const s of doomed) {
      await unlink(s.path);
      this.segments.splice(this.segments.indexOf(s), 1);
    }
    if (doomed.length > 0) await fsyncDir(this.opts.dir);
  }

  /** Flushes what is queued and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.whenDurable().catch(() => undefined);
    await this.flushTask; // a segment switch may still be finishing after the last batch resolved
    await this.fh.close();
  }

  private schedule(): void {
    if (this.flushing || this.scheduled) return;
    this.scheduled = true;
    // A microtask gathers every record of the current tick; records that arrive while a flush is
    // in progress gather in the next batch. (setImmediate here cost ~80 µs per idle put.)
    queueMicrotask(() => {
      this.scheduled = false;
      this.flushTask = this.flush();
    });
  }

  private takeBatch(): Batch | undefined {
    const next = this.sealed.shift();
    if (next !== undefined) return next;
    const open = this.open;
    this.open = undefined;
    return open;
  }

  private async flush(): Promise<void> {
    if (this.flushing || this.failure !== undefined) return;
    this.flushing = true;
    try {
      for (let batch = this.takeBatch(); batch !== undefined; batch = this.takeBatch()) {
        this.inFlight = batch;
        if (batch.records > 0) await this.writeBatch(batch);
        this.inFlight = undefined;
        if (batch.records > 0) this.opts.onDurable(batch.tag);
        batch.done.resolve();
        if (batch.rotateTo !== undefined) {
          await this.startSegment(batch.rotateTo);
          batch.rotated?.resolve();
        }
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.flushing = false;
    }
  }

  private async writeBatch(batch: Batch): Promise<void> {
    const buf = Buffer.concat(batch.chunks, batch.bytes);
    if (this.alone(batch)) {
      const started = performance.now();
      for (let off = 0; off < buf.length; ) off += writeSync(this.fh.fd, buf, off, buf.length - off, this.pos + off);
      this.syncRun++;
      this.counters.syncWrites++;
      if (performance.now() - started > (this.opts.slowSyncMs ?? SLOW_SYNC_MS)) {
        this.syncPausedUntil = performance.now() + SYNC_PAUSE_MS;
        this.lonely = 0;
      }
    } else {
      await writeAll(this.fh.fd, buf, this.pos);
      this.syncRun = 0;
      // Company: something was appended while this write was in flight.
      this.lonely = this.open === undefined && this.sealed.length === 0 ? this.lonely + 1 : 0;
    }
    this.pos += buf.length;
    this.counters.fsyncs++;
    this.counters.batches++;
    this.counters.bytes += buf.length;
    this.counters.largestBatch = Math.max(this.counters.largestBatch, batch.records);
  }

  /** Whether this batch is a lone writer's, to be written synchronously. */
  private alone(batch: Batch): boolean {
    return (
      this.opts.syncLoneWrites !== false &&
      batch.records === 1 &&
      batch.rotateTo === undefined &&
      this.lonely >= LONE_AFTER &&
      this.syncRun < PROBE_EVERY &&
      performance.now() >= this.syncPausedUntil
    );
  }

  private async startSegment(firstSeq: number): Promise<void> {
    const segment = { firstSeq, path: join(this.opts.dir, segmentName(firstSeq)) };
    const fh = await createSegment(this.opts.dir, segment.path);
    await this.fh.close();
    this.fh = fh;
    this.pos = HEADER_SIZE;
    this.segments.push(segment);
  }

  private fail(err: unknown): void {
    const cause = err instanceof Error ? err.message : String(err);
    const path = this.segments.at(-1)?.path ?? this.opts.dir;
    this.failure = new CorralError(
      'STORE_UNAVAILABLE',
      `the store journal ${path} could not be written (${cause}); the store stopped serving: fix the disk, then restart`,
      { cause: err },
    );
    this.opts.logger.error({ err, file: path }, this.failure.message);
    for (const batch of [this.inFlight, ...this.sealed, this.open]) {
      batch?.done.reject(this.failure);
      batch?.rotated?.reject(this.failure);
    }
    this.inFlight = undefined;
    this.open = undefined;
    this.sealed.length = 0;
    this.opts.onFailure(this.failure);
  }
}

function newBatch(): Batch {
  return { chunks: [], bytes: 0, records: 0, tag: 0n, done: deferred() };
}

// Creates a segment that did not exist (never overwrites), header included, durable with its entry.
async function createSegment(dir: string, path: string): Promise<FileHandle> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DSYNC);
  try {
    const header = fileHeader(JOURNAL_MAGIC);
    await fh.write(header, 0, header.length, 0);
    await fh.datasync();
    await fsyncDir(dir);
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}
