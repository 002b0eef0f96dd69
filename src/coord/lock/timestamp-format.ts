// Timestamp resources `_t_FORMAT[N]`: FLoM's format language (flom.md §3.6) and the resolution a
// format implies. FORMAT is strftime(3) in local time (C locale) plus `#f`..`#ffffff`, a dot and 1..6
// digits of the second's fraction, substituted before strftime runs, as FLoM does.
//
// Two grants of one resource get values distinct at the format's resolution: a grant waits until
// the wall clock has left the interval of the last value issued. Intervals are counted in local
// time (FLoM counts them from the epoch, so an hourly format in a zone at UTC+5:30 could repeat).

import { CorralError } from '../../api/errors.js';

const MAX_FRACTION_DIGITS = 6;
const MICROS_PER_SECOND = 1_000_000;

// Specifiers that change once per second, per minute, per hour (FLoM's lists; %k and %l are
// glibc's blank-padded %H and %I, hourly too).
const PER_SECOND = new Set(['c', 'r', 's', 'S', 'T', 'X']);
const PER_MINUTE = new Set(['M', 'R']);
const PER_HOUR = new Set(['H', 'I', 'k', 'l']);

type Piece = { kind: 'text'; text: string } | { kind: 'fraction'; digits: number } | { kind: 'spec'; spec: string };

export interface TimestampFormat {
  readonly format: string;
  /** Width of one interval in microseconds: two values in one interval could look the same. */
  readonly resolutionMicros: number;
  readonly pieces: readonly Piece[];
}

const SUPPORTED = new Set('aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZ%'.split(''));

function badFormat(format: string, why: string): CorralError {
  return new CorralError('BAD_RESOURCE', `timestamp format '${format}' ${why}`);
}

/** Parses FORMAT; BAD_RESOURCE when it has an unknown specifier or none that changes at least hourly. */
export function parseTimestampFormat(format: string): TimestampFormat {
  const pieces: Piece[] = [];
  let text = '';
  const flush = (): void => {
    if (text !== '') pieces.push({ kind: 'text', text });
    text = '';
  };
  for (let i = 0; i < format.length; i++) {
    const c = format[i] as string;
    if (c === '#' && format[i + 1] === 'f') {
      let digits = 0;
      while (digits < MAX_FRACTION_DIGITS && format[i + 1 + digits] === 'f') digits++;
      flush();
      pieces.push({ kind: 'fraction', digits });
      i += digits;
    } else if (c === '%') {
      let spec = format[i + 1];
      let skip = 1;
      // The E and O modifiers select alternative representations, the same as plain in the C locale.
      if ((spec === 'E' || spec === 'O') && format[i + 2] !== undefined) {
        spec = format[i + 2];
        skip = 2;
      }
      if (spec === undefined || !SUPPORTED.has(spec)) {
        throw badFormat(format, `has an unsupported specifier '%${spec ?? ''}' (supported: %${[...SUPPORTED].join(' %')} and #f..#ffffff)`);
      }
      flush();
      pieces.push({ kind: 'spec', spec });
      i += skip;
    } else text += c;
  }
  flush();
  return { format, pieces, resolutionMicros: resolutionOf(format, pieces) };
}

function resolutionOf(format: string, pieces: readonly Piece[]): number {
  let finest = 0;
  for (const p of pieces) if (p.kind === 'fraction') finest = Math.max(finest, p.digits);
  if (finest > 0) return 10 ** (MAX_FRACTION_DIGITS - finest);
  const specs = new Set(pieces.flatMap((p) => (p.kind === 'spec' ? [p.spec] : [])));
  const has = (set: Set<string>): boolean => [...set].some((s) => specs.has(s));
  if (has(PER_SECOND)) return MICROS_PER_SECOND;
  if (has(PER_MINUTE)) return 60 * MICROS_PER_SECOND;
  if (has(PER_HOUR)) return 3600 * MICROS_PER_SECOND;
  throw badFormat(format, 'has no specifier that changes at least once per hour (for example %H, %M, %S or #fff)');
}

/** Local-time offset from UTC in microseconds at `wallMs` (positive east of Greenwich). */
function localOffsetMicros(wallMs: number): number {
  return -new Date(wallMs).getTimezoneOffset() * 60 * MICROS_PER_SECOND;
}

/** The interval `wallMs` falls in, at the format's resolution (local time). */
export function intervalOf(format: TimestampFormat, wallMs: number): number {
  return Math.floor((wallMs * 1000 + localOffsetMicros(wallMs)) / format.resolutionMicros);
}

/** The wall-clock time (ms) at which `interval` begins. */
export function intervalStartMs(format: TimestampFormat, interval: number, nearWallMs: number): number {
  return (interval * format.resolutionMicros - localOffsetMicros(nearWallMs)) / 1000;
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

const pad = (n: number, width: number, fill = '0'): string => String(n).padStart(width, fill);

let zoneNames: Intl.DateTimeFormat | undefined;
function zoneName(date: Date): string {
  zoneNames ??= new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' });
  return zoneNames.formatToParts(date).find((p) => p.type === 'timeZoneName')?.value ?? '';
}

function dayOfYear(d: Date): number {
  const start = new Date(d.getFullYear(), 0, 1);
  return Math.round((new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime() - start.getTime()) / 86_400_000);
}

/** ISO 8601 week-numbering year and week of a local date. */
function isoWeek(d: Date): { year: number; week: number } {
  const day = new Date(Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()));
  const weekday = day.getUTCDay() || 7;
  day.setUTCDate(day.getUTCDate() + 4 - weekday);
  const yearStart = Date.UTC(day.getUTCFullYear(), 0, 1);
  return { year: day.getUTCFullYear(), week: Math.ceil(((day.getTime() - yearStart) / 86_400_000 + 1) / 7) };
}

function spec(s: string, d: Date, wallMs: number): string {
  const hour12 = d.getHours() % 12 === 0 ? 12 : d.getHours() % 12;
  switch (s) {
    case 'a': return (DAYS[d.getDay()] as string).slice(0, 3);
    case 'A': return DAYS[d.getDay()] as string;
    case 'b': case 'h': return (MONTHS[d.getMonth()] as string).slice(0, 3);
    case 'B': return MONTHS[d.getMonth()] as string;
    case 'c': return `${spec('a', d, wallMs)} ${spec('b', d, wallMs)} ${spec('e', d, wallMs)} ${spec('T', d, wallMs)} ${d.getFullYear()}`;
    case 'C': return pad(Math.floor(d.getFullYear() / 100), 2);
    case 'd': return pad(d.getDate(), 2);
    case 'D': case 'x': return `${pad(d.getMonth() + 1, 2)}/${pad(d.getDate(), 2)}/${pad(d.getFullYear() % 100, 2)}`;
    case 'e': return pad(d.getDate(), 2, ' ');
    case 'F': return `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)}`;
    case 'G': return String(isoWeek(d).year);
    case 'g': return pad(isoWeek(d).year % 100, 2);
    case 'H': return pad(d.getHours(), 2);
    case 'I': return pad(hour12, 2);
    case 'j': return pad(dayOfYear(d) + 1, 3);
    case 'k': return pad(d.getHours(), 2, ' ');
    case 'l': return pad(hour12, 2, ' ');
    case 'm': return pad(d.getMonth() + 1, 2);
    case 'M': return pad(d.getMinutes(), 2);
    case 'n': return '\n';
    case 'p': return d.getHours() < 12 ? 'AM' : 'PM';
    case 'P': return d.getHours() < 12 ? 'am' : 'pm';
    case 'r': return `${pad(hour12, 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)} ${spec('p', d, wallMs)}`;
    case 'R': return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}`;
    case 's': return String(Math.floor(wallMs / 1000));
    case 'S': return pad(d.getSeconds(), 2);
    case 't': return '\t';
    case 'T': case 'X': return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}`;
    case 'u': return String(d.getDay() || 7);
    case 'U': return pad(Math.floor((dayOfYear(d) + 7 - d.getDay()) / 7), 2);
    case 'V': return pad(isoWeek(d).week, 2);
    case 'w': return String(d.getDay());
    case 'W': return pad(Math.floor((dayOfYear(d) + 7 - ((d.getDay() + 6) % 7)) / 7), 2);
    case 'y': return pad(d.getFullYear() % 100, 2);
    case 'Y': return String(d.getFullYear());
    case 'z': {
      const minutes = -d.getTimezoneOffset();
      const abs = Math.abs(minutes);
      return `${minutes < 0 ? '-' : '+'}${pad(Math.floor(abs / 60), 2)}${pad(abs % 60, 2)}`;
    }
    case 'Z': return zoneName(d);
    case '%': return '%';
    default: return `%${s}`;
  }
}

/** Formats `wallMs` (milliseconds since the epoch, fractions kept for #ffff..#ffffff). */
export function formatTimestamp(format: TimestampFormat, wallMs: number): string {
  const seconds = Math.floor(wallMs / 1000);
  const date = new Date(seconds * 1000);
  const micros = pad(Math.min(999_999, Math.floor((wallMs - seconds * 1000) * 1000)), 6);
  let out = '';
  for (const p of format.pieces) {
    if (p.kind === 'text') out += p.text;
    else if (p.kind === 'fraction') out += `.${micros.slice(0, p.digits)}`;
    else out += spec(p.spec, date, wallMs);
  }
  return out;
}
