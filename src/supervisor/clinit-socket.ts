// clinit's wire: one JSON request line per connection on the daemon's UNIX socket (mode 0600),
// one JSON reply line, then the daemon closes, as Cluster::Init's one-request connections did
// (its framing was Perl Storable; this is corral's own). Every connection is served on its own
// and has a hard deadline from accept to reply and a size limit, so a client that is silent,
// slow or sends garbage holds only its own connection, and only briefly.

import { createServer, type Server, type Socket } from 'node:net';
import { CorralError } from '../api/errors.js';
import { clearStaleSocket, listenUnixSocket, removeSocketFile } from '../transport/unix-socket.js';
import type { Logger } from '../util/log.js';

import type { ClinitRequest, ClinitResponse } from './protocol.js';

export interface ClinitSocketOptions {
  logger: Logger;
  /** From accept to the reply being written (default 5 s). */
  deadlineMs?: number;
  /** The largest request line (default 64 KiB). */
  maxRequestBytes?: number;
  maxConnections?: number;
}

/** Parses one request line; throws BAD_REQUEST for anything else. */
export function parseRequest(line: string): ClinitRequest {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new CorralError('BAD_REQUEST', 'result unknown: the request is not JSON');
  }
  const req = (value ?? {}) as Record<string, unknown>;
  const word = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 1024 && !/\s/.test(v);
  switch (req.op) {
    case 'tell':
      if (!word(req.group) || !word(req.level)) throw new CorralError('BAD_REQUEST', 'result unknown: a tell needs a group and a level, each one word');
      return { op: 'tell', group: req.group, level: req.level };
    case 'reread':
    case 'shutdown':
    case 'status':
      return { op: req.op };
    default:
      throw new CorralError('BAD_REQUEST', 'result unknown: the request names no known operation');
  }
}

export class ClinitSocketServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly answering = new WeakSet<Socket>();
  private bound: { path: string; ino: number } | undefined;
  private readonly deadlineMs: number;
  private readonly maxBytes: number;

  constructor(
    private readonly handle: (req: ClinitRequest) => unknown,
    private readonly options: ClinitSocketOptions,
  ) {
    this.deadlineMs = options.deadlineMs ?? 5_000;
    this.maxBytes = options.maxRequestBytes ?? 64 * 1024;
    this.server = createServer({ allowHalfOpen: true }, (socket) => this.serve(socket));
    this.server.maxConnections = options.maxConnections ?? 512;
    this.server.on('error', (err) => options.logger.warn({ err: err.message }, 'clinit socket error'));
  }

  /** Binds with mode 0600; refuses (ALREADY_RUNNING) a socket that a live daemon answers on. */
  async listen(path: string): Promise<void> {
    try {
      await clearStaleSocket(path);
      this.bound = { path, ino: await listenUnixSocket(this.server, path, 0o600) };
    } catch (err) {
      if (err instanceof CorralError && err.code === 'ALREADY_RUNNING') {
        throw new CorralError('ALREADY_RUNNING', `a clinit daemon is already listening on ${path}; stop it with 'corral clinit -k' or choose another socket`);
      }
      if (err instanceof CorralError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw new CorralError('CONFIG_INVALID', `cannot listen on ${path} (${code ?? String(err)}); check the socket path and its directory`, { cause: err });
    }
  }

  /** Stops accepting, lets replies being written finish (briefly), drops the rest, removes the socket file. */
  async close(): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) if (!this.answering.has(socket)) socket.destroy();
    const grace = setTimeout(() => {
      for (const socket of this.sockets) socket.destroy();
    }, 1_000);
    await stopped;
    clearTimeout(grace);
    if (this.bound) await removeSocketFile(this.bound.path, this.bound.ino);
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    const deadline = setTimeout(() => socket.destroy(), this.deadlineMs);
    socket.once('close', () => {
      clearTimeout(deadline);
      this.sockets.delete(socket);
    });
    socket.on('error', () => undefined);
    let buffered = '';
    let answered = false;
    const answer = (response: ClinitResponse): void => {
      if (answered) return;
      answered = true;
      this.answering.add(socket);
      socket.removeAllListeners('data');
      socket.end(`${JSON.stringify(response)}\n`);
    };
    const fail = (err: unknown): void => answer({ ok: false, error: CorralError.from(err).toWire() });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf('\n');
      if (newline < 0 && buffered.length <= this.maxBytes) return;
      if (newline < 0 || newline > this.maxBytes) return fail(new CorralError('TOO_LARGE', `result unknown: a request line is at most ${this.maxBytes} bytes`));
      this.dispatch(buffered.slice(0, newline), answer, fail);
    });
    socket.once('end', () => (buffered.trim() === '' ? answer({ ok: false, error: { code: 'BAD_REQUEST', message: 'result unknown: no request' } }) : this.dispatch(buffered, answer, fail)));
  }

  private dispatch(line: string, answer: (r: ClinitResponse) => void, fail: (err: unknown) => void): void {
    try {
      answer({ ok: true, result: this.handle(parseRequest(line)) ?? null });
    } catch (err) {
      if (!(err instanceof CorralError)) this.options.logger.error({ err: (err as Error).stack ?? String(err) }, 'clinit request failed');
      fail(err);
    }
  }
}
