// Resource names and kinds. The kind is inferred from the name with FLoM's regular expressions,
// tried in FLoM's order (flom.md §3; POSIX [[:alpha:]] and [[:digit:]] read as ASCII). The full
// name identifies a resource: foo[2] and foo[3] are two resources, as are a.b and b.a.

import { CorralError } from '../../api/errors.js';
import { LOCK_MODES, type LockMode } from './modes.js';
import { parseTimestampFormat, type TimestampFormat } from './timestamp-format.js';

export type ResourceKind = 'simple' | 'numeric' | 'set' | 'hierarchical' | 'sequence' | 'timestamp';

export type Resource =
  | { kind: 'simple'; name: string }
  /** A pool of `total` units; a request takes `quantity` of them. */
  | { kind: 'numeric'; name: string; total: number }
  /** Each holder gets one free element (duplicates allowed, each a distinct position). */
  | { kind: 'set'; name: string; elements: readonly string[] }
  /** A path; `root` is its first component. Conflicts with ancestors, descendants and itself. */
  | { kind: 'hierarchical'; name: string; root: string }
  /** `slots` concurrent holders, each given the next number; transactional values return on rollback. */
  | { kind: 'sequence'; name: string; slots: number; transactional: boolean }
  /** `slots` concurrent holders, each given a timestamp distinct at the format's resolution. */
  | { kind: 'timestamp'; name: string; slots: number; format: TimestampFormat };

/** The name FLoM uses when none is given; a simple resource. */
export const DEFAULT_RESOURCE_NAME = '_RESOURCE';

const SIMPLE = /^(?:_RESOURCE|[A-Za-z][A-Za-z0-9]*)$/;
const NUMERIC = /^[A-Za-z][A-Za-z0-9]*\[([0-9]+)\]$/;
const SET = /^[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+$/;
const HIERARCHICAL = /^\/[^/]+(?:\/[^/]+)*$/;
const SEQUENCE = /^_([sS])_[A-Za-z][A-Za-z0-9]*\[([0-9]+)\]$/;
const TIMESTAMP = /^_t_([%#A-Za-z][%#.:A-Za-z0-9]*)\[([0-9]+)\]$/;

function badResource(name: string, why = ''): CorralError {
  return new CorralError(
    'BAD_RESOURCE',
    `'${name}' is not a valid name for a resource${why}; use name, name[N], a.b.c, /a/b, _s_name[N], _S_name[N] or _t_FORMAT[N]`,
  );
}

function count(name: string, digits: string): number {
  const n = Number(digits);
  if (!Number.isSafeInteger(n)) throw badResource(name, ` (${digits} is too large)`);
  return n;
}

const parsed = new Map<string, Resource>();
const PARSED_CACHE_LIMIT = 1024;

/** The resource a name denotes; BAD_RESOURCE when it matches no kind. */
export function parseResourceName(name: string): Resource {
  const cached = parsed.get(name);
  if (cached !== undefined) return cached;
  const resource = parseUncached(name);
  if (parsed.size >= PARSED_CACHE_LIMIT) parsed.clear();
  parsed.set(name, resource);
  return resource;
}

function parseUncached(name: string): Resource {
  if (SIMPLE.test(name)) return { kind: 'simple', name };
  let m = NUMERIC.exec(name);
  if (m) return { kind: 'numeric', name, total: count(name, m[1] as string) };
  if (SET.test(name)) return { kind: 'set', name, elements: name.split('.') };
  if (HIERARCHICAL.test(name)) return { kind: 'hierarchical', name, root: name.split('/')[1] as string };
  m = SEQUENCE.exec(name);
  if (m) return { kind: 'sequence', name, transactional: m[1] === 'S', slots: count(name, m[2] as string) };
  m = TIMESTAMP.exec(name);
  if (m) return { kind: 'timestamp', name, format: parseTimestampFormat(m[1] as string), slots: count(name, m[2] as string) };
  throw badResource(name);
}

const EXCLUSIVE_ONLY: readonly LockMode[] = ['EX'];

/** The modes a kind honours: all six for simple and hierarchical resources, EX for the rest. */
export function allowedModes(kind: ResourceKind): readonly LockMode[] {
  return kind === 'simple' || kind === 'hierarchical' ? LOCK_MODES : EXCLUSIVE_ONLY;
}

/** The mode a request is granted in: as asked where the kind honours modes, else EX (as FLoM). */
export function effectiveMode(kind: ResourceKind, requested: LockMode): LockMode {
  return kind === 'simple' || kind === 'hierarchical' ? requested : 'EX';
}

/** How many holders a kind admits at most, for kinds counted in slots (undefined: by mode or quantity). */
export function slotsOf(resource: Resource): number | undefined {
  switch (resource.kind) {
    case 'set':
      return resource.elements.length;
    case 'sequence':
    case 'timestamp':
      return resource.slots;
    case 'simple':
    case 'hierarchical':
    case 'numeric':
      return undefined;
  }
}

/** Kinds whose grants issue a value (element, number, timestamp) from per-resource state. */
export function hasState(resource: Resource): resource is Extract<Resource, { kind: 'set' | 'sequence' | 'timestamp' }> {
  return resource.kind === 'set' || resource.kind === 'sequence' || resource.kind === 'timestamp';
}

/** Whether two hierarchical paths conflict: one is the other or an ancestor of it. */
export function pathsRelated(a: string, b: string): boolean {
  if (a === b) return true;
  return a.length < b.length ? b.startsWith(a) && b[a.length] === '/' : a.startsWith(b) && a[b.length] === '/';
}
