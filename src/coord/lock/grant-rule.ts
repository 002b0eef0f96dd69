// When a request is granted: it must get along with every key ahead of it in line, holders and
// earlier waiters alike (strict first come, first served among conflicting requests).
//
// This is where corral parts from FLoM. FLoM checks a new request only against the current
// holders and, on each release, grants every waiter that fits, in queue order but skipping those
// that do not: a stream of readers can starve a writer forever (its Use Case 5 test: PR held, PW
// waiting, a later PR is granted at once), and small numeric requests overtake a large one. Here a
// request waits behind any earlier incompatible request, waiting or not, so the writer goes next.
// A request compatible with everyone ahead still goes at once (an NL or CR passes a waiting PW).
//
// The rule needs only the keys ahead of a request, and that set can only shrink (new keys always
// come later), so a waiter's answer can change only when one of them is deleted.

import { compatible, type LockMode } from './modes.js';
import type { WaiterEntry } from './records.js';
import { pathsRelated, slotsOf, type Resource } from './resource.js';

export interface LockAsk {
  resource: Resource;
  /** The effective mode (EX for kinds that do not honour modes). */
  mode: LockMode;
  /** Units of a numeric resource; 1 otherwise. */
  quantity: number;
}

/** What stands between a request and its grant. */
export type Decision =
  | { granted: true }
  /** Mode conflicts: granted once every blocker is gone. */
  | { granted: false; by: 'mode'; blockers: WaiterEntry[] }
  /** Units or slots: granted once enough of the keys ahead are gone. */
  | { granted: false; by: 'room'; ahead: WaiterEntry[] };

/** The keys ahead of a request (created before `revision`) that it must get along with. */
export function keysAhead(ask: LockAsk, resourceName: string, entries: readonly WaiterEntry[], revision: bigint): WaiterEntry[] {
  const ahead: WaiterEntry[] = [];
  const hierarchical = ask.resource.kind === 'hierarchical';
  for (const e of entries) {
    if (e.createRevision >= revision) continue;
    if (hierarchical ? pathsRelated(e.resourceName, resourceName) : e.resourceName === resourceName) ahead.push(e);
  }
  return ahead;
}

export function decide(ask: LockAsk, ahead: readonly WaiterEntry[]): Decision {
  const { resource } = ask;
  if (resource.kind === 'simple' || resource.kind === 'hierarchical') {
    const blockers = ahead.filter((e) => !compatible(e.record.mode, ask.mode));
    return blockers.length === 0 ? { granted: true } : { granted: false, by: 'mode', blockers };
  }
  if (resource.kind === 'numeric') {
    let taken = 0;
    for (const e of ahead) taken += e.record.quantity;
    return taken + ask.quantity <= resource.total ? { granted: true } : { granted: false, by: 'room', ahead: [...ahead] };
  }
  const slots = slotsOf(resource) ?? 0;
  return ahead.length < slots ? { granted: true } : { granted: false, by: 'room', ahead: [...ahead] };
}

/** Whether a request can never be granted, whoever releases: more units or slots than exist. */
export function impossible(ask: LockAsk): string | undefined {
  const { resource } = ask;
  if (resource.kind === 'numeric' && ask.quantity > resource.total) {
    return `${resource.name} has ${resource.total} units and the request asks for ${ask.quantity}`;
  }
  const slots = slotsOf(resource);
  if (slots === 0) return `${resource.name} has no slots`;
  return undefined;
}
