// A small declarative argument parser. Hand-written rather than commander because every verb
// needs FLoM-compatible details (`-o -1` takes a negative value, repeatable flags, `--` before a
// command) and because start-up latency matters: this file imports nothing.

import { CorralError } from '../api/errors.js';

export type OptionType = 'boolean' | 'string' | 'integer';

export interface OptionSpec {
  /** Long name without dashes, e.g. 'config'. The parsed value is stored under this name. */
  name: string;
  short?: string;
  type: OptionType;
  multiple?: boolean;
  /** Placeholder in help, e.g. 'FILE'. */
  value?: string;
  description: string;
  /** Other long names accepted for this option. */
  aliases?: string[];
  /** Accepted but not listed by `corral help` (to refuse it with a message of the verb's own). */
  hidden?: boolean;
}

export interface VerbSpec {
  name: string;
  summary: string;
  /** The synopsis after `corral`, e.g. 'status [--json]'. */
  usage: string;
  /** Paragraphs printed after the options by `corral help VERB`. */
  details?: string;
  options: OptionSpec[];
  /** Bounds on positional arguments (before `--`). */
  positionals?: { min: number; max: number; names?: string };
  /** Whether arguments after `--` (or after the first positional when `stopAtPositional`) are a command. */
  command?: 'required' | 'optional';
  /** Documented exit codes. */
  exitCodes?: [number, string][];
  /** Exit code for a usage error (default 2). */
  usageExitCode?: number;
}

export type OptionValue = boolean | string | number | string[] | number[] | undefined;

export interface ParsedArgs {
  options: Record<string, OptionValue>;
  positionals: string[];
  /** The command after `--` (empty when none). */
  command: string[];
}

export class UsageError extends CorralError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

export const commonOptions = {
  config: {
    name: 'config',
    short: 'c',
    type: 'string',
    value: 'FILE',
    description: 'cluster configuration (default: $CORRAL_CONFIG)',
  },
  json: { name: 'json', type: 'boolean', description: 'print JSON instead of text' },
  help: { name: 'help', short: 'h', type: 'boolean', description: 'show this help' },
} satisfies Record<string, OptionSpec>;

function findLong(spec: VerbSpec, name: string): OptionSpec | undefined {
  return spec.options.find((o) => o.name === name || o.aliases?.includes(name));
}

function convert(opt: OptionSpec, raw: string, flag: string): string | number {
  if (opt.type === 'integer') {
    if (!/^[-+]?\d+$/.test(raw)) throw new UsageError(`${flag} takes an integer, not '${raw}'`);
    const n = Number(raw);
    if (!Number.isSafeInteger(n)) throw new UsageError(`${flag}: ${raw} is out of range`);
    return n;
  }
  return raw;
}

function store(out: Record<string, OptionValue>, opt: OptionSpec, value: string | number | boolean): void {
  if (opt.multiple) {
    const prev = out[opt.name];
    const list = Array.isArray(prev) ? prev : [];
    (list as (string | number)[]).push(value as string | number);
    out[opt.name] = list;
  } else {
    out[opt.name] = value;
  }
}

/** Parses argv (without the verb) against a spec. Throws UsageError on anything unknown. */
export function parseArgs(spec: VerbSpec, argv: readonly string[]): ParsedArgs {
  const options: Record<string, OptionValue> = {};
  const positionals: string[] = [];
  let command: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      command = argv.slice(i + 1);
      break;
    }
    if (arg.startsWith('--') && arg.length > 2) {
      const eq = arg.indexOf('=');
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      const opt = findLong(spec, name);
      if (!opt) throw new UsageError(`unknown option --${name}`);
      if (opt.type === 'boolean') {
        if (eq !== -1) throw new UsageError(`--${name} takes no value`);
        store(options, opt, true);
        continue;
      }
      let raw: string;
      if (eq !== -1) raw = arg.slice(eq + 1);
      else {
        if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value${opt.value ? ` (${opt.value})` : ''}`);
        raw = argv[++i] as string;
      }
      store(options, opt, convert(opt, raw, `--${name}`));
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1 && !/^-\d/.test(arg)) {
      // A cluster of short flags: -xV, or -o 5, or -o5.
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j] as string;
        const opt = spec.options.find((o) => o.short === letter);
        if (!opt) throw new UsageError(`unknown option -${letter}`);
        if (opt.type === 'boolean') {
          store(options, opt, true);
          continue;
        }
        let raw: string;
        if (j + 1 < arg.length) raw = arg.slice(j + 1);
        else {
          if (i + 1 >= argv.length) throw new UsageError(`-${letter} needs a value${opt.value ? ` (${opt.value})` : ''}`);
          raw = argv[++i] as string;
        }
        store(options, opt, convert(opt, raw, `-${letter}`));
        break;
      }
      continue;
    }
    positionals.push(arg);
  }
  if (options.help === true) return { options, positionals, command };
  const bounds = spec.positionals ?? { min: 0, max: 0 };
  if (positionals.length > bounds.max) {
    const extra = positionals[bounds.max] as string;
    throw new UsageError(
      bounds.max === 0 ? `unexpected argument '${extra}'` : `too many arguments (from '${extra}')`,
    );
  }
  if (positionals.length < bounds.min) throw new UsageError(`missing ${bounds.names ?? 'argument'}`);
  if (spec.command === 'required' && command.length === 0) throw new UsageError('missing command after --');
  if (spec.command === undefined && command.length > 0) throw new UsageError(`unexpected '--' and command`);
  return { options, positionals, command };
}

function optionLabel(o: OptionSpec): string {
  const long = `--${o.name}${o.type === 'boolean' ? '' : ` ${o.value ?? (o.type === 'integer' ? 'N' : 'VALUE')}`}`;
  return o.short ? `-${o.short}, ${long}` : `    ${long}`;
}

export function renderHelp(spec: VerbSpec): string {
  const lines = [`Usage: corral ${spec.usage}`, '', spec.summary];
  if (spec.options.length > 0) {
    lines.push('', 'Options:');
    const shown = spec.options.filter((o) => o.hidden !== true);
    const labels = shown.map(optionLabel);
    const width = Math.min(34, Math.max(...labels.map((l) => l.length)) + 2);
    shown.forEach((o, k) => {
      const label = labels[k] as string;
      const pad = label.length >= width ? `${label}\n  ${' '.repeat(width)}` : label.padEnd(width);
      const alias = o.aliases?.length ? ` (also --${o.aliases.join(', --')})` : '';
      lines.push(`  ${pad}${o.description}${o.multiple ? ' (repeatable)' : ''}${alias}`);
    });
  }
  if (spec.details) lines.push('', spec.details.trim());
  if (spec.exitCodes?.length) {
    lines.push('', 'Exit codes:');
    for (const [code, what] of spec.exitCodes) lines.push(`  ${String(code).padStart(3)}  ${what}`);
  }
  return lines.join('\n') + '\n';
}

export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.options[name];
  return typeof v === 'string' ? v : undefined;
}

export function int(args: ParsedArgs, name: string): number | undefined {
  const v = args.options[name];
  return typeof v === 'number' ? v : undefined;
}

export function flag(args: ParsedArgs, name: string): boolean {
  return args.options[name] === true;
}
