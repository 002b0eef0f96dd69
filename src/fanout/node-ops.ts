// What a node does for fan-out, on its own machine: run a command (argv, never a shell unless the
// user asked for one) in its own process group and stream its output; create directories; tell
// which files it already holds; receive a file (hashed while written, to a temporary name, fsynced,
// renamed into place only when its SHA-256 matches); list and read files for gather.
// Relative paths resolve against the work directory; writes must stay inside the write roots.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, lstatSync } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, readFile, realpath, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { CorralError } from '../api/errors.js';
import type {
  ExecEvent,
  ListedEntry,
  NodeCheckArgs,
  NodeCheckResult,
  NodeExecArgs,
  NodeListResult,
  NodeMkdirResult,
  NodePutArgs,
  NodePutBatchArgs,
  NodePutBatchEvent,
  NodePutResult,
  BatchFileHeader,
  FileEntry,
} from '../api/fanout-wire.js';
import { signalProcessGroup } from '../util/process-group.js';
import { AsyncQueue } from './async-queue.js';
import { FrameReader } from './frames.js';

export interface NodeOpsOptions {
  node: string;
  workDir: string;
  /** Absolute directories under which writes are allowed (default: the work directory). */
  writeRoots?: readonly string[];
  /** Test-only fault injection: flip a byte of every received file whose path contains this. */
  corruptPutsMatching?: string;
  /** Test-only: hold every received file this long, verified but not yet renamed into place. */
  slowPutMs?: number;
}

const MAX_PATH = 4096;
const MAX_LIST = 1_000_000;
const SHA256 = /^[0-9a-f]{64}$/;
const SCRIPT_LIMIT = 8 * 1024 * 1024;
/** Files up to this size are read in one go. */
export const SMALL_FILE = 1024 * 1024;
/** Small files of one batch written at once, and answers queued before the batch waits for its reader. */
const BATCH_WRITERS = 16;
const BATCH_ANSWERS = 256;
/** Received bytes are written to disk in pieces of at least this. */
const WRITE_BATCH = 1024 * 1024;
/**
 * Batched files up to this size are read whole, hashed, then written in one call, several at
 * once; larger ones stream to disk as they arrive (for a 1 MB file that costs less: no copy into
 * one buffer, no file whole in memory).
 */
const WHOLE_FILE = 128 * 1024;
const TEMP_PREFIX = randomBytes(4).toString('hex');
/** Read once: the bits that files created by this process lose. */
const UMASK = process.umask();

function badPath(what: string, p: unknown): never {
  throw new CorralError('BAD_REQUEST', `${what}: ${JSON.stringify(p)?.slice(0, 200)} is not a usable path (a non-empty string without NUL bytes, at most ${MAX_PATH} bytes)`);
}

function checkPathText(what: string, p: unknown): string {
  if (typeof p !== 'string' || p === '' || p.includes('\0') || Buffer.byteLength(p) > MAX_PATH) badPath(what, p);
  return p;
}

/** A path inside a destination: relative, no "..", no empty or "." segments. */
export function checkRelative(what: string, p: unknown): string {
  const text = checkPathText(what, p);
  if (path.isAbsolute(text) || text.split('/').some((seg) => seg === '..' || seg === '.' || seg === '')) {
    throw new CorralError('BAD_REQUEST', `${what}: ${JSON.stringify(text)} must be a relative path without "." or ".." segments`);
  }
  return text;
}

/** Appends to a file in writes of WRITE_BATCH bytes or more, one in flight while the next gathers. */
class BatchedWriter {
  private parts: Buffer[] = [];
  private size = 0;
  private inflight: Promise<void> | undefined;

  constructor(private readonly handle: FileHandle) {}

  async write(data: Buffer): Promise<void> {
    this.parts.push(data);
    this.size += data.length;
    if (this.size >= WRITE_BATCH) await this.send();
  }

  async flush(): Promise<void> {
    if (this.size > 0) await this.send();
    await this.inflight;
  }

  private async send(): Promise<void> {
    await this.inflight;
    const parts = this.parts;
    const size = this.size;
    this.parts = [];
    this.size = 0;
    this.inflight = this.handle.writev(parts).then(({ bytesWritten }) => {
      if (bytesWritten !== size) throw Object.assign(new Error('short write'), { code: 'ENOSPC' });
    });
    // Failures surface at the next send() or flush(); until then the promise must not be unhandled.
    this.inflight.catch(() => undefined);
  }
}

/** The test-only fault: the first byte flipped, in a copy. */
function flipFirstByte(data: Buffer): Buffer {
  const copy = Buffer.from(data);
  copy[0] = (copy[0] as number) ^ 0xff;
  return copy;
}

/** A file entry from a peer, checked: a relative path, a size, a SHA-256; the mode kept to its permission bits. */
function checkFileEntry(file: unknown): FileEntry & { mode: number } {
  if (!file || typeof file !== 'object') throw new CorralError('BAD_REQUEST', 'put needs file: {path, size, mode, sha256}');
  const f = file as Partial<FileEntry>;
  const rel = checkRelative('file', f.path);
  if (!Number.isSafeInteger(f.size) || (f.size as number) < 0) throw new CorralError('BAD_REQUEST', `put ${rel}: size must be a non-negative integer`);
  if (typeof f.sha256 !== 'string' || !SHA256.test(f.sha256)) throw new CorralError('BAD_REQUEST', `put ${rel}: sha256 must be 64 lower-case hex digits`);
  return { path: rel, size: f.size as number, sha256: f.sha256, mode: Number.isInteger(f.mode) ? (f.mode as number) & 0o777 : 0o644 };
}

/** What a batch needs to stay in step: the file's number and size. Without them it cannot go on. */
function batchFraming(head: unknown): { i: number; size: number } {
  const h = (head ?? {}) as Partial<BatchFileHeader>;
  if (typeof head !== 'object' || !Number.isSafeInteger(h.i) || !Number.isSafeInteger(h.size) || (h.size as number) < 0) {
    throw new CorralError('BAD_REQUEST', 'every file of a batch needs a header with a number i and a size');
  }
  return { i: h.i as number, size: h.size as number };
}

function fileError(err: unknown, doing: string): CorralError {
  if (err instanceof CorralError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
  const why: Record<string, string> = {
    ENOENT: 'it does not exist',
    ENOTDIR: 'a component is not a directory',
    EISDIR: 'it is a directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOSPC: 'no space left on the device',
    EEXIST: 'something else already exists there',
    EROFS: 'the file system is read-only',
  };
  return new CorralError('FILE_ERROR', `${doing}: ${why[code] ?? code}`, { cause: err });
}

export class NodeOps {
  readonly node: string;
  readonly workDir: string;
  private readonly writeRoots: readonly string[];
  private realRoots: Promise<string[]> | undefined;
  private readonly corruptPutsMatching: string | undefined;
  private readonly slowPutMs: number;
  private temps = 0;

  constructor(opts: NodeOpsOptions) {
    this.node = opts.node;
    this.workDir = path.resolve(opts.workDir);
    this.writeRoots = (opts.writeRoots ?? [this.workDir]).map((r) => path.resolve(r));
    this.corruptPutsMatching = opts.corruptPutsMatching;
    this.slowPutMs = opts.slowPutMs ?? 0;
  }

  /** A user's path on this node: relative to the work directory unless absolute. */
  resolve(p: unknown, what = 'path'): string {
    return path.resolve(this.workDir, checkPathText(what, p));
  }

  /**
   * Refuses a write target outside the write roots. The check is on real paths (the deepest
   * existing ancestor, symlinks resolved), so a symlink inside a root cannot lead out of it.
   */
  private async assertWritable(abs: string): Promise<void> {
    this.realRoots ??= Promise.all(this.writeRoots.map((r) => realpath(r).catch(() => r)));
    const roots = await this.realRoots;
    let probe = abs;
    let rest = '';
    for (;;) {
      try {
        const real = await realpath(probe);
        const full = rest === '' ? real : path.join(real, rest);
        if (roots.some((r) => full === r || full.startsWith(r.endsWith('/') ? r : `${r}/`))) return;
        break;
      } catch {
        const parent = path.dirname(probe);
        if (parent === probe) break;
        rest = rest === '' ? path.basename(probe) : path.join(path.basename(probe), rest);
        probe = parent;
      }
    }
    throw new CorralError('PATH_REFUSED', `${this.node} may not write ${abs}: it is outside ${this.writeRoots.join(', ')} (add the directory to writeRoots of ${this.node} in corral.yaml)`);
  }

  async mkdir(args: { paths?: unknown }): Promise<NodeMkdirResult> {
    if (!Array.isArray(args.paths) || args.paths.length === 0 || args.paths.length > 10_000) {
      throw new CorralError('BAD_REQUEST', 'mkdir needs paths: a list of 1 to 10000 directories');
    }
    const abs = args.paths.map((p) => this.resolve(p, 'mkdir'));
    for (const p of abs) await this.assertWritable(p);
    const dirs: NodeMkdirResult['dirs'] = [];
    for (const p of abs) {
      try {
        const first = await mkdir(p, { recursive: true });
        if (first === undefined) {
          const st = await stat(p);
          if (!st.isDirectory()) throw Object.assign(new Error('exists'), { code: 'EEXIST' });
        }
        dirs.push({ path: p, created: first !== undefined });
      } catch (err) {
        throw fileError(err, `mkdir ${p} on ${this.node}`);
      }
    }
    return { dirs };
  }

  private destination(dest: unknown): string {
    return this.resolve(dest, 'destination');
  }

  async check(args: Partial<NodeCheckArgs>): Promise<NodeCheckResult> {
    if (!Array.isArray(args.files) || args.files.length > 1_000_000) throw new CorralError('BAD_REQUEST', 'check needs files: a list of entries');
    const dest = this.destination(args.dest);
    const present: boolean[] = [];
    for (const f of args.files) {
      const target = path.join(dest, checkRelative('file', f.path));
      try {
        const st = await stat(target);
        present.push(st.isFile() && st.size === f.size && (await sha256File(target, st.size)) === f.sha256);
      } catch {
        present.push(false);
      }
    }
    return { present };
  }

  /** Receives one file from `input`; it is put in place only if size and SHA-256 match. */
  async put(args: Partial<NodePutArgs>, input: AsyncIterable<Buffer> | undefined): Promise<NodePutResult> {
    const file = checkFileEntry(args.file);
    const target = path.join(this.destination(args.dest), file.path);
    await this.assertWritable(target);
    await this.makeDir(path.dirname(target));
    const sweep = this.sweepTemps(path.dirname(target));
    try {
      return await this.receive(target, file, input ?? [], args.fsync === true, true);
    } finally {
      await sweep;
    }
  }

  /**
   * Receives many files from one stream of frames (a header line, then the file's bytes; see
   * frames.ts) and answers one event per file as each finishes. Every file gets what put() gives
   * one: the write roots checked, hashed as it arrives, a temporary name renamed only on a match.
   * Small files are written several at once; a large one streams through without being buffered.
   */
  putBatch(args: Partial<NodePutBatchArgs>, input: AsyncIterable<Buffer> | undefined): AsyncIterable<NodePutBatchEvent> {
    const dest = this.destination(args.dest);
    const queue = new AsyncQueue<NodePutBatchEvent>(BATCH_ANSWERS);
    void this.receiveBatch(dest, args.fsync === true, new FrameReader(input), queue).then(
      () => queue.end(),
      (err: unknown) => queue.fail(err),
    );
    return queue;
  }

  private async receiveBatch(dest: string, fsync: boolean, reader: FrameReader, queue: AsyncQueue<NodePutBatchEvent>): Promise<void> {
    // Per batch, each directory is checked against the write roots and created once, and the
    // temporaries an earlier agent of this node left there are swept (sweeps, awaited at the end).
    const dirs = new Map<string, Promise<void>>();
    const sweeps: Promise<void>[] = [];
    const inflight = new Set<Promise<void>>();
    const answer = (i: number, work: Promise<NodePutResult>): Promise<void> =>
      work.then(
        (result) => void queue.push({ i, t: 'ok', result }),
        (err: unknown) => {
          const e = CorralError.from(err);
          queue.push({ i, t: 'error', error: e.message, code: e.code });
        },
      );
    try {
      for (let head = await reader.header(); head !== undefined; head = await reader.header()) {
        const { i, size } = batchFraming(head);
        let file: FileEntry & { mode: number };
        let target: string;
        try {
          file = checkFileEntry(head);
          target = path.join(dest, file.path);
        } catch (err) {
          await reader.body(size).rest();
          await answer(i, Promise.reject(CorralError.from(err)));
          continue;
        }
        const ready = this.batchTarget(target, dirs, sweeps);
        // It may fail while the bytes are still being read; the answer below reports it.
        ready.catch(() => undefined);
        if (size <= WHOLE_FILE) {
          const data = await reader.read(size);
          while (inflight.size >= BATCH_WRITERS) await Promise.race(inflight);
          const job = answer(i, ready.then(() => (fsync ? this.receive(target, file, [data], true, false) : this.receiveWhole(target, file, data))));
          inflight.add(job);
          void job.finally(() => inflight.delete(job));
        } else {
          const body = reader.body(size);
          await answer(i, ready.then(() => this.receive(target, file, body.chunks, fsync, false)));
          await body.rest();
        }
        await queue.drained();
      }
    } finally {
      await Promise.all(inflight);
      await Promise.all(sweeps);
    }
  }

  /** A batch's target: its directory checked and created (once per batch), not a directory itself. */
  private async batchTarget(target: string, dirs: Map<string, Promise<void>>, sweeps: Promise<void>[]): Promise<void> {
    const dir = path.dirname(target);
    let ready = dirs.get(dir);
    if (!ready) {
      ready = this.assertWritable(dir).then(() => this.makeDir(dir));
      ready.catch(() => undefined);
      dirs.set(dir, ready);
      sweeps.push(ready.then(() => this.sweepTemps(dir), () => undefined));
    }
    await ready;
    // Synchronous: one system call, and no error object for the usual absent target.
    let existing;
    try {
      existing = lstatSync(target, { throwIfNoEntry: false });
    } catch {
      existing = undefined;
    }
    // rename() replaces a symlink rather than following it; refused all the same if it leads out.
    if (existing?.isSymbolicLink()) await this.assertWritable(target);
    if (existing?.isDirectory()) throw fileError(Object.assign(new Error('is a directory'), { code: 'EISDIR' }), `putting ${target} in place on ${this.node}`);
  }

  private async makeDir(dir: string): Promise<void> {
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw fileError(err, `creating ${dir} on ${this.node}`);
    }
  }

  /**
   * A small file of a batch, whole in memory: hashed first (a mismatch touches nothing), then
   * written to its temporary name and renamed. Four thread-pool round trips (open, write, close,
   * rename) instead of the streaming path's seven: on a busy machine each is a context switch,
   * and those are what limit thousands of small files.
   */
  private async receiveWhole(target: string, file: FileEntry & { mode: number }, received: Buffer): Promise<NodePutResult> {
    const data = this.corruptPutsMatching !== undefined && file.path.includes(this.corruptPutsMatching) && received.length > 0 ? flipFirstByte(received) : received;
    const sha256 = createHash('sha256').update(data).digest('hex');
    if (data.length !== file.size) {
      throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: ${data.length} of ${file.size} bytes arrived (the sender stopped); nothing was put in place`);
    }
    if (sha256 !== file.sha256) {
      throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: SHA-256 ${sha256.slice(0, 12)}… does not match the sent ${file.sha256.slice(0, 12)}…; nothing was put in place, send it again`);
    }
    const temp = this.tempName(target);
    let placed = false;
    try {
      // Created with its final mode (the bytes are checked already and land in one write); a
      // chmod only when the umask would take away some of the mode's bits.
      await writeFile(temp, data, { flag: 'wx', mode: file.mode });
      if ((file.mode & UMASK) !== 0) await chmod(temp, file.mode);
      if (this.slowPutMs > 0) await new Promise((resolve) => setTimeout(resolve, this.slowPutMs));
      await rename(temp, target);
      placed = true;
      return { path: target, bytes: data.length, sha256 };
    } catch (err) {
      throw fileError(err, `writing ${target} on ${this.node}`);
    } finally {
      if (!placed) await unlink(temp).catch(() => undefined);
    }
  }

  /**
   * A temporary name beside `target`: hidden, unique in this process, distinct across processes,
   * and naming this node, so that the temporaries a killed agent left can be told apart from those
   * of a live one (sweepTemps).
   */
  private tempName(target: string): string {
    return path.join(path.dirname(target), `.${path.basename(target)}.corral-${this.node}-${TEMP_PREFIX}${(this.temps++).toString(36)}.part`);
  }

  /**
   * Removes from `dir` the temporaries of this node's earlier agents (killed in the middle of a
   * transfer: a live agent removes its own). One agent runs per node, so a temporary of this node
   * with another process's prefix is nobody's; other nodes' (a directory they share) are left.
   */
  private async sweepTemps(dir: string): Promise<void> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    const mine = `${this.node}-`;
    const doomed = names.filter((name) => {
      if (!name.startsWith('.') || !name.endsWith('.part')) return false;
      const at = name.lastIndexOf('.corral-');
      if (at < 0) return false;
      const tag = name.slice(at + '.corral-'.length, -'.part'.length);
      if (!tag.startsWith(mine)) return false;
      const rest = tag.slice(mine.length);
      return /^[0-9a-f]{8}[0-9a-z]+$/.test(rest) && rest.slice(0, 8) !== TEMP_PREFIX;
    });
    await Promise.all(doomed.map((name) => unlink(path.join(dir, name)).catch(() => undefined)));
  }

  /**
   * Writes `input` to a temporary name beside `target`, hashing it; renames it into place only if
   * size and SHA-256 match, else removes it. `checkTarget`: make sure first that the target is not
   * a directory (a batch did so already).
   */
  private async receive(target: string, file: FileEntry & { mode: number }, input: AsyncIterable<Buffer> | Iterable<Buffer>, fsync: boolean, checkTarget: boolean): Promise<NodePutResult> {
    const temp = this.tempName(target);
    const hash = createHash('sha256');
    let bytes = 0;
    let handle;
    try {
      handle = await open(temp, 'wx', 0o600);
    } catch (err) {
      throw fileError(err, `writing ${target} on ${this.node}`);
    }
    let placed = false;
    try {
      const corrupt = this.corruptPutsMatching !== undefined && file.path.includes(this.corruptPutsMatching);
      // Chunks (16 KiB frames) are gathered into large writes, one in flight while the next
      // gathers: a write per chunk would make the disk's round trips the transfer's pace.
      const out = new BatchedWriter(handle);
      for await (const chunk of input) {
        const data = corrupt && bytes === 0 && chunk.length > 0 ? Buffer.from(chunk) : chunk;
        if (data !== chunk) data[0] = (data[0] as number) ^ 0xff;
        bytes += data.length;
        if (bytes > file.size) throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: more bytes arrived than the ${file.size} announced`);
        hash.update(data);
        await out.write(data);
      }
      await out.flush();
      const sha256 = hash.digest('hex');
      if (bytes !== file.size) {
        throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: ${bytes} of ${file.size} bytes arrived (the sender stopped); nothing was put in place`);
      }
      if (sha256 !== file.sha256) {
        throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: SHA-256 ${sha256.slice(0, 12)}… does not match the sent ${file.sha256.slice(0, 12)}…; nothing was put in place, send it again`);
      }
      await handle.chmod(file.mode);
      if (fsync) await handle.datasync();
      await handle.close();
      handle = undefined;
      if (this.slowPutMs > 0) await new Promise((resolve) => setTimeout(resolve, this.slowPutMs));
      try {
        if (checkTarget) {
          const existing = await lstat(target).catch(() => undefined);
          if (existing?.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
        }
        await rename(temp, target);
      } catch (err) {
        throw fileError(err, `putting ${target} in place on ${this.node}`);
      }
      placed = true;
      return { path: target, bytes, sha256 };
    } catch (err) {
      throw err instanceof CorralError ? err : fileError(err, `writing ${target} on ${this.node}`);
    } finally {
      await handle?.close().catch(() => undefined);
      if (!placed) await unlink(temp).catch(() => undefined);
    }
  }

  /** A file or a directory tree, each file with its SHA-256; paths start with the listed name. */
  async list(args: { path?: unknown }): Promise<NodeListResult> {
    const root = this.resolve(args.path, 'gather');
    const entries: ListedEntry[] = [];
    const visit = async (abs: string, rel: string): Promise<void> => {
      if (entries.length >= MAX_LIST) throw new CorralError('TOO_LARGE', `${root} on ${this.node} holds over ${MAX_LIST} entries`);
      const st = await lstat(abs);
      if (st.isFile()) {
        entries.push({ path: rel, type: 'file', size: st.size, mode: st.mode & 0o777, sha256: await sha256File(abs, st.size) });
      } else if (st.isDirectory()) {
        entries.push({ path: rel, type: 'dir', size: 0, mode: st.mode & 0o777 });
        const names = (await readdir(abs)).sort();
        for (const name of names) await visit(path.join(abs, name), `${rel}/${name}`);
      }
      // Symlinks, sockets, devices and FIFOs are not gathered.
    };
    try {
      await visit(root, path.basename(root) || 'root');
    } catch (err) {
      throw fileError(err, `gather ${root} on ${this.node}`);
    }
    return { root, entries };
  }

  /** The bytes of one regular file. */
  async read(args: { path?: unknown }): Promise<AsyncIterable<Buffer>> {
    const abs = this.resolve(args.path, 'read');
    try {
      const st = await stat(abs);
      if (!st.isFile()) throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
    } catch (err) {
      throw fileError(err, `reading ${abs} on ${this.node}`);
    }
    return createReadStream(abs, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;
  }

  /**
   * Runs a command; yields start, output and one exit event. The command gets its own process
   * group, which a timeout or the caller going away (`signal`) ends: SIGTERM, then SIGKILL.
   */
  exec(args: Partial<NodeExecArgs>, input: AsyncIterable<Buffer> | undefined, signal: AbortSignal): AsyncIterable<ExecEvent> {
    const spec = validateExec(args);
    const queue = new AsyncQueue<ExecEvent>(64);
    void this.runCommand(spec, input, signal, queue);
    return queue;
  }

  private async runCommand(spec: NodeExecArgs, input: AsyncIterable<Buffer> | undefined, signal: AbortSignal, queue: AsyncQueue<ExecEvent>): Promise<void> {
    const started = performance.now();
    const ms = (): number => Math.round((performance.now() - started) * 1000) / 1000;
    let scriptDir: string | undefined;
    try {
      let argv = spec.argv;
      if (spec.script) {
        scriptDir = await this.writeScript(spec.script);
        argv = [path.join(scriptDir, spec.script.name), ...spec.argv];
      }
      const [file, ...rest] = spec.shell ? ['/bin/sh', '-c', ...argv] : argv;
      const cwd = spec.cwd === undefined ? this.workDir : this.resolve(spec.cwd, 'cwd');
      await mkdir(this.workDir, { recursive: true }).catch(() => undefined);
      const env = {
        ...process.env,
        CORRAL_NODE: this.node,
        CORRAL_RANK: String(spec.rank),
        CORRAL_SIZE: String(spec.size),
        ...spec.env,
      };
      const child = spawn(file as string, rest, { cwd, env, detached: true, stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
      let timedOut = false;
      let killTimer: NodeJS.Timeout | undefined;
      let graceTimer: NodeJS.Timeout | undefined;
      const stopGroup = (): void => {
        if (child.pid === undefined || graceTimer) return;
        signalProcessGroup(child.pid, 'SIGTERM');
        graceTimer = setTimeout(() => signalProcessGroup(child.pid as number, 'SIGKILL'), spec.killGraceMs ?? 2000);
      };
      const onAbort = (): void => stopGroup();
      const spawnError = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        child.once('spawn', () => resolve(undefined));
        child.once('error', (err) => resolve(err));
      });
      if (spawnError) {
        const code = spawnError.code === 'ENOENT' ? 127 : 126;
        const why = spawnError.code === 'ENOENT' ? 'command not found' : `cannot run it (${spawnError.code ?? spawnError.message})`;
        queue.push({ t: 'err', b: Buffer.from(`corral: ${file}: ${why}\n`).toString('base64') });
        queue.push({ t: 'exit', code, signal: null, timedOut: false, ms: ms() });
        return;
      }
      queue.push({ t: 'start', pid: child.pid as number });
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort();
      if (spec.timeoutMs !== undefined) {
        killTimer = setTimeout(() => {
          timedOut = true;
          stopGroup();
        }, spec.timeoutMs);
      }
      if (input && child.stdin) void pipeInput(input, child.stdin);
      const pump = (stream: NodeJS.ReadableStream, t: 'out' | 'err'): void => {
        stream.on('data', (chunk: Buffer) => {
          if (!queue.push({ t, b: chunk.toString('base64') })) {
            stream.pause();
            void queue.drained().then(() => stream.resume());
          }
        });
      };
      pump(child.stdout as NodeJS.ReadableStream, 'out');
      pump(child.stderr as NodeJS.ReadableStream, 'err');
      const exit = await new Promise<{ code: number | null; signal: string | null }>((resolve) => {
        child.once('exit', (code, sig) => {
          // Output still in the pipes arrives before 'close'; a background child that keeps them
          // open must not hold the answer forever.
          const late = setTimeout(() => {
            child.stdout?.destroy();
            child.stderr?.destroy();
            resolve({ code, signal: sig });
          }, 2000);
          child.once('close', () => {
            clearTimeout(late);
            resolve({ code, signal: sig });
          });
        });
      });
      clearTimeout(killTimer);
      signal.removeEventListener('abort', onAbort);
      // Whatever the command left behind in its group goes with it when it timed out or was stopped.
      if (timedOut || signal.aborted) signalProcessGroup(child.pid as number, 'SIGKILL');
      clearTimeout(graceTimer);
      queue.push({ t: 'exit', code: exit.code, signal: exit.signal, timedOut, ms: ms() });
    } catch (err) {
      queue.fail(err instanceof CorralError ? err : fileError(err, `running the command on ${this.node}`));
      return;
    } finally {
      if (scriptDir) await rm(scriptDir, { recursive: true, force: true }).catch(() => undefined);
    }
    queue.end();
  }

  private async writeScript(script: { name: string; base64: string }): Promise<string> {
    const name = checkRelative('script name', script.name);
    if (name.includes('/')) throw new CorralError('BAD_REQUEST', `script name ${JSON.stringify(name)} must not contain "/"`);
    const data = Buffer.from(script.base64, 'base64');
    if (data.length > SCRIPT_LIMIT) throw new CorralError('TOO_LARGE', `the script is over ${SCRIPT_LIMIT} bytes`);
    const dir = path.join(this.workDir, '.corral', 'scripts', randomBytes(8).toString('hex'));
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writeFile(path.join(dir, name), data, { mode: 0o700 });
      await chmod(path.join(dir, name), 0o700);
    } catch (err) {
      throw fileError(err, `writing the script on ${this.node}`);
    }
    return dir;
  }
}

async function pipeInput(input: AsyncIterable<Buffer>, stdin: NodeJS.WritableStream & { destroyed?: boolean }): Promise<void> {
  stdin.on('error', () => undefined); // the command may exit without reading its input
  try {
    for await (const chunk of input) {
      if (stdin.destroyed) return;
      if (!stdin.write(chunk)) await new Promise((resolve) => stdin.once('drain', resolve));
    }
  } catch {
    // the sender went away: the command sees end of input
  }
  stdin.end();
}

function validateExec(args: Partial<NodeExecArgs>): NodeExecArgs {
  const { argv } = args;
  if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string' && !a.includes('\0'))) {
    throw new CorralError('BAD_REQUEST', 'exec needs argv: a list of strings without NUL bytes');
  }
  if (argv.length === 0 && !args.script) throw new CorralError('BAD_REQUEST', 'exec needs a command');
  if (args.shell && argv.length !== 1) throw new CorralError('BAD_REQUEST', 'a shell command is one string');
  if (args.timeoutMs !== undefined && (!Number.isSafeInteger(args.timeoutMs) || args.timeoutMs < 1)) {
    throw new CorralError('BAD_REQUEST', 'timeoutMs must be a positive integer');
  }
  if (args.killGraceMs !== undefined && (!Number.isSafeInteger(args.killGraceMs) || args.killGraceMs < 0 || args.killGraceMs > 600_000)) {
    throw new CorralError('BAD_REQUEST', 'killGraceMs must be between 0 and 600000');
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(args.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string' || v.includes('\0')) throw new CorralError('BAD_REQUEST', `bad environment variable ${JSON.stringify(k)}`);
    env[k] = v;
  }
  if (args.script && (typeof args.script.name !== 'string' || typeof args.script.base64 !== 'string')) {
    throw new CorralError('BAD_REQUEST', 'script needs name and base64');
  }
  return {
    argv,
    shell: args.shell === true,
    ...(args.timeoutMs !== undefined ? { timeoutMs: args.timeoutMs } : {}),
    ...(args.killGraceMs !== undefined ? { killGraceMs: args.killGraceMs } : {}),
    ...(args.script ? { script: args.script } : {}),
    ...(args.cwd !== undefined ? { cwd: args.cwd } : {}),
    env,
    rank: Number.isSafeInteger(args.rank) ? (args.rank as number) : 0,
    size: Number.isSafeInteger(args.size) ? (args.size as number) : 1,
  };
}

/** SHA-256 of a file, streamed. */
export async function sha256File(file: string, size?: number): Promise<string> {
  const hash = createHash('sha256');
  // Small files in one read: a 256 KiB stream buffer per small file is what costs, not the hash.
  if (size !== undefined && size <= SMALL_FILE) return hash.update(await readFile(file)).digest('hex');
  for await (const chunk of createReadStream(file, { highWaterMark: 256 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
