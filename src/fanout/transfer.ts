// push, scatter and gather as a library over a Fleet. A transfer is planned first (local files
// with sizes and SHA-256), then each node says which files it already holds with the same hash
// (so a re-run sends only what is missing), then the missing files stream to the nodes that need
// them: one read of each file for all its nodes, verified on arrival, renamed into place.

import { createHash, randomBytes, randomInt } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { CorralError } from '../api/errors.js';
import { FANOUT_PATHS, type FileEntry, type ListedEntry, type NodeCheckResult, type NodeListResult } from '../api/fanout-wire.js';
import type { Fleet, NodeCall } from './fleet.js';
import { sha256File, SMALL_FILE } from './node-ops.js';
import { Progress, type ProgressSink } from './progress.js';

export interface LocalFile extends FileEntry {
  abs: string;
}

export interface LocalPlan {
  files: LocalFile[];
  /** Directories (relative to the destination) to create, parents first, so empty ones exist too. */
  dirs: string[];
  /** Symlinks, devices, sockets and FIFOs met while walking: not sent. */
  skipped: string[];
}

/** Per node: what happened. */
export interface NodeReport {
  node: string;
  sent: number;
  bytes: number;
  unchanged: number;
  failed: { path: string; error: string; code: string }[];
  /** Set when the node could not be reached; nothing more was tried on it. */
  unreachable?: string;
}

/** Error codes that mean the node could not be reached (exit 4), not that the operation failed. */
export const UNREACHABLE_CODES: ReadonlySet<string> = new Set(['UNAVAILABLE', 'TIMEOUT', 'SHUTTING_DOWN']);
const PUT_CONCURRENCY = 16;
const HASH_CONCURRENCY = 8;

async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>, signal?: AbortSignal): Promise<void> {
  let next = 0;
  const runner = async (): Promise<void> => {
    while (next < items.length && !signal?.aborted) await work(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, runner));
}

function statError(err: unknown, what: string): CorralError {
  const code = (err as NodeJS.ErrnoException).code;
  return new CorralError('USAGE', `${what}: ${code === 'ENOENT' ? 'no such file or directory' : code === 'EACCES' ? 'permission denied' : (code ?? String(err))}`);
}

/** Walks the sources (files and directories; "dir/" sends dir's contents) and hashes every file. */
export async function planSources(sources: readonly string[], opts: { include?: (rel: string) => boolean; exclude?: (rel: string) => boolean } = {}): Promise<LocalPlan> {
  const files: LocalFile[] = [];
  const dirs: string[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  const add = (rel: string, abs: string, size: number, mode: number): void => {
    if (seen.has(rel)) throw new CorralError('USAGE', `two sources would both be written to ${rel}; rename one or push them separately`);
    seen.add(rel);
    files.push({ path: rel, abs, size, mode, sha256: '' });
  };
  const walk = async (abs: string, rel: string): Promise<void> => {
    const names = (await readdir(abs)).sort();
    for (const name of names) {
      const childAbs = path.join(abs, name);
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(childAbs);
      if (st.isDirectory()) {
        dirs.push(childRel);
        await walk(childAbs, childRel);
      } else if (st.isFile()) {
        if ((opts.include?.(childRel) ?? true) && !(opts.exclude?.(childRel) ?? false)) add(childRel, childAbs, st.size, st.mode & 0o777);
      } else skipped.push(childAbs);
    }
  };
  for (const src of sources) {
    let st;
    try {
      st = await stat(src);
    } catch (err) {
      throw statError(err, src);
    }
    const abs = path.resolve(src);
    if (st.isDirectory()) {
      const contents = src.endsWith('/');
      const base = contents ? '' : path.basename(abs);
      if (base !== '') dirs.push(base);
      try {
        await walk(abs, base);
      } catch (err) {
        throw err instanceof CorralError ? err : statError(err, src);
      }
    } else if (st.isFile()) add(path.basename(abs), abs, st.size, st.mode & 0o777);
    else skipped.push(abs);
  }
  await pool(files, HASH_CONCURRENCY, async (f) => {
    try {
      f.sha256 = await sha256File(f.abs, f.size);
    } catch (err) {
      throw statError(err, f.abs);
    }
  });
  return { files, dirs, skipped };
}

/** Which file goes to which node, for scatter. */
export type ScatterRule = 'suffix' | 'hash' | 'round-robin' | 'random';

/**
 * distsys's rule: the integer N in `_N` just before the extension (the last such match), and
 * file N goes to node (N - 1) mod count, so `_1` lands on the first node. Undefined without one.
 */
export function suffixNumber(name: string): number | undefined {
  const matches = [...path.basename(name).matchAll(/_(\d+)\./g)];
  const last = matches[matches.length - 1];
  return last ? Number(last[1]) : undefined;
}

export function assign(files: readonly LocalFile[], nodes: readonly string[], rule: ScatterRule): { byFile: Map<LocalFile, string>; unassigned: LocalFile[] } {
  const byFile = new Map<LocalFile, string>();
  const unassigned: LocalFile[] = [];
  const n = nodes.length;
  files.forEach((f, i) => {
    let index: number | undefined;
    switch (rule) {
      case 'suffix': {
        const num = suffixNumber(f.path);
        if (num !== undefined) index = (((num - 1) % n) + n) % n;
        break;
      }
      case 'hash':
        index = createHash('sha256').update(f.path).digest().readUInt32BE(0) % n;
        break;
      case 'round-robin':
        index = i % n;
        break;
      case 'random':
        index = randomInt(n);
        break;
    }
    if (index === undefined) unassigned.push(f);
    else byFile.set(f, nodes[index] as string);
  });
  return { byFile, unassigned };
}

function newReport(node: string): NodeReport {
  return { node, sent: 0, bytes: 0, unchanged: 0, failed: [] };
}

async function callEach(fleet: Fleet, nodes: string[], call: (node: string) => NodeCall | undefined, reports: Map<string, NodeReport>, signal: AbortSignal, fanout?: number): Promise<Map<string, unknown>> {
  const results = new Map<string, unknown>();
  // Group nodes by identical request so the relay sends one call to many nodes.
  const byBody = new Map<string, { call: NodeCall; nodes: string[] }>();
  for (const node of nodes) {
    const c = call(node);
    if (!c) continue;
    const key = JSON.stringify(c);
    const entry = byBody.get(key) ?? { call: c, nodes: [] };
    entry.nodes.push(node);
    byBody.set(key, entry);
  }
  for (const { call: c, nodes: group } of byBody.values()) {
    for await (const ev of fleet.call(group, c, { signal, ...(fanout ? { fanout } : {}) })) {
      if (ev.t === 'plan') continue;
      const report = reports.get(ev.node) as NodeReport;
      if (ev.t === 'ok') results.set(ev.node, ev.result);
      else if (UNREACHABLE_CODES.has(ev.code)) report.unreachable = ev.error;
      else report.failed.push({ path: c.path === FANOUT_PATHS.nodeMkdir ? c.body.paths.join(', ') : '', error: ev.error, code: ev.code });
    }
  }
  return results;
}

export interface TransferOptions {
  dest: string;
  signal: AbortSignal;
  progress?: ProgressSink;
  label: string;
  fanout?: number;
  /** fdatasync each file on its node before it is renamed into place. */
  fsync?: boolean;
  /** Called after a file is in place (or already was) on `node`, verified. */
  onVerified?: (file: LocalFile, node: string) => void;
}

/** Sends each file to the nodes listed for it, skipping nodes that already hold it. */
export async function transfer(fleet: Fleet, nodes: string[], plan: LocalPlan, wanted: (file: LocalFile) => string[], opts: TransferOptions): Promise<NodeReport[]> {
  const reports = new Map(nodes.map((n) => [n, newReport(n)]));
  const live = (n: string): boolean => {
    const r = reports.get(n) as NodeReport;
    return r.unreachable === undefined && r.failed.length === 0;
  };
  const perNode = new Map<string, LocalFile[]>(nodes.map((n) => [n, []]));
  for (const f of plan.files) for (const n of wanted(f)) perNode.get(n)?.push(f);
  // 1. The destination and every directory (empty ones too) on every node that gets something.
  const dirPaths = [opts.dest, ...plan.dirs.map((d) => path.posix.join(opts.dest, d))];
  await callEach(fleet, nodes, () => ({ path: FANOUT_PATHS.nodeMkdir, body: { paths: dirPaths } }), reports, opts.signal, opts.fanout);
  // 2. What each node already holds.
  const present = await callEach(
    fleet,
    nodes.filter(live),
    (n) => {
      const files = perNode.get(n) as LocalFile[];
      return files.length === 0 ? undefined : { path: FANOUT_PATHS.nodeCheck, body: { dest: opts.dest, files: files.map(({ path: p, size, mode, sha256 }) => ({ path: p, size, mode, sha256 })) } };
    },
    reports,
    opts.signal,
    opts.fanout,
  );
  const needs = new Map<LocalFile, string[]>();
  for (const n of nodes) {
    if (!live(n)) continue;
    const files = perNode.get(n) as LocalFile[];
    const flags = (present.get(n) as NodeCheckResult | undefined)?.present ?? [];
    files.forEach((f, i) => {
      if (flags[i] === true) {
        (reports.get(n) as NodeReport).unchanged++;
        opts.onVerified?.(f, n);
      } else needs.set(f, [...(needs.get(f) ?? []), n]);
    });
  }
  // 3. The missing files, several at once, each read once for all the nodes that need it.
  const jobs = [...needs.entries()];
  const totalBytes = jobs.reduce((sum, [f, ns]) => sum + f.size * ns.length, 0);
  const progress = opts.progress ? new Progress(opts.progress, opts.label, jobs.length, totalBytes) : undefined;
  await pool(
    jobs,
    PUT_CONCURRENCY,
    async ([file, targets]) => {
      const to = targets.filter((n) => (reports.get(n) as NodeReport).unreachable === undefined);
      if (to.length === 0) return;
      let results;
      try {
        const { path: p, size, mode, sha256 } = file;
        results = await fleet.put(to, { dest: opts.dest, file: { path: p, size, mode, sha256 }, ...(opts.fsync ? { fsync: true } : {}) }, () => readSource(file), opts.signal);
      } catch (err) {
        if (opts.signal.aborted) return;
        const e = CorralError.from(err);
        results = to.map((node) => ({ node, t: 'error' as const, error: e.message, code: e.code }));
      }
      for (const r of results) {
        const report = reports.get(r.node) as NodeReport;
        if (r.t === 'ok') {
          report.sent++;
          report.bytes += r.result.bytes;
          opts.onVerified?.(file, r.node);
        } else if (UNREACHABLE_CODES.has(r.code)) report.unreachable ??= r.error;
        else report.failed.push({ path: file.path, error: r.error, code: r.code });
      }
      progress?.add(1, file.size * to.length);
    },
    opts.signal,
  );
  progress?.done();
  return nodes.map((n) => reports.get(n) as NodeReport);
}

/** A file's bytes: small files in one read, large ones streamed. */
async function* readSource(file: LocalFile): AsyncGenerator<Buffer> {
  if (file.size <= SMALL_FILE) {
    yield await readFile(file.abs);
    return;
  }
  yield* createReadStream(file.abs, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;
}

/** 0 all ok, 1 some operation failed, 4 some node unreachable, 130 interrupted. */
export function transferExit(reports: readonly { unreachable?: string; failed: readonly unknown[] }[], interrupted: boolean): number {
  if (interrupted) return 130;
  if (reports.some((r) => r.unreachable !== undefined)) return 4;
  if (reports.some((r) => r.failed.length > 0)) return 1;
  return 0;
}

export function renderReports(reports: readonly NodeReport[], bytesText: (n: number) => string): string {
  const width = Math.max(0, ...reports.map((r) => r.node.length));
  return reports
    .map((r) => {
      const head = `${r.node}:`.padEnd(width + 1);
      if (r.unreachable !== undefined) return `${head} UNREACHABLE: ${r.unreachable}\n`;
      const counts = `${r.sent} sent (${bytesText(r.bytes)}), ${r.unchanged} unchanged`;
      if (r.failed.length === 0) return `${head} ok, ${counts}\n`;
      const first = r.failed[0] as { path: string; error: string };
      return `${head} FAILED ${r.failed.length}, ${counts}: ${first.error}${r.failed.length > 1 ? ` (and ${r.failed.length - 1} more)` : ''}\n`;
    })
    .join('');
}

/** The manifest of a scatter: one line per file (tab-separated, with a header). */
export function manifestText(rows: { file: string; node: string; size: number; sha256: string }[]): string {
  const clean = (s: string): string => s.replace(/[\t\n\r]/g, ' ');
  return ['file\tnode\tsize\tsha256', ...rows.map((r) => `${clean(r.file)}\t${r.node}\t${r.size}\t${r.sha256}`)].join('\n') + '\n';
}

export const MANIFEST_NAME = '.corral-manifest.tsv';

async function* bufferOnce(data: Buffer): AsyncGenerator<Buffer> {
  await Promise.resolve();
  yield data;
}

/** Writes a small generated file (the manifest) on each node through put, so it is verified too. */
export async function putText(fleet: Fleet, node: string, dest: string, name: string, text: string, signal: AbortSignal): Promise<{ ok: boolean; error?: string }> {
  const data = Buffer.from(text);
  const sha256 = createHash('sha256').update(data).digest('hex');
  const [r] = await fleet.put([node], { dest, file: { path: name, size: data.length, mode: 0o644, sha256 } }, () => bufferOnce(data), signal);
  return r?.t === 'ok' ? { ok: true } : { ok: false, error: r?.error ?? 'no answer' };
}

export interface GatherReport {
  node: string;
  files: number;
  bytes: number;
  unchanged: number;
  failed: { path: string; error: string; code: string }[];
  unreachable?: string;
}

/** Brings REMOTE (a file or a directory) from every node into LOCALDIR/NODE/..., verified. */
export async function gather(fleet: Fleet, nodes: string[], remote: string, localDir: string, opts: { signal: AbortSignal; progress?: ProgressSink; fanout?: number }): Promise<GatherReport[]> {
  const reports = new Map<string, GatherReport>(nodes.map((n) => [n, { node: n, files: 0, bytes: 0, unchanged: 0, failed: [] }]));
  const listings = new Map<string, NodeListResult>();
  for await (const ev of fleet.call(nodes, { path: FANOUT_PATHS.nodeList, body: { path: remote } }, { signal: opts.signal, ...(opts.fanout ? { fanout: opts.fanout } : {}) })) {
    if (ev.t === 'plan') continue;
    const r = reports.get(ev.node) as GatherReport;
    if (ev.t === 'ok') listings.set(ev.node, ev.result as NodeListResult);
    else if (UNREACHABLE_CODES.has(ev.code)) r.unreachable = ev.error;
    else r.failed.push({ path: remote, error: ev.error, code: ev.code });
  }
  const jobs: { node: string; entry: ListedEntry; remoteAbs: string; localAbs: string }[] = [];
  for (const [node, listing] of listings) {
    const nodeDir = path.join(localDir, node);
    const base = path.dirname(listing.root);
    for (const entry of listing.entries) {
      const rel = entry.path.split('/');
      if (rel.some((s) => s === '' || s === '.' || s === '..')) {
        (reports.get(node) as GatherReport).failed.push({ path: entry.path, error: `${node} listed an unsafe path ${JSON.stringify(entry.path)}`, code: 'BAD_REQUEST' });
        continue;
      }
      const localAbs = path.join(nodeDir, ...rel);
      if (entry.type === 'dir') await mkdir(localAbs, { recursive: true });
      else jobs.push({ node, entry, remoteAbs: path.posix.join(base, entry.path), localAbs });
    }
  }
  const totalBytes = jobs.reduce((s, j) => s + j.entry.size, 0);
  const progress = opts.progress ? new Progress(opts.progress, 'gather', jobs.length, totalBytes) : undefined;
  await pool(
    jobs,
    PUT_CONCURRENCY,
    async (job) => {
      const report = reports.get(job.node) as GatherReport;
      if (report.unreachable !== undefined) return;
      try {
        const existing = await stat(job.localAbs).catch(() => undefined);
        if (existing?.isFile() && existing.size === job.entry.size && (await sha256File(job.localAbs, existing.size)) === job.entry.sha256) {
          report.unchanged++;
        } else {
          const bytes = await fetchVerified(fleet, job.node, job.remoteAbs, job.localAbs, job.entry, opts.signal);
          report.files++;
          report.bytes += bytes;
        }
      } catch (err) {
        if (opts.signal.aborted) return;
        const e = CorralError.from(err);
        if (UNREACHABLE_CODES.has(e.code)) report.unreachable ??= e.message;
        else report.failed.push({ path: job.entry.path, error: e.message, code: e.code });
      }
      progress?.add(1, job.entry.size);
    },
    opts.signal,
  );
  progress?.done();
  return nodes.map((n) => reports.get(n) as GatherReport);
}

async function fetchVerified(fleet: Fleet, node: string, remoteAbs: string, localAbs: string, entry: ListedEntry, signal: AbortSignal): Promise<number> {
  await mkdir(path.dirname(localAbs), { recursive: true });
  const temp = path.join(path.dirname(localAbs), `.${path.basename(localAbs)}.corral-${randomBytes(6).toString('hex')}.part`);
  const hash = createHash('sha256');
  let bytes = 0;
  const out = createWriteStream(temp, { mode: 0o600 });
  let placed = false;
  try {
    for await (const chunk of await fleet.read(node, remoteAbs, signal)) {
      hash.update(chunk);
      bytes += chunk.length;
      if (!out.write(chunk)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    const sha256 = hash.digest('hex');
    if (sha256 !== entry.sha256 || bytes !== entry.size) {
      throw new CorralError('CHECKSUM_MISMATCH', `${remoteAbs} from ${node}: ${bytes} bytes with SHA-256 ${sha256.slice(0, 12)}…, listed as ${entry.size} bytes ${entry.sha256?.slice(0, 12) ?? '?'}… (it changed during the copy?); not kept, run gather again`);
    }
    await chmod(temp, entry.mode);
    await rename(temp, localAbs);
    placed = true;
    return bytes;
  } finally {
    if (!out.closed) out.destroy();
    if (!placed) await unlink(temp).catch(() => undefined);
  }
}
