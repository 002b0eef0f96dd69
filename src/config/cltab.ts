// The cltab format of Cluster::Init 0.215, read exactly as the original reads it (file order,
// `#` comments in column 0, blank lines, `:::KEY:VALUE` settings, `group:tag:levels:mode:command`
// split on the first four colons), except that every defect the original only noticed later
// (a duplicate tag, an unknown mode, a line that is not an entry) is refused here, when the file
// is read, as `FILE:LINE: what is wrong`.

import { readFileSync } from 'node:fs';
import { CorralError } from '../api/errors.js';

export const RUN_MODES = ['wait', 'once', 'respawn', 'test', 'off'] as const;
export type RunMode = (typeof RUN_MODES)[number];

/** Cluster::Init's defaults (Conf::new). */
export const CLTAB_DEFAULTS = {
  cltab: '/etc/cltab',
  socket: '/var/run/clinit/clinit.s',
  clstat: '/var/run/clinit/clstat',
  log: '/var/run/clinit/log',
} as const;

export interface CltabEntry {
  group: string;
  tag: string;
  /** The level field as written: "1", "12" (levels 12, 1 and 2), "long1,long2,5", "long3,". */
  levels: string;
  mode: RunMode;
  command: string;
  /** 1-based line number in the file. */
  line: number;
}

/** When SIGTERM and SIGKILL follow the first SIGINT of a stop. */
export interface StopTimes {
  termAfterMs: number;
  killAfterMs: number;
}

/** More than `limit` respawns, each within `windowMs` of the previous one, pause the entry for `pauseMs`. */
export interface ThrottleTimes {
  limit: number;
  windowMs: number;
  pauseMs: number;
}

export interface LogRotation {
  maxBytes: number;
  keep: number;
}

export interface Cltab {
  file: string;
  /** Every `:::KEY:VALUE` setting, the last one of a key winning (as the original). */
  settings: Record<string, string>;
  socket?: string;
  clstat?: string;
  /** `:::log:` (unused in 0.215): corral's directory for per-process logs. */
  log?: string;
  entries: CltabEntry[];
  /** Group names in order of first appearance. */
  groups: string[];
  /** `:::stop:[GROUP:]TERM,KILL` in seconds; the key '' holds the file-wide default. */
  stop: Map<string, StopTimes>;
  /** `:::throttle:[GROUP:]COUNT,WINDOW,PAUSE` (count, seconds, seconds); '' is the default. */
  throttle: Map<string, ThrottleTimes>;
  /** `:::logrotate:SIZE,KEEP` (SIZE in bytes, or with a k, M or G suffix). */
  logRotation?: LogRotation;
}

const SETTING = /^:::(.+?):(.+)$/;
const WHITESPACE = /\s/;

/**
 * Whether an entry's level field includes `level`: the field equals it, or it is one element of
 * the field split on commas (when the field has a comma) or into single characters (when not).
 * Unlike 0.215, `level` is compared as text, never as a regular expression.
 */
export function cltabHasLevel(field: string, level: string): boolean {
  if (field === level) return true;
  const parts = field.includes(',') ? field.split(',').filter((p) => p !== '') : [...field];
  return parts.includes(level);
}

class LineError extends Error {}

function fail(message: string): never {
  throw new LineError(message);
}

function seconds(text: string, what: string): number {
  if (!/^\d+(\.\d+)?$/.test(text.trim())) fail(`${what} must be a number of seconds, not '${text}'`);
  return Math.round(Number(text.trim()) * 1000);
}

function count(text: string, what: string): number {
  if (!/^\d+$/.test(text.trim())) fail(`${what} must be a whole number, not '${text}'`);
  return Number(text.trim());
}

function bytes(text: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(text.trim());
  if (!m) fail(`the log size must be bytes, optionally with a k, M or G suffix, not '${text}'`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').toLowerCase()] ?? 1;
  return Number(m[1]) * unit;
}

/** Splits `[GROUP:]VALUE`; a value never contains a colon, so one colon means a group is named. */
function groupScoped(value: string): [string, string] {
  const colon = value.lastIndexOf(':');
  return colon < 0 ? ['', value] : [value.slice(0, colon), value.slice(colon + 1)];
}

function parseStop(value: string): StopTimes {
  const parts = value.split(',');
  if (parts.length !== 2) fail(`:::stop: wants TERM,KILL seconds after the SIGINT (e.g. 5,15), not '${value}'`);
  const termAfterMs = seconds(parts[0] as string, 'the SIGTERM delay');
  const killAfterMs = seconds(parts[1] as string, 'the SIGKILL delay');
  if (killAfterMs < termAfterMs) fail(`:::stop: the SIGKILL delay (${parts[1]}) must not be shorter than the SIGTERM delay (${parts[0]})`);
  return { termAfterMs, killAfterMs };
}

function parseThrottle(value: string): ThrottleTimes {
  const parts = value.split(',');
  if (parts.length !== 3) fail(`:::throttle: wants COUNT,WINDOW,PAUSE (e.g. 5,1,60), not '${value}'`);
  const windowMs = seconds(parts[1] as string, 'the respawn window');
  if (windowMs === 0) fail(':::throttle: the respawn window must be more than 0 seconds');
  return { limit: count(parts[0] as string, 'the respawn count'), windowMs, pauseMs: seconds(parts[2] as string, 'the pause') };
}

function parseRotation(value: string): LogRotation {
  const parts = value.split(',');
  if (parts.length !== 2) fail(`:::logrotate: wants SIZE,KEEP (e.g. 10M,5), not '${value}'`);
  const maxBytes = bytes(parts[0] as string);
  if (maxBytes < 1024) fail(':::logrotate: the size must be at least 1024 bytes');
  return { maxBytes, keep: count(parts[1] as string, 'the number of rotated files to keep') };
}

function parseEntry(line: string, lineNo: number): CltabEntry {
  // Perl's split(/:/, $_, 5): at most five fields, the command keeps its colons.
  const fields: string[] = [];
  let rest = line;
  while (fields.length < 4) {
    const colon = rest.indexOf(':');
    if (colon < 0) break;
    fields.push(rest.slice(0, colon));
    rest = rest.slice(colon + 1);
  }
  fields.push(rest);
  if (fields.length < 5) fail(`expected group:tag:levels:mode:command, found ${fields.length} field${fields.length === 1 ? '' : 's'}`);
  const [group, tag, levels, mode, command] = fields as [string, string, string, string, string];
  if (group === '') fail('the group (field 1) is empty');
  if (WHITESPACE.test(group)) fail(`the group '${group}' contains whitespace (the status file could not show it)`);
  if (tag === '') fail('the tag (field 2) is empty');
  if (WHITESPACE.test(tag)) fail(`the tag '${tag}' contains whitespace`);
  if (levels === '') fail('the levels (field 3) are empty, so the entry would never run');
  if (!(RUN_MODES as readonly string[]).includes(mode)) {
    fail(`invalid mode: '${mode}' (expected ${RUN_MODES.join(', ')})${WHITESPACE.test(mode) ? '; note the whitespace' : ''}`);
  }
  if (command.trim() === '' && mode !== 'off') fail('the command (field 5) is empty');
  return { group, tag, levels, mode: mode as RunMode, command, line: lineNo };
}

export interface ParseOptions {
  /** Parse only the `:::` settings and skip entries (what the original's client context reads). */
  settingsOnly?: boolean;
}

/** Parses cltab text; throws CONFIG_INVALID `FILE:LINE: what is wrong` on the first defect. */
export function parseCltab(text: string, file: string, options: ParseOptions = {}): Cltab {
  const out: Cltab = { file, settings: {}, entries: [], groups: [], stop: new Map(), throttle: new Map() };
  const tags = new Map<string, number>();
  const scoped: { group: string; line: number }[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.startsWith('#') || /^\s*$/.test(line)) return;
    try {
      const setting = SETTING.exec(line);
      if (setting) {
        const [, key, value] = setting as unknown as [string, string, string];
        out.settings[key] = value;
        if (key === 'socket') out.socket = value;
        else if (key === 'clstat') out.clstat = value;
        else if (key === 'log') out.log = value;
        else if (key === 'stop' || key === 'throttle') {
          const [group, times] = groupScoped(value);
          if (group !== '') scoped.push({ group, line: lineNo });
          if (key === 'stop') out.stop.set(group, parseStop(times));
          else out.throttle.set(group, parseThrottle(times));
        } else if (key === 'logrotate') out.logRotation = parseRotation(value);
        return;
      }
      if (options.settingsOnly) return;
      const entry = parseEntry(line, lineNo);
      const first = tags.get(entry.tag);
      if (first !== undefined) fail(`entry has duplicate tag: ${entry.tag} (first used at line ${first}; tags are unique across the file)`);
      tags.set(entry.tag, lineNo);
      if (!out.groups.includes(entry.group)) out.groups.push(entry.group);
      out.entries.push(entry);
    } catch (err) {
      // A client only needs the socket and status paths: a bad line elsewhere must not stop `clinit -k`.
      if (err instanceof LineError && options.settingsOnly) return;
      if (err instanceof LineError) throw new CorralError('CONFIG_INVALID', `${file}:${lineNo}: ${err.message}`);
      throw err;
    }
  });
  if (!options.settingsOnly) {
    for (const { group, line } of scoped) {
      if (!out.groups.includes(group)) {
        throw new CorralError('CONFIG_INVALID', `${file}:${line}: the setting names group '${group}', which has no entry in this file`);
      }
    }
  }
  return out;
}

/**
 * Reads and parses a cltab. A missing file is `undefined` (Cluster::Init warns and runs with no
 * entries); any other read failure or defect throws CONFIG_INVALID.
 */
export function readCltab(file: string, options: ParseOptions = {}): Cltab | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new CorralError('CONFIG_INVALID', `${file}: cannot be read (${code ?? String(err)}); check the path and its permissions`, { cause: err });
  }
  return parseCltab(text, file, options);
}
