// The clstat status file of Cluster::Init: one line `Cluster::Init::Group GROUP LEVEL STATE` per
// group told at least once. Rewritten atomically (temp file, rename) on every group transition
// and every 30–45 s as a liveness heartbeat (OpenMosix::HA judges a node by the file's mtime),
// removed at shutdown. Unlike 0.215 the lines are sorted by group name, the level column shows
// the level last told from the moment of the tell (0.215 showed the old one until STARTING), and
// a level `0` is written like any other.

import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { GroupLine } from './supervisor.js';

export const CLSTAT_CLASS = 'Cluster::Init::Group';
const HEARTBEAT_MIN_MS = 30_000;
const HEARTBEAT_SPREAD_MS = 15_000;

export function formatClstat(lines: readonly GroupLine[]): string {
  return [...lines]
    .sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0))
    .map((l) => `${CLSTAT_CLASS} ${l.group} ${l.level} ${l.state}\n`)
    .join('');
}

export interface ClstatLine {
  group: string;
  level: string;
  state: string;
}

/** The Group lines of a clstat text (other classes are skipped, as Cluster::Init's status() does). */
export function parseClstat(text: string): ClstatLine[] {
  const out: ClstatLine[] = [];
  for (const line of text.split('\n')) {
    const [cls, group, level, state] = line.trim().split(/\s+/);
    if (cls === CLSTAT_CLASS && group !== undefined && level !== undefined && state !== undefined) out.push({ group, level, state });
  }
  return out;
}

/**
 * Cluster::Init's status() output: "GROUP LEVEL STATE\n" per line, the group column left out when
 * filtering by group, the level column when filtering by level, and a bare STATE (no newline) with both.
 */
export function statusText(lines: readonly ClstatLine[], filter: { group?: string; level?: string } = {}): string {
  let out = '';
  for (const l of lines) {
    if (filter.group !== undefined && filter.group !== l.group) continue;
    if (filter.level !== undefined && filter.level !== l.level) continue;
    if (filter.group === undefined) out += `${l.group} `;
    if (filter.level === undefined) out += `${l.level} `;
    out += l.state;
    if (filter.group === undefined || filter.level === undefined) out += '\n';
  }
  return out;
}

/** Reads a clstat file; a missing file reads as no lines (the daemon is not running). */
export function readClstat(file: string): ClstatLine[] {
  try {
    return parseClstat(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export class ClstatWriter {
  private heartbeat: Timer | undefined;
  private closed = false;
  private failing = false;

  constructor(
    readonly file: string,
    private readonly lines: () => readonly GroupLine[],
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  /** Writes now and re-arms the heartbeat. A failure is logged (once per streak), never thrown. */
  write(): void {
    if (this.closed) return;
    const temp = `${this.file}.${process.pid}.tmp`;
    try {
      mkdirSync(path.dirname(this.file), { recursive: true });
      writeFileSync(temp, formatClstat(this.lines()));
      renameSync(temp, this.file);
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.logger.warn({ file: this.file, err: (err as Error).message }, 'cannot write the status file');
      this.failing = true;
      rmSync(temp, { force: true });
    }
    this.heartbeat?.cancel();
    this.heartbeat = this.clock.setTimer(HEARTBEAT_MIN_MS + Math.random() * HEARTBEAT_SPREAD_MS, () => this.write());
  }

  /** Stops the heartbeat and removes the file (Cluster::Init's Status::DESTROY). */
  close(): void {
    this.closed = true;
    this.heartbeat?.cancel();
    rmSync(this.file, { force: true });
  }
}
