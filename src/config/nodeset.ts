// Node sets in the syntax of ClusterShell and pdsh: `n[1-4,7],web1`, `rack[1-2]-n[01-03]`,
// `@group`, `@*` (all nodes), and the set operators `,` (union), `!` (difference), `&`
// (intersection) and `^` (symmetric difference), applied left to right as clush does.
// `fold` turns a list back into the compact form for display.

import { CorralError } from '../api/errors.js';

export interface NodeSetContext {
  /** Named groups (`@name`), from corral.yaml. */
  groups?: Readonly<Record<string, readonly string[]>>;
  /** Every node, for `@*`. */
  all?: readonly string[];
}

const MAX_NODES = 100_000;

function fail(expr: string, problem: string): never {
  throw new CorralError('USAGE', `node set ${JSON.stringify(expr)}: ${problem}`);
}

/** Splits at top-level operators (outside brackets); returns alternating terms and operators. */
function tokenize(expr: string): { terms: string[]; ops: string[] } {
  const terms: string[] = [];
  const ops: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of expr) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (depth < 0) fail(expr, "a ']' without its '['");
    if (depth === 0 && (ch === ',' || ch === '!' || ch === '&' || ch === '^')) {
      terms.push(current.trim());
      ops.push(ch);
      current = '';
    } else current += ch;
  }
  if (depth !== 0) fail(expr, "a '[' without its ']'");
  terms.push(current.trim());
  return { terms, ops };
}

/** `01-10/2,15` → the numbers as strings, zero padding kept per range. */
function expandRanges(expr: string, body: string): string[] {
  const out: string[] = [];
  for (const part of body.split(',')) {
    const m = /^(\d+)(?:-(\d+)(?:\/(\d+))?)?$/.exec(part.trim());
    if (!m) fail(expr, `${JSON.stringify(part)} is not a number or a range like 1-8 or 01-16/2`);
    const [, a, b, stepText] = m as unknown as [string, string, string | undefined, string | undefined];
    if (b === undefined) {
      out.push(a);
      continue;
    }
    const from = Number(a);
    const to = Number(b);
    const step = stepText === undefined ? 1 : Number(stepText);
    if (to < from) fail(expr, `the range ${part} runs backwards`);
    if (step < 1) fail(expr, `the step of ${part} must be at least 1`);
    if ((to - from) / step > MAX_NODES) fail(expr, `the range ${part} is too large`);
    const width = a.length > 1 && a.startsWith('0') ? a.length : 0;
    for (let n = from; n <= to; n += step) out.push(String(n).padStart(width, '0'));
  }
  return out;
}

/** `rack[1-2]-n[01-02]` → rack1-n01, rack1-n02, rack2-n01, rack2-n02 (cartesian, in order). */
function expandPattern(expr: string, pattern: string): string[] {
  let results = [''];
  let rest = pattern;
  while (rest.length > 0) {
    const open = rest.indexOf('[');
    if (open === -1) {
      results = results.map((r) => r + rest);
      break;
    }
    const close = rest.indexOf(']', open);
    const literal = rest.slice(0, open);
    const numbers = expandRanges(expr, rest.slice(open + 1, close));
    const next: string[] = [];
    for (const r of results) for (const n of numbers) next.push(r + literal + n);
    if (next.length > MAX_NODES) fail(expr, `expands to more than ${MAX_NODES} nodes`);
    results = next;
    rest = rest.slice(close + 1);
  }
  for (const name of results) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) fail(expr, `${JSON.stringify(name)} is not a node name`);
  }
  return results;
}

function expandTerm(expr: string, term: string, ctx: NodeSetContext): string[] {
  if (term === '') fail(expr, 'an empty term (two operators in a row, or one at an end?)');
  if (term === '@*') return [...(ctx.all ?? [])];
  if (term.startsWith('@')) {
    const name = term.slice(1);
    const members = ctx.groups?.[name];
    if (!members || !Object.hasOwn(ctx.groups ?? {}, name)) {
      const known = Object.keys(ctx.groups ?? {});
      fail(expr, `no group @${name}${known.length ? ` (groups: ${known.map((g) => `@${g}`).join(', ')})` : ''}`);
    }
    return [...members];
  }
  return expandPattern(expr, term);
}

/** Expands a node set expression into node names, in order of first appearance, without duplicates. */
export function expandNodeSet(expr: string, ctx: NodeSetContext = {}): string[] {
  const { terms, ops } = tokenize(expr);
  let acc = new Set(expandTerm(expr, terms[0] as string, ctx));
  ops.forEach((op, i) => {
    const next = expandTerm(expr, terms[i + 1] as string, ctx);
    const set = new Set(next);
    switch (op) {
      case ',':
        for (const n of next) acc.add(n);
        break;
      case '!':
        acc = new Set([...acc].filter((n) => !set.has(n)));
        break;
      case '&':
        acc = new Set([...acc].filter((n) => set.has(n)));
        break;
      case '^': {
        const both = [...acc].filter((n) => !set.has(n));
        for (const n of next) if (!acc.has(n)) both.push(n);
        acc = new Set(both);
        break;
      }
    }
  });
  return [...acc];
}

/** Folds node names into the compact form: n1,n2,n3,n7,web1 → n[1-3,7],web1. */
export function foldNodeSet(names: readonly string[]): string {
  // Families share everything but the last run of digits: prefix + digits + suffix.
  const families = new Map<string, { prefix: string; suffix: string; numbers: string[] }>();
  const plain: string[] = [];
  for (const name of new Set(names)) {
    const m = /^(.*?)(\d+)(\D*)$/.exec(name);
    if (!m) {
      plain.push(name);
      continue;
    }
    const [, prefix, digits, suffix] = m as unknown as [string, string, string, string];
    const key = `${prefix}\0${suffix}`;
    const f = families.get(key) ?? { prefix, suffix, numbers: [] };
    f.numbers.push(digits);
    families.set(key, f);
  }
  const parts: string[] = [];
  for (const { prefix, suffix, numbers } of families.values()) {
    // Zero-padded numbers fold with the unpadded ones of the same width (08, 09, 10), never with
    // shorter ones (x01 and x1 are different nodes).
    const width = Math.max(0, ...numbers.filter((n) => n.length > 1 && n.startsWith('0')).map((n) => n.length));
    const padded = numbers.filter((n) => width > 0 && n.length === width);
    const rest = numbers.filter((n) => !(width > 0 && n.length === width));
    for (const family of [padded, rest]) if (family.length > 0) parts.push(foldFamily(prefix, suffix, family));
  }
  return [...parts, ...plain].join(',');
}

function foldFamily(prefix: string, suffix: string, numbers: string[]): string {
  if (numbers.length === 1) return `${prefix}${numbers[0] as string}${suffix}`;
  const sorted = [...numbers].sort((a, b) => Number(a) - Number(b));
  const ranges: string[] = [];
  let start = sorted[0] as string;
  let prev = start;
  for (const n of [...sorted.slice(1), undefined]) {
    if (n !== undefined && Number(n) === Number(prev) + 1) {
      prev = n;
      continue;
    }
    ranges.push(start === prev ? start : `${start}-${prev}`);
    if (n !== undefined) start = prev = n;
  }
  return `${prefix}[${ranges.join(',')}]${suffix}`;
}
