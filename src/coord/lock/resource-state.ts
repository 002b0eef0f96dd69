// The per-resource state of set, sequence and timestamp resources, and how a grant advances it.
// Pure functions: the recipe reads the state key, calls issue(), and writes the result back in the
// same transaction as the holder's value, compared on the state key's mod revision.

import type { WaiterEntry } from './records.js';
import type { Resource } from './resource.js';
import { formatTimestamp, intervalOf, intervalStartMs } from './timestamp-format.js';

export interface SetState {
  kind: 'set';
  /** Where the search for a free element starts (FLoM's round robin: +1 per grant, wrapping). */
  index: number;
}

export interface SequenceState {
  kind: 'sequence';
  /** The next new value; values start at 1. */
  next: number;
  /** Transactional sequences: values rolled back, reused first, oldest first. */
  reuse: number[];
  /** Transactional sequences: values out with a holder, by waiter key, in grant order. */
  outstanding: [key: string, value: number][];
}

export interface TimestampState {
  kind: 'timestamp';
  /** Wall-clock ms of the last value issued. */
  lastMs: number;
  /** Its interval at the format's resolution; the next value must fall in a later one. */
  lastInterval: number;
}

export type ResourceState = SetState | SequenceState | TimestampState;

type StatefulResource = Extract<Resource, { kind: 'set' | 'sequence' | 'timestamp' }>;

export function freshState(resource: StatefulResource): ResourceState {
  switch (resource.kind) {
    case 'set':
      return { kind: 'set', index: 0 };
    case 'sequence':
      return { kind: 'sequence', next: 1, reuse: [], outstanding: [] };
    case 'timestamp':
      return { kind: 'timestamp', lastMs: 0, lastInterval: Number.NEGATIVE_INFINITY };
  }
}

export function encodeState(state: ResourceState): string {
  return JSON.stringify(state, (_k, v: unknown) => (v === Number.NEGATIVE_INFINITY ? null : v));
}

/** The stored state, or a fresh one when it is missing, of another kind, or unreadable. */
export function decodeState(resource: StatefulResource, value: string | undefined): ResourceState {
  if (value === undefined) return freshState(resource);
  try {
    const s = JSON.parse(value) as Record<string, unknown> | null;
    if (s === null || typeof s !== 'object' || s.kind !== resource.kind) return freshState(resource);
    switch (resource.kind) {
      case 'set':
        return { kind: 'set', index: Number(s.index) || 0 };
      case 'sequence':
        return {
          kind: 'sequence',
          next: Number(s.next) || 1,
          reuse: Array.isArray(s.reuse) ? s.reuse.map(Number) : [],
          outstanding: Array.isArray(s.outstanding) ? (s.outstanding as [string, number][]) : [],
        };
      case 'timestamp':
        return { kind: 'timestamp', lastMs: Number(s.lastMs) || 0, lastInterval: typeof s.lastInterval === 'number' ? s.lastInterval : Number.NEGATIVE_INFINITY };
    }
  } catch {
    return freshState(resource);
  }
}

export type Issue =
  | { value: string; elementIndex?: number; state: ResourceState }
  /** Timestamps: the clock has not left the last value's interval; try again at `untilWallMs`. */
  | { waitUntilWallMs: number };

/**
 * The value the next grant gets and the state after it. `entries` are the resource's waiter keys
 * read together with `state`; `key` is the grantee's own.
 */
export function issue(resource: StatefulResource, state: ResourceState, entries: readonly WaiterEntry[], key: string, wallNowMs: number): Issue {
  if (resource.kind === 'set' && state.kind === 'set') return issueElement(resource.elements, state, entries, key);
  if (resource.kind === 'sequence' && state.kind === 'sequence') return issueNumber(resource.transactional, state, entries, key);
  if (resource.kind === 'timestamp' && state.kind === 'timestamp') {
    const interval = intervalOf(resource.format, wallNowMs);
    if (interval <= state.lastInterval) return { waitUntilWallMs: intervalStartMs(resource.format, state.lastInterval + 1, wallNowMs) };
    return { value: formatTimestamp(resource.format, wallNowMs), state: { kind: 'timestamp', lastMs: wallNowMs, lastInterval: interval } };
  }
  throw new Error(`state of kind ${state.kind} does not fit resource ${resource.name}`);
}

function issueElement(elements: readonly string[], state: SetState, entries: readonly WaiterEntry[], key: string): Issue {
  const taken = new Set<number>();
  for (const e of entries) if (e.key !== key && e.record.elementIndex !== undefined) taken.add(e.record.elementIndex);
  const n = elements.length;
  for (let i = 0; i < n; i++) {
    const j = (state.index + i) % n;
    if (!taken.has(j)) return { value: elements[j] as string, elementIndex: j, state: { kind: 'set', index: (state.index + 1) % n } };
  }
  // The slot rule admits at most n holders, so some element is free; reaching here is a bug.
  throw new Error(`no free element in ${elements.join('.')}`);
}

function issueNumber(transactional: boolean, state: SequenceState, entries: readonly WaiterEntry[], key: string): Issue {
  if (!transactional) return { value: String(state.next), state: { ...state, next: state.next + 1 } };
  // A value out with a holder whose key is gone without a release: the holder died; roll it back.
  const live = new Set(entries.map((e) => e.key));
  const reuse = [...state.reuse];
  const outstanding: [string, number][] = [];
  for (const [k, v] of state.outstanding) {
    if (live.has(k)) outstanding.push([k, v]);
    else reuse.push(v);
  }
  let next = state.next;
  const value = reuse.shift() ?? next++;
  outstanding.push([key, value]);
  return { value: String(value), state: { kind: 'sequence', next, reuse, outstanding } };
}

/** A transactional sequence after its holder `key` releases: committed, or rolled back for reuse. */
export function settleNumber(state: SequenceState, key: string, rollback: boolean): SequenceState {
  const held = state.outstanding.find(([k]) => k === key);
  if (held === undefined) return state;
  return {
    ...state,
    outstanding: state.outstanding.filter(([k]) => k !== key),
    reuse: rollback ? [...state.reuse, held[1]] : state.reuse,
  };
}
