// On-disk framing shared by journal segments and snapshots.
//   file   = header (8-byte magic, u32 LE format version) then frames
//   frame  = [u32 LE payload length][u32 LE crc32(payload)][payload: one JSON object]
// A JSON object payload always starts with '{' and ends with '}'; recovery uses that, plus the CRC,
// to recognise a genuine frame when it scans forward past a damaged one.

import { crc32 } from 'node:zlib';

export const FORMAT_VERSION = 1;
export const HEADER_SIZE = 12;
export const FRAME_OVERHEAD = 8;
/** Frames longer than this are treated as damage rather than trusted. */
export const MAX_PAYLOAD = 256 * 1024 * 1024;

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

export function fileHeader(magic: string): Buffer {
  const header = Buffer.alloc(HEADER_SIZE);
  header.write(magic, 0, 8, 'latin1');
  header.writeUInt32LE(FORMAT_VERSION, 8);
  return header;
}

/** Why a header is unacceptable, or undefined when it is fine. */
export function headerProblem(buf: Buffer, magic: string): string | undefined {
  if (buf.length < HEADER_SIZE) return 'the file header is incomplete';
  if (buf.toString('latin1', 0, 8) !== magic) return `the file does not start with the ${magic.trim()} magic`;
  const version = buf.readUInt32LE(8);
  if (version !== FORMAT_VERSION) return `format version ${version} is not supported (this corral reads version ${FORMAT_VERSION})`;
  return undefined;
}

/** One frame, ready to write: header and payload as two buffers to avoid a copy. */
export function frame(payload: Buffer): [Buffer, Buffer] {
  const head = Buffer.allocUnsafe(FRAME_OVERHEAD);
  head.writeUInt32LE(payload.length, 0);
  head.writeUInt32LE(crc32(payload), 4);
  return [head, payload];
}

/** The payload of a valid frame at `offset`, or undefined when the bytes there are not one. */
export function frameAt(buf: Buffer, offset: number): Buffer | undefined {
  if (offset + FRAME_OVERHEAD > buf.length) return undefined;
  const length = buf.readUInt32LE(offset);
  const end = offset + FRAME_OVERHEAD + length;
  if (length < 2 || length > MAX_PAYLOAD || end > buf.length) return undefined;
  const start = offset + FRAME_OVERHEAD;
  if (buf[start] !== OPEN_BRACE || buf[end - 1] !== CLOSE_BRACE) return undefined;
  const payload = buf.subarray(start, end);
  return crc32(payload) === buf.readUInt32LE(offset + 4) ? payload : undefined;
}

export interface Frame {
  offset: number;
  payload: Buffer;
}

export interface FrameScan {
  frames: Frame[];
  /** Offset just past the last valid frame. */
  end: number;
  /** When the frames stop before the end of the buffer: where, and whether anything valid follows. */
  damage?: { offset: number; validFrameAfter: number | undefined };
}

/**
 * Reads consecutive frames from `start`. At the first bytes that are not a valid frame it scans
 * forward for any valid frame: finding one means the damage is in the middle (corruption);
 * finding none means the tail is torn (a crash during the last write).
 */
export function scanFrames(buf: Buffer, start: number): FrameScan {
  const frames: Frame[] = [];
  let offset = start;
  while (offset < buf.length) {
    const payload = frameAt(buf, offset);
    if (payload === undefined) {
      return { frames, end: offset, damage: { offset, validFrameAfter: findValidFrame(buf, offset + 1) } };
    }
    frames.push({ offset, payload });
    offset += FRAME_OVERHEAD + payload.length;
  }
  return { frames, end: offset };
}

function findValidFrame(buf: Buffer, from: number): number | undefined {
  for (let q = from; q + FRAME_OVERHEAD + 2 <= buf.length; q++) {
    // Cheap rejections first: most positions fail the length or the brace check.
    const length = buf.readUInt32LE(q);
    if (length < 2 || q + FRAME_OVERHEAD + length > buf.length) continue;
    if (buf[q + FRAME_OVERHEAD] !== OPEN_BRACE) continue;
    if (frameAt(buf, q) !== undefined) return q;
  }
  return undefined;
}
