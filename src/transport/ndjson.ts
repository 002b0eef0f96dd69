// Newline-delimited JSON as it arrives in chunks, shared by the client and the server.
// Import-light (the error catalogue only): the CLI loads it on its start path.

import { CorralError } from '../api/errors.js';

/** The first line of a raw channel connection on a UNIX socket, before its path (channel.ts). */
export const RAW_CHANNEL_MAGIC = 'CORRAL-CHANNEL/1 ';
/** The server's first line on a raw channel it serves (else an error line, and the end). */
export const RAW_CHANNEL_READY = 'CORRAL-CHANNEL/1 OK';

/** Splits text that arrives in chunks into its complete lines; blank lines are dropped. */
export class LineSplitter {
  private pending = '';

  /** `maxChars`: a longer line (or unterminated rest) throws TOO_LARGE. */
  constructor(private readonly maxChars: number) {}

  push(chunk: string): string[] {
    const text = this.pending === '' ? chunk : this.pending + chunk;
    const lines: string[] = [];
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      if (nl - start > this.maxChars) throw this.tooLong();
      if (nl > start) lines.push(text.slice(start, nl));
      start = nl + 1;
    }
    this.pending = start === 0 ? text : text.slice(start);
    if (this.pending.length > this.maxChars) throw this.tooLong();
    return lines;
  }

  /** What follows the last newline (a last line without one). */
  get rest(): string {
    return this.pending;
  }

  private tooLong(): CorralError {
    return new CorralError('TOO_LARGE', `a message line exceeds ${this.maxChars} characters`);
  }
}

/** An {"error": {...}} line (and nothing else) ends a stream or channel with that error. */
export function errorOfLine(value: unknown): CorralError | undefined {
  if (value === null || typeof value !== 'object' || !('error' in value)) return undefined;
  for (const key in value) if (key !== 'error') return undefined;
  return CorralError.fromWire(value.error);
}
