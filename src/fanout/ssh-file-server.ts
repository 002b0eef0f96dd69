// The local end of one file server session (FILE_SERVER_SCRIPT in ssh-remote.ts): writes requests
// with backpressure, reads the answers (one line each, after the "$PWD" record), and the base64
// body of a G answer as bytes.

import type { ChildProcess } from 'node:child_process';
import { AsyncQueue } from './async-queue.js';

export class FileServer {
  /** The remote login directory; rejects if the session ends first. */
  readonly home: Promise<string>;
  private buffer: Buffer = Buffer.alloc(0);
  private homeKnown = false;
  private readonly answers: string[] = [];
  private waiter: ((line: string | undefined) => void) | undefined;
  private ended = false;
  private stderrTail = '';
  /** While a G body streams: where its bytes go, and base64 characters waiting for a whole quantum. */
  private body: { queue: AsyncQueue<Buffer>; carry: string } | undefined;
  private readonly bodies: AsyncQueue<Buffer>[] = [];

  constructor(readonly child: ChildProcess) {
    let resolveHome!: (home: string) => void;
    let rejectHome!: (err: Error) => void;
    this.home = new Promise((resolve, reject) => {
      resolveHome = resolve;
      rejectHome = reject;
    });
    this.home.catch(() => undefined);
    child.stdout?.on('data', (d: Buffer) => {
      this.buffer = this.buffer.length > 0 ? Buffer.concat([this.buffer, d]) : d;
      if (!this.homeKnown) {
        const zero = this.buffer.indexOf(0);
        if (zero === -1) return;
        this.homeKnown = true;
        resolveHome(this.buffer.subarray(0, zero).toString('utf8'));
        this.buffer = this.buffer.subarray(zero + 1);
      }
      this.drain();
    });
    child.stderr?.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-4000)));
    const end = (): void => {
      this.ended = true;
      rejectHome(new Error('the session ended'));
      this.body?.queue.fail(new Error('the session ended'));
      this.body = undefined;
      const w = this.waiter;
      this.waiter = undefined;
      w?.(undefined);
    };
    child.once('close', end);
    child.once('error', end);
  }

  private drain(): void {
    for (;;) {
      const nl = this.buffer.indexOf(0x0a);
      if (this.body) {
        const text = this.body.carry + this.buffer.subarray(0, nl === -1 ? this.buffer.length : nl).toString('latin1');
        const whole = nl === -1 ? text.length - (text.length % 4) : text.length;
        this.body.carry = text.slice(whole);
        const bytes = Buffer.from(text.slice(0, whole), 'base64');
        const queue = this.body.queue;
        if (bytes.length > 0 && !queue.push(bytes)) {
          this.child.stdout?.pause();
          void queue.drained().then(() => this.child.stdout?.resume());
        }
        if (nl === -1) {
          this.buffer = Buffer.alloc(0);
          return;
        }
        this.body = undefined;
        queue.end();
        this.buffer = this.buffer.subarray(nl + 1);
        continue;
      }
      if (nl === -1) return;
      const line = this.buffer.subarray(0, nl).toString('utf8');
      this.buffer = this.buffer.subarray(nl + 1);
      // K starts a body: its bytes must not be read as answer lines.
      if (line === 'K') {
        const queue = new AsyncQueue<Buffer>(16);
        this.body = { queue, carry: '' };
        this.bodies.push(queue);
      }
      this.deliver(line);
    }
  }

  /** The session is over (or was killed): it takes no more requests. */
  get dead(): boolean {
    return this.ended || this.child.exitCode !== null || this.child.signalCode !== null;
  }

  get stderr(): string {
    return this.stderrTail;
  }

  private deliver(line: string): void {
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w(line);
    } else this.answers.push(line);
  }

  /** Writes to the session, waiting while its pipe is full; a dead session swallows the bytes. */
  write(data: Buffer | string): Promise<void> {
    const stdin = this.child.stdin;
    if (!stdin || stdin.destroyed || !stdin.writable || this.dead) return Promise.resolve();
    if (stdin.write(data)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        stdin.off('drain', done);
        stdin.off('close', done);
        resolve();
      };
      stdin.on('drain', done);
      stdin.on('close', done);
    });
  }

  /** The next answer line, or undefined when the session ended without one. */
  next(): Promise<string | undefined> {
    const line = this.answers.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** After a `K` answer: the body's bytes, up to the newline that ends it. */
  body64(): AsyncQueue<Buffer> {
    const queue = this.bodies.shift();
    if (queue) return queue;
    const failed = new AsyncQueue<Buffer>(1);
    failed.fail(new Error('no body follows'));
    return failed;
  }

  /**
   * Ends the session by closing its input, which the remote side reads as a sender that stopped
   * (it removes its temporary file); resolves once the session is over (killed after `graceMs`).
   */
  finish(graceMs = 5000): Promise<void> {
    this.ended = true;
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      this.child.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.child.stdin?.end();
    });
  }

  kill(): void {
    this.ended = true;
    this.child.kill('SIGTERM');
  }
}
