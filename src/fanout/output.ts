// Output of a command run on many nodes, as people want to read it: whole lines prefixed with the
// node's name (never two nodes' half-lines interleaved), or, with -b, one block per group of nodes
// whose output and exit status were identical (clush -b / dshbak), and a summary at the end.

import { foldNodeSet } from '../config/nodeset.js';

/** Splits each node's byte stream into whole lines; a partial line waits for its end. */
export class LineSplitter {
  private readonly pending = new Map<string, string>();

  /** Returns the complete lines in `chunk` (without newlines) for `source` (e.g. "n1/stdout"). */
  push(source: string, chunk: string): string[] {
    const text = (this.pending.get(source) ?? '') + chunk;
    const lines = text.split('\n');
    this.pending.set(source, lines.pop() as string);
    return lines;
  }

  /** The unterminated last line of `source`, if any. */
  end(source: string): string[] {
    const rest = this.pending.get(source) ?? '';
    this.pending.delete(source);
    return rest === '' ? [] : [rest];
  }
}

export function prefixLine(node: string, line: string, width = 0): string {
  return `${`${node}:`.padEnd(width + 1)} ${line}\n`;
}

export type NodeOutcome =
  | { kind: 'exited'; code: number }
  | { kind: 'signaled'; signal: string }
  | { kind: 'timeout' }
  | { kind: 'unreachable'; error: string }
  /** Stopped before it finished because of --fail-fast or Ctrl-C (does not decide the exit status). */
  | { kind: 'cancelled' };

export interface NodeResult {
  node: string;
  stdout: string;
  stderr: string;
  outcome: NodeOutcome;
}

function outcomeText(o: NodeOutcome): string {
  switch (o.kind) {
    case 'exited':
      return `exit ${o.code}`;
    case 'signaled':
      return `killed by ${o.signal}`;
    case 'timeout':
      return 'timed out';
    case 'unreachable':
      return `unreachable: ${o.error}`;
    case 'cancelled':
      return 'cancelled';
  }
}

/** -b: one block per set of nodes with identical stdout and identical outcome. */
export function gatherBlocks(results: readonly NodeResult[], options: { withStderr?: boolean } = {}): string {
  const groups = new Map<string, { nodes: string[]; result: NodeResult }>();
  for (const r of results) {
    const key = JSON.stringify([r.stdout, options.withStderr ? r.stderr : '', outcomeText(r.outcome)]);
    const g = groups.get(key) ?? { nodes: [], result: r };
    g.nodes.push(r.node);
    groups.set(key, g);
  }
  const blocks: string[] = [];
  for (const { nodes, result } of groups.values()) {
    const bar = '-'.repeat(15);
    const body = result.stdout + (options.withStderr ? result.stderr : '');
    blocks.push(`${bar}\n${foldNodeSet(nodes)} (${nodes.length} node${nodes.length === 1 ? '' : 's'}, ${outcomeText(result.outcome)})\n${bar}\n${body}${body === '' || body.endsWith('\n') ? '' : '\n'}`);
  }
  return blocks.join('');
}

export interface Summary {
  ok: string[];
  failed: { node: string; code: number }[];
  killed: { node: string; signal: string }[];
  timedOut: string[];
  unreachable: { node: string; error: string }[];
  cancelled: string[];
}

export function summarize(results: readonly NodeResult[]): Summary {
  const s: Summary = { ok: [], failed: [], killed: [], timedOut: [], unreachable: [], cancelled: [] };
  for (const r of results) {
    const o = r.outcome;
    if (o.kind === 'exited') {
      if (o.code === 0) s.ok.push(r.node);
      else s.failed.push({ node: r.node, code: o.code });
    } else if (o.kind === 'signaled') s.killed.push({ node: r.node, signal: o.signal });
    else if (o.kind === 'timeout') s.timedOut.push(r.node);
    else if (o.kind === 'cancelled') s.cancelled.push(r.node);
    else s.unreachable.push({ node: r.node, error: o.error });
  }
  return s;
}

export function renderSummary(s: Summary): string {
  const lines = [`ok: ${s.ok.length}${s.ok.length ? ` (${foldNodeSet(s.ok)})` : ''}`];
  if (s.failed.length) {
    const byCode = new Map<number, string[]>();
    for (const f of s.failed) byCode.set(f.code, [...(byCode.get(f.code) ?? []), f.node]);
    lines.push(`failed: ${s.failed.length} (${[...byCode].map(([code, nodes]) => `${foldNodeSet(nodes)}: exit ${code}`).join('; ')})`);
  }
  if (s.killed.length) lines.push(`killed: ${s.killed.length} (${s.killed.map((k) => `${k.node}: ${k.signal}`).join('; ')})`);
  if (s.timedOut.length) lines.push(`timed out: ${s.timedOut.length} (${foldNodeSet(s.timedOut)})`);
  if (s.unreachable.length) lines.push(`unreachable: ${s.unreachable.length} (${s.unreachable.map((u) => `${u.node}: ${u.error}`).join('; ')})`);
  if (s.cancelled.length) lines.push(`cancelled: ${s.cancelled.length} (${foldNodeSet(s.cancelled)})`);
  return lines.join('\n') + '\n';
}

/**
 * Exit status by category (documented in `corral help run`): 0 all ok, 1 some command exited
 * non-zero, 3 some timed out or were killed, 4 some node unreachable; the worst category wins.
 * With `largestCode` (-S), the largest remote exit code instead (clush -S).
 */
export function exitStatus(s: Summary, options: { largestCode?: boolean } = {}): number {
  if (options.largestCode) {
    const codes = s.failed.map((f) => f.code);
    const worst = Math.max(0, ...codes);
    if (s.unreachable.length || s.timedOut.length || s.killed.length) return Math.max(worst, 255);
    return worst;
  }
  if (s.unreachable.length) return 4;
  if (s.timedOut.length || s.killed.length) return 3;
  if (s.failed.length) return 1;
  return 0;
}
