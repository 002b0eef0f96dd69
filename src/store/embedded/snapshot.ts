// Snapshots: the whole state at one record, so the journal before it can be removed.
// Written crash-safely: temp file, fsync, rename, fsync the directory. A snapshot that exists under
// its final name was therefore complete when renamed; if it does not read back, that is corruption.

import { open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CorralError } from '../../api/errors.js';
import type { KeyValue } from '../store.js';
import { HEADER_SIZE, FRAME_OVERHEAD, fileHeader, frame, frameAt, headerProblem } from './framing.js';
import { fsyncDir, writeFully } from './fs-util.js';
import { toBigint } from './records.js';
import type { StateImage } from './state.js';

export const SNAPSHOT_MAGIC = 'CORRALSN';
const SNAPSHOT_NAME = /^snap-(\d{16})\.snap$/;

export function snapshotName(seq: number): string {
  return `snap-${String(seq).padStart(16, '0')}.snap`;
}

/** Writes a snapshot durably; returns its path. */
export async function writeSnapshot(dir: string, image: StateImage): Promise<string> {
  const path = join(dir, snapshotName(image.seq));
  const tmp = `${path}.tmp`;
  const bytes = Buffer.concat([fileHeader(SNAPSHOT_MAGIC), ...frame(Buffer.from(encodeImage(image), 'utf8'))]);
  const fh = await open(tmp, 'w');
  try {
    await writeFully(fh, bytes, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncDir(dir);
  return path;
}

/** The newest snapshot, or undefined when there is none. Throws JOURNAL_CORRUPT naming a bad file. */
export async function loadNewestSnapshot(dir: string): Promise<{ path: string; image: StateImage } | undefined> {
  const newest = (await listSnapshots(dir)).at(-1);
  if (newest === undefined) return undefined;
  const buf = await readFile(newest.path);
  try {
    const image = decodeSnapshot(buf);
    if (image.seq !== newest.seq) throw new Error(`it holds record ${image.seq}, not ${newest.seq} as its name says`);
    return { path: newest.path, image };
  } catch (err) {
    throw new CorralError(
      'JOURNAL_CORRUPT',
      `snapshot ${newest.path} is corrupt (${(err as Error).message}). Nothing was changed. ` +
        'The journal before it was removed when it was written, so restore the data directory from a backup',
      { cause: err },
    );
  }
}

export async function listSnapshots(dir: string): Promise<{ seq: number; path: string }[]> {
  const found: { seq: number; path: string }[] = [];
  for (const name of await readdir(dir)) {
    const match = SNAPSHOT_NAME.exec(name);
    if (match) found.push({ seq: Number(match[1]), path: join(dir, name) });
  }
  return found.sort((a, b) => a.seq - b.seq);
}

/** Removes snapshots older than `seq`, once a newer one is durable. */
export async function removeSnapshotsBefore(dir: string, seq: number): Promise<void> {
  for (const s of await listSnapshots(dir)) if (s.seq < seq) await unlink(s.path);
}

/** Removes temp files left by a crash in the middle of writing a snapshot. */
export async function removeTempFiles(dir: string): Promise<void> {
  for (const name of await readdir(dir)) if (name.endsWith('.snap.tmp')) await unlink(join(dir, name));
}

function decodeSnapshot(buf: Buffer): StateImage {
  const problem = headerProblem(buf, SNAPSHOT_MAGIC);
  if (problem !== undefined) throw new Error(problem);
  const payload = frameAt(buf, HEADER_SIZE);
  if (payload === undefined) throw new Error('its record fails the length or checksum test');
  if (HEADER_SIZE + FRAME_OVERHEAD + payload.length !== buf.length) throw new Error('it has bytes after its record');
  return decodeImage(JSON.parse(payload.toString('utf8')) as unknown);
}

type WireKv = [key: string, value: string, create: string, mod: string, version: string, lease: string];

interface WireImage {
  seq: number;
  rev: string;
  leaseHighWater: string;
  kvs: WireKv[];
  leases: [id: string, ttl: number][];
}

function encodeImage(image: StateImage): string {
  const wire: WireImage = {
    seq: image.seq,
    rev: image.revision.toString(),
    leaseHighWater: image.leaseHighWater.toString(),
    kvs: image.kvs.map((kv) => [
      kv.key,
      kv.value,
      kv.createRevision.toString(),
      kv.modRevision.toString(),
      kv.version.toString(),
      kv.lease.toString(),
    ]),
    leases: image.leases.map((l) => [l.id.toString(), l.ttlSeconds]),
  };
  return JSON.stringify(wire);
}

function decodeImage(raw: unknown): StateImage {
  const w = raw as Partial<WireImage>;
  if (typeof w !== 'object' || w === null || typeof w.seq !== 'number' || !Array.isArray(w.kvs) || !Array.isArray(w.leases)) {
    throw new Error('its record is not a state image');
  }
  const kvs = w.kvs.map((row): KeyValue => {
    const [key, value, create, mod, version, lease] = row;
    if (typeof key !== 'string' || typeof value !== 'string') throw new Error('a key or value is not a string');
    return {
      key,
      value,
      createRevision: toBigint(create),
      modRevision: toBigint(mod),
      version: toBigint(version),
      lease: toBigint(lease),
    };
  });
  const leases = w.leases.map(([id, ttl]) => {
    if (typeof ttl !== 'number' || !(ttl > 0)) throw new Error('a lease has no ttl');
    return { id: toBigint(id), ttlSeconds: ttl };
  });
  return { seq: w.seq, revision: toBigint(w.rev), leaseHighWater: toBigint(w.leaseHighWater), kvs, leases };
}
