// Newline-delimited JSON as it arrives in chunks, shared by the client and the server.
// Import-light (the error catalogue only): the CLI loads it on its start path.

import { CorralError } from '../api/errors.js';

/** The first line of a raw channel connection on a UNIX socket, before its path (channel.ts). */
export const RAW_CHANNEL_MAGIC = 'CORRAL-CHANNEL/1 ';
/** The server's first line on a raw channel it serves (else an error line, and the end). */
export const RAW_CHANNEL_READY = 'CORRAL-CHANNEL/1 OK';

const NEWLINE = 0x0a;

/**
 * Splits bytes that arrive in chunks into their complete lines, decoded as UTF-8; blank lines are
 * dropped. Working on bytes (no string decoder): a newline byte never occurs inside a multi-byte
 * UTF-8 character, so every cut is at a character boundary.
 */
export class LineSplitter {
  private pending: Buffer | undefined;

  /** `maxBytes`: a longer line (or unterminated rest) throws TOO_LARGE. */
  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): string[] {
    const bytes = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = undefined;
    const lines: string[] = [];
    let start = 0;
    for (let nl = bytes.indexOf(NEWLINE); nl >= 0; nl = bytes.indexOf(NEWLINE, start)) {
      if (nl - start > this.maxBytes) throw this.tooLong();
      if (nl > start) lines.push(bytes.toString('utf8', start, nl));
      start = nl + 1;
    }
    if (start < bytes.length) {
      if (bytes.length - start > this.maxBytes) throw this.tooLong();
      // A copy: the chunk's memory may be reused by the stream.
      this.pending = Buffer.from(bytes.subarray(start));
    }
    return lines;
  }

  private tooLong(): CorralError {
    return new CorralError('TOO_LARGE', `a message line exceeds ${this.maxBytes} bytes`);
  }
}

/** An {"error": {...}} line (and nothing else) ends a stream or channel with that error. */
export function errorOfLine(value: unknown): CorralError | undefined {
  if (value === null || typeof value !== 'object' || !('error' in value)) return undefined;
  for (const key in value) if (key !== 'error') return undefined;
  return CorralError.fromWire(value.error);
}
