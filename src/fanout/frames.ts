// Framed files in one byte stream, for batched transfers: each file is one JSON header line
// followed by exactly `size` raw bytes. Many small files then travel in one request (no request,
// stream or store lookup per file), and a large one still streams through in chunks.

import { CorralError } from '../api/errors.js';

/** A header line is small (a path of at most 4 KiB, a hash, a few numbers and node names). */
export const MAX_HEADER = 64 * 1024;

export function frameHeader(header: object): Buffer {
  return Buffer.from(JSON.stringify(header) + '\n');
}

async function* nothing(): AsyncGenerator<Buffer> {
  // An absent input is an empty batch.
}

/** Reads headers and bodies from a stream of chunks; bodies are handed out without copying. */
export class FrameReader {
  private readonly source: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private ended = false;

  constructor(input: AsyncIterable<Buffer> | undefined) {
    this.source = (input ?? nothing())[Symbol.asyncIterator]();
  }

  private get available(): number {
    return this.buf.length - this.pos;
  }

  /** Appends the next chunk (keeping unread bytes); false at the end of the input. */
  private async more(): Promise<boolean> {
    if (this.ended) return false;
    const step = await this.source.next();
    if (step.done) {
      this.ended = true;
      return false;
    }
    const chunk = Buffer.isBuffer(step.value) ? step.value : Buffer.from(step.value);
    this.buf = this.available > 0 ? Buffer.concat([this.buf.subarray(this.pos), chunk]) : chunk;
    this.pos = 0;
    return true;
  }

  /** The next header, parsed; undefined at a clean end of the input (between two files). */
  async header(): Promise<unknown> {
    for (;;) {
      const nl = this.buf.indexOf(10, this.pos);
      if (nl !== -1 && nl - this.pos <= MAX_HEADER) {
        const text = this.buf.toString('utf8', this.pos, nl);
        this.pos = nl + 1;
        try {
          return JSON.parse(text) as unknown;
        } catch {
          throw new CorralError('BAD_REQUEST', `a file header in the batch is not valid JSON: ${text.slice(0, 100)}`);
        }
      }
      if (this.available > MAX_HEADER) throw new CorralError('BAD_REQUEST', `a file header in the batch is longer than ${MAX_HEADER} bytes`);
      if (!(await this.more())) {
        if (this.available === 0) return undefined;
        throw new CorralError('BAD_REQUEST', 'the batch ended inside a file header');
      }
    }
  }

  /** The next `size` bytes in one buffer (shorter only when the input ended first). */
  async read(size: number): Promise<Buffer> {
    if (this.available >= size) {
      const out = this.buf.subarray(this.pos, this.pos + size);
      this.pos += size;
      return out;
    }
    const parts: Buffer[] = [];
    let got = 0;
    for await (const chunk of this.body(size).chunks) {
      parts.push(chunk);
      got += chunk.length;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, got);
  }

  /**
   * The next `size` bytes as chunks, as they arrive. Whatever the consumer leaves unread is
   * skipped by `rest()`, so the next header is found even after a file failed half-way.
   */
  body(size: number): { chunks: AsyncIterable<Buffer>; rest(): Promise<number> } {
    let left = size;
    const next = async (): Promise<Buffer | undefined> => {
      if (left === 0) return undefined;
      if (this.available === 0 && !(await this.more())) return undefined;
      const n = Math.min(left, this.available);
      const out = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      left -= n;
      return out;
    };
    return {
      chunks: {
        [Symbol.asyncIterator]: () => ({
          next: async (): Promise<IteratorResult<Buffer>> => {
            const value = await next();
            return value === undefined ? { value: undefined, done: true } : { value, done: false };
          },
        }),
      },
      rest: async (): Promise<number> => {
        let skipped = 0;
        for (let chunk = await next(); chunk !== undefined; chunk = await next()) skipped += chunk.length;
        return skipped;
      },
    };
  }

  /** True once the input ended and every byte was consumed. */
  get done(): boolean {
    return this.ended && this.available === 0;
  }
}
