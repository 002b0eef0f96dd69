// The agent's logger: pino, writing JSON lines to stderr when stderr is not a terminal (journald,
// files, log shippers) and short readable lines when it is.

import { pino, type DestinationStream } from 'pino';
import type { Logger } from '../util/log.js';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'node']);

/** Renders one pino JSON line as `12:00:01.123 INFO  n1: message key=value`. */
export function prettyLine(json: string, color: boolean): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = new Date(typeof o.time === 'number' ? o.time : Date.now()).toISOString().slice(11, 23);
  const level = LEVELS[o.level as number] ?? String(o.level);
  const extras = Object.entries(o)
    .filter(([k]) => !HIDDEN.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  const node = typeof o.node === 'string' ? `${o.node}: ` : '';
  let tag = level.padEnd(5);
  if (color) {
    const code = (o.level as number) >= 50 ? 31 : (o.level as number) >= 40 ? 33 : (o.level as number) >= 30 ? 32 : 90;
    tag = `\x1b[${code}m${tag}\x1b[0m`;
  }
  return `${time} ${tag} ${node}${typeof o.msg === 'string' ? o.msg : JSON.stringify(o.msg ?? '')}${extras ? `  ${extras}` : ''}\n`;
}

export interface AgentLogger extends Logger {
  flush(): void;
}

export function createAgentLogger(options: { level?: string; node?: string; pretty?: boolean } = {}): AgentLogger {
  const pretty = options.pretty ?? process.stderr.isTTY === true;
  const color = pretty && !process.env.NO_COLOR;
  const destination: DestinationStream = pretty
    ? { write: (line: string) => void process.stderr.write(prettyLine(line, color)) }
    : pino.destination({ dest: 2, sync: false });
  const logger = pino(
    {
      level: options.level ?? process.env.CORRAL_LOG_LEVEL ?? 'info',
      base: options.node ? { pid: process.pid, node: options.node } : { pid: process.pid },
      timestamp: pino.stdTimeFunctions.epochTime,
    },
    destination,
  );
  return logger;
}
