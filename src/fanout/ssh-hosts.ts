// The hosts file of `--ssh --hosts FILE` (distsys's clients.conf, made robust): one
// `[user@]host[:port]` per line, `#` comments and blank lines ignored. A malformed line or a host
// listed twice is a usage error naming FILE:LINE.
//
// Node names (for -w/-x and the output): the host as written. When one host appears on several
// lines with different ports, each entry with a port is named `host-PORT` (`:` cannot appear in a
// node set). IPv6 literals are refused: give the machine a Host alias in ~/.ssh/config.

import { readFileSync } from 'node:fs';
import { CorralError } from '../api/errors.js';

export interface SshHost {
  /** The node name used by -w/-x and in the output. */
  name: string;
  /** What ssh connects to (a name, an alias from the ssh config, or an IPv4 address). */
  host: string;
  user?: string;
  port?: number;
  /** Where it was listed, for messages. */
  line: number;
}

const HOST = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const USER = /^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$/;

function parseLine(text: string): { host: string; user?: string; port?: number } | string {
  let rest = text;
  let user: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at !== -1) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (!USER.test(user)) return `${JSON.stringify(user)} is not a user name`;
  }
  if (rest.startsWith('[') || rest.split(':').length > 2) return 'IPv6 addresses are not accepted here: name the machine with a Host alias in ~/.ssh/config and list the alias';
  let port: number | undefined;
  const colon = rest.indexOf(':');
  if (colon !== -1) {
    const p = rest.slice(colon + 1);
    port = Number(p);
    if (!/^\d{1,5}$/.test(p) || port < 1 || port > 65535) return `${JSON.stringify(p)} is not a port (1-65535)`;
    rest = rest.slice(0, colon);
  }
  if (!HOST.test(rest)) return `${JSON.stringify(rest)} is not a host name (letters, digits, '.', '-', '_'; not starting with '-')`;
  return { host: rest, ...(user !== undefined ? { user } : {}), ...(port !== undefined ? { port } : {}) };
}

/** Parses the text of a hosts file; `file` names it in messages. */
export function parseHosts(text: string, file: string): SshHost[] {
  const entries: Omit<SshHost, 'name'>[] = [];
  const seen = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const content = raw.replace(/#.*$/, '').trim();
    if (content === '') return;
    if (/\s/.test(content)) throw new CorralError('USAGE', `${file}:${line}: ${JSON.stringify(content)}: one host per line, as [user@]host[:port]`);
    const parsed = parseLine(content);
    if (typeof parsed === 'string') throw new CorralError('USAGE', `${file}:${line}: ${parsed} (expected [user@]host[:port])`);
    const key = `${parsed.host}:${parsed.port ?? ''}`;
    const first = seen.get(key);
    if (first !== undefined) {
      throw new CorralError('USAGE', `${file}:${line}: ${parsed.host}${parsed.port ? `:${parsed.port}` : ''} is already listed on line ${first}; list each host once`);
    }
    seen.set(key, line);
    entries.push({ ...parsed, line });
  });
  if (entries.length === 0) throw new CorralError('USAGE', `${file} lists no hosts: write one [user@]host[:port] per line`);
  const perHost = new Map<string, number>();
  for (const e of entries) perHost.set(e.host, (perHost.get(e.host) ?? 0) + 1);
  const names = new Map<string, number>();
  return entries.map((e) => {
    const name = (perHost.get(e.host) ?? 0) > 1 && e.port !== undefined ? `${e.host}-${e.port}` : e.host;
    const other = names.get(name);
    if (other !== undefined) throw new CorralError('USAGE', `${file}:${e.line}: its node name ${name} is also the name of line ${other}; rename one with a Host alias in ~/.ssh/config`);
    names.set(name, e.line);
    return { name, ...e };
  });
}

export function readHostsFile(file: string): SshHost[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CorralError('USAGE', `--hosts ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseHosts(text, file);
}
