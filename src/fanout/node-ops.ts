// What a node does for fan-out, on its own machine: run a command (argv, never a shell unless the
// user asked for one) in its own process group and stream its output; create directories; tell
// which files it already holds; receive a file (hashed while written, to a temporary name, fsynced,
// renamed into place only when its SHA-256 matches); list and read files for gather.
// Relative paths resolve against the work directory; writes must stay inside the write roots.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, readFile, realpath, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
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
  NodePutResult,
} from '../api/fanout-wire.js';
import { signalProcessGroup } from '../util/process-group.js';
import { AsyncQueue } from './async-queue.js';

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
    const file = args.file;
    if (!file || typeof file !== 'object') throw new CorralError('BAD_REQUEST', 'put needs file: {path, size, mode, sha256}');
    const rel = checkRelative('file', file.path);
    if (!Number.isSafeInteger(file.size) || file.size < 0) throw new CorralError('BAD_REQUEST', `put ${rel}: size must be a non-negative integer`);
    if (typeof file.sha256 !== 'string' || !SHA256.test(file.sha256)) throw new CorralError('BAD_REQUEST', `put ${rel}: sha256 must be 64 lower-case hex digits`);
    const mode = Number.isInteger(file.mode) ? file.mode & 0o777 : 0o644;
    const target = path.join(this.destination(args.dest), rel);
    await this.assertWritable(target);
    const dir = path.dirname(target);
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw fileError(err, `creating ${dir} on ${this.node}`);
    }
    const temp = path.join(dir, `.${path.basename(target)}.corral-${randomBytes(6).toString('hex')}.part`);
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
      const corrupt = this.corruptPutsMatching !== undefined && rel.includes(this.corruptPutsMatching);
      for await (const chunk of input ?? []) {
        const data = corrupt && bytes === 0 && chunk.length > 0 ? Buffer.from(chunk) : chunk;
        if (data !== chunk) data[0] = (data[0] as number) ^ 0xff;
        bytes += data.length;
        if (bytes > file.size) throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: more bytes arrived than the ${file.size} announced`);
        hash.update(data);
        await handle.write(data);
      }
      const sha256 = hash.digest('hex');
      if (bytes !== file.size) {
        throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: ${bytes} of ${file.size} bytes arrived (the sender stopped); nothing was put in place`);
      }
      if (sha256 !== file.sha256) {
        throw new CorralError('CHECKSUM_MISMATCH', `${target} on ${this.node}: SHA-256 ${sha256.slice(0, 12)}… does not match the sent ${file.sha256.slice(0, 12)}…; nothing was put in place, send it again`);
      }
      await handle.chmod(mode);
      if (args.fsync === true) await handle.datasync();
      await handle.close();
      handle = undefined;
      if (this.slowPutMs > 0) await new Promise((resolve) => setTimeout(resolve, this.slowPutMs));
      try {
        const existing = await lstat(target).catch(() => undefined);
        if (existing?.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
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
