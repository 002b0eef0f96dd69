// `corral run` as a library: sends one command to many nodes through a Fleet and renders what
// comes back: live whole lines prefixed by node (the default), one block per group of identical
// results (-b), per-node files (-o DIR), NDJSON events or one JSON document; then the summary.

import { createWriteStream, mkdirSync, writeFileSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { FanoutEvent, FanoutExecArgs } from '../api/fanout-wire.js';
import { CorralError } from '../api/errors.js';
import type { Fleet } from './fleet.js';
import { exitStatus, gatherBlocks, LineSplitter, prefixLine, renderSummary, summarize, type NodeOutcome, type NodeResult, type Summary } from './output.js';

export interface RunOutput {
  stdout(text: string): void;
  stderr(text: string): void;
}

export interface RunOptions {
  exec: FanoutExecArgs;
  stdin?: Buffer;
  /** stream: live prefixed lines; gather: -b; ndjson: events; json: one document at the end. */
  mode: 'stream' | 'gather' | 'ndjson' | 'json' | 'quiet';
  /** -o DIR: DIR/NODE/{stdout,stderr,rc}. */
  outDir?: string;
  /** -S: exit with the largest remote exit code. */
  largestCode?: boolean;
  /** Print the summary on stderr (default true for stream and gather). */
  summary?: boolean;
  /** -b also gathers stderr. */
  gatherStderr?: boolean;
  signal: AbortSignal;
}

export interface RunResult {
  nodes: string[];
  results: NodeResult[];
  /** Per node, milliseconds from start to exit as the node measured it. */
  ms: Record<string, number>;
  summary: Summary;
  exitCode: number;
  interrupted: boolean;
}

interface NodeState {
  stdout: Buffer[];
  stderr: Buffer[];
  decoders: { out: StringDecoder; err: StringDecoder };
  files?: { out: WriteStream; err: WriteStream };
  outcome?: NodeOutcome;
  ms?: number;
}

function safeNodeDir(outDir: string, node: string): string {
  if (node.includes('/') || node === '.' || node === '..') throw new CorralError('INTERNAL', `node name ${node} cannot name a directory`);
  return path.join(outDir, node);
}

export async function runOnNodes(fleet: Fleet, opts: RunOptions, out: RunOutput): Promise<RunResult> {
  const keep = opts.mode === 'gather' || opts.mode === 'json';
  const splitter = new LineSplitter();
  const states = new Map<string, NodeState>();
  let nodes: string[] = [];
  let width = 0;
  const state = (node: string): NodeState => {
    let s = states.get(node);
    if (!s) {
      s = { stdout: [], stderr: [], decoders: { out: new StringDecoder('utf8'), err: new StringDecoder('utf8') } };
      if (opts.outDir) {
        const dir = safeNodeDir(opts.outDir, node);
        mkdirSync(dir, { recursive: true });
        s.files = { out: createWriteStream(path.join(dir, 'stdout')), err: createWriteStream(path.join(dir, 'stderr')) };
      }
      states.set(node, s);
    }
    return s;
  };
  const emitLines = (node: string, stream: 'out' | 'err', lines: string[]): void => {
    if (opts.mode === 'stream') {
      if (lines.length > 0) (stream === 'out' ? (t: string) => out.stdout(t) : (t: string) => out.stderr(t))(lines.map((l) => prefixLine(node, l, width)).join(''));
    } else if (opts.mode === 'ndjson') {
      for (const line of lines) out.stdout(JSON.stringify({ node, type: stream === 'out' ? 'stdout' : 'stderr', line }) + '\n');
    }
  };
  const finishStreams = (node: string, s: NodeState): void => {
    for (const stream of ['out', 'err'] as const) {
      const rest = s.decoders[stream].end();
      const lines = splitter.push(`${node}/${stream}`, rest);
      emitLines(node, stream, [...lines, ...splitter.end(`${node}/${stream}`)]);
    }
  };
  const onEvent = (ev: FanoutEvent): void => {
    if (ev.t === 'plan') {
      nodes = ev.nodes;
      width = Math.max(0, ...nodes.map((n) => n.length));
      if (opts.mode === 'ndjson') out.stdout(JSON.stringify({ type: 'plan', nodes }) + '\n');
      return;
    }
    const s = state(ev.node);
    switch (ev.t) {
      case 'start':
        return;
      case 'out':
      case 'err': {
        const data = Buffer.from(ev.b, 'base64');
        if (keep) (ev.t === 'out' ? s.stdout : s.stderr).push(data);
        s.files?.[ev.t].write(data);
        const text = s.decoders[ev.t].write(data);
        emitLines(ev.node, ev.t, splitter.push(`${ev.node}/${ev.t}`, text));
        return;
      }
      case 'exit':
        finishStreams(ev.node, s);
        s.ms = ev.ms;
        s.outcome = ev.timedOut ? { kind: 'timeout' } : ev.code === null ? { kind: 'signaled', signal: ev.signal ?? 'signal' } : { kind: 'exited', code: ev.code };
        if (opts.mode === 'ndjson') out.stdout(JSON.stringify({ node: ev.node, type: 'exit', code: ev.code, signal: ev.signal, timedOut: ev.timedOut, ms: ev.ms }) + '\n');
        return;
      case 'unreachable':
        finishStreams(ev.node, s);
        s.outcome = { kind: 'unreachable', error: ev.error };
        if (opts.mode === 'ndjson') out.stdout(JSON.stringify({ node: ev.node, type: 'unreachable', error: ev.error, code: ev.code }) + '\n');
        return;
      case 'cancelled':
        finishStreams(ev.node, s);
        s.outcome = { kind: 'cancelled' };
        if (opts.mode === 'ndjson') out.stdout(JSON.stringify({ node: ev.node, type: 'cancelled' }) + '\n');
        return;
    }
  };

  let interrupted = false;
  try {
    for await (const ev of fleet.exec(opts.exec, opts.stdin, opts.signal)) onEvent(ev);
  } catch (err) {
    if (!opts.signal.aborted) throw err;
  }
  if (opts.signal.aborted) interrupted = true;

  const results: NodeResult[] = [];
  const ms: Record<string, number> = {};
  for (const node of nodes) {
    const s = state(node);
    if (!s.outcome) {
      finishStreams(node, s);
      s.outcome = { kind: 'cancelled' };
    }
    if (s.ms !== undefined) ms[node] = s.ms;
    results.push({ node, stdout: Buffer.concat(s.stdout).toString('utf8'), stderr: Buffer.concat(s.stderr).toString('utf8'), outcome: s.outcome });
  }
  await Promise.all(
    [...states.values()].flatMap((s) => (s.files ? [s.files.out, s.files.err] : [])).map((w) => new Promise<void>((resolve) => w.end(() => resolve()))),
  );
  if (opts.outDir) for (const r of results) writeFileSync(path.join(safeNodeDir(opts.outDir, r.node), 'rc'), rcText(r.outcome) + '\n');

  const summary = summarize(results);
  const exitCode = interrupted ? 130 : exitStatus(summary, { largestCode: opts.largestCode ?? false });
  if (opts.mode === 'gather') out.stdout(gatherBlocks(results, { withStderr: opts.gatherStderr ?? false }));
  if (opts.mode === 'json') {
    out.stdout(
      JSON.stringify(
        {
          nodes: results.map((r) => ({ node: r.node, ...outcomeJson(r.outcome), ms: ms[r.node] ?? null, stdout: r.stdout, stderr: r.stderr })),
          summary,
          exitCode,
          interrupted,
        },
        null,
        2,
      ) + '\n',
    );
  }
  if (opts.mode === 'ndjson') out.stdout(JSON.stringify({ type: 'summary', ...summary, exitCode, interrupted }) + '\n');
  if (opts.summary ?? (opts.mode === 'stream' || opts.mode === 'gather')) {
    out.stderr(`${interrupted ? 'interrupted: ' : ''}${renderSummary(summary)}`);
  }
  return { nodes, results, ms, summary, exitCode, interrupted };
}

export function outcomeJson(o: NodeOutcome): { status: string; code: number | null; signal: string | null; error: string | null } {
  switch (o.kind) {
    case 'exited':
      return { status: o.code === 0 ? 'ok' : 'failed', code: o.code, signal: null, error: null };
    case 'signaled':
      return { status: 'killed', code: null, signal: o.signal, error: null };
    case 'timeout':
      return { status: 'timeout', code: null, signal: null, error: null };
    case 'unreachable':
      return { status: 'unreachable', code: null, signal: null, error: o.error };
    case 'cancelled':
      return { status: 'cancelled', code: null, signal: null, error: null };
  }
}

function rcText(o: NodeOutcome): string {
  switch (o.kind) {
    case 'exited':
      return String(o.code);
    case 'signaled':
      return `killed by ${o.signal}`;
    case 'timeout':
      return 'timeout';
    case 'unreachable':
      return `unreachable: ${o.error}`;
    case 'cancelled':
      return 'cancelled';
  }
}
