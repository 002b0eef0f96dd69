// A process's stdout and stderr, appended to one file and rotated by size: at the limit, LOG
// becomes LOG.1, LOG.1 becomes LOG.2, ... and the oldest beyond `keep` is removed. Writes are
// synchronous appends (small, to the page cache), which keeps ordering and rotation simple; a
// failing disk loses output with one warning, it never stops the supervisor.

import { closeSync, fstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../util/log.js';
import type { LogRotation } from './types.js';

export class RotatingLog {
  private fd: number | undefined;
  private size = 0;
  private warned = false;

  constructor(
    readonly file: string,
    private rotation: LogRotation,
    private readonly logger: Logger,
  ) {}

  setRotation(rotation: LogRotation): void {
    this.rotation = rotation;
  }

  write(chunk: Buffer): void {
    try {
      if (this.fd === undefined) this.open();
      let rest = chunk;
      // A pipe read can hold many lines: split at the last newline that fits, so no file exceeds the limit.
      const max = Math.max(1, this.rotation.maxBytes);
      while (this.size + rest.length > max) {
        const room = max - this.size;
        const newline = room > 0 ? rest.lastIndexOf(0x0a, room - 1) : -1;
        const cut = newline >= 0 ? newline + 1 : this.size === 0 ? room : 0;
        this.append(rest.subarray(0, cut));
        rest = rest.subarray(cut);
        this.rotate();
      }
      this.append(rest);
    } catch (err) {
      if (!this.warned) this.logger.warn({ file: this.file, err: (err as Error).message }, 'cannot write a process log; its output is lost until this clears');
      this.warned = true;
      this.close();
    }
  }

  private append(bytes: Buffer): void {
    let off = 0;
    while (off < bytes.length) off += writeSync(this.fd as number, bytes, off);
    this.size += bytes.length;
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // already gone
    }
    this.fd = undefined;
  }

  private open(): void {
    mkdirSync(path.dirname(this.file), { recursive: true });
    this.fd = openSync(this.file, 'a', 0o640);
    this.size = fstatSync(this.fd).size;
    this.warned = false;
  }

  private rotate(): void {
    this.close();
    const { keep } = this.rotation;
    rmSync(`${this.file}.${keep}`, { force: true });
    for (let i = keep - 1; i >= 1; i--) renameIfExists(`${this.file}.${i}`, `${this.file}.${i + 1}`);
    if (keep > 0) renameIfExists(this.file, `${this.file}.1`);
    else rmSync(this.file, { force: true });
    this.open();
  }
}

function renameIfExists(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** A file-name-safe form of a group or tag ('/' and a leading '.' escaped as in URLs). */
export function safeName(name: string): string {
  return encodeURIComponent(name).replace(/^\./, '%2E');
}

export function processLogPath(logDir: string, group: string, tag: string): string {
  return path.join(logDir, safeName(group), `${safeName(tag)}.log`);
}
