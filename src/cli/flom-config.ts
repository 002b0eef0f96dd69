// FLoM's configuration file (`flom -c FILE`, GLib key-file syntax), for `corral lock -c FILE`:
//
//   # comment
//   [Resource]
//   Name=backup
//   LockMode=PR
//
// The keys corral honours (the rest of FLoM's keys are reported and ignored):
//
//   [Resource]  Name, Timeout, Quantity, LockMode, Create, IdleLifespan
//   [Daemon]    SocketName, Lifespan, UnicastAddress, UnicastPort
//   [Monitor]   IgnoredSignals (e.g. SIGTERM;SIGQUIT)
//   [Trace]     Verbose
//
// Values are checked exactly (booleans yes/no/y/n/true/false/1/0, case-insensitive; lock modes by
// name), not by FLoM's substring matching. Only -c FILE is read: not flom's system file nor ~/.flom.
// Any option given on the command line overrides the file, 0 included (flom's `-i 0` cannot: its
// command-line default doubles as "not given"). UnicastPort without UnicastAddress (or -p without
// -a) is ignored, as flom ignores it: the local socket serves.

import { readFileSync } from 'node:fs';
import { CorralError } from '../api/errors.js';

export interface FlomSettings {
  resourceName?: string;
  resourceTimeoutMs?: number;
  resourceQuantity?: number;
  lockMode?: string;
  resourceCreate?: boolean;
  resourceIdleLifespanMs?: number;
  socketName?: string;
  daemonLifespanMs?: number;
  unicastAddress?: string;
  unicastPort?: number;
  ignoredSignals?: string[];
  verbose?: boolean;
}

export interface FlomConfigFile {
  settings: FlomSettings;
  /** `[Group]/Key` of FLoM settings corral does not support (ignored). */
  ignored: string[];
}

/** FLoM's keys corral does not implement: accepted in a file, reported, ignored. */
const UNSUPPORTED = new Set([
  'Daemon/MulticastAddress',
  'Daemon/MulticastPort',
  'Daemon/MountPointVFS',
  'Network/NetworkInterface',
  'Network/DiscoveryAttempts',
  'Network/DiscoveryTimeout',
  'Network/DiscoveryTTL',
  'Network/TcpKeepaliveTime',
  'Network/TcpKeepaliveIntvl',
  'Network/TcpKeepaliveProbes',
  'TLS/TlsCertificate',
  'TLS/TlsPrivateKey',
  'TLS/TlsCaCertificate',
  'TLS/TlsCheckPeerId',
  'Trace/DaemonTraceFile',
  'Trace/CommandTraceFile',
  'Trace/AppendTraceFile',
  'Resource/Wait',
]);

export function parseFlomBoolean(text: string): boolean | undefined {
  switch (text.trim().toLowerCase()) {
    case 'yes':
    case 'y':
    case 'true':
    case '1':
      return true;
    case 'no':
    case 'n':
    case 'false':
    case '0':
      return false;
    default:
      return undefined;
  }
}

export function readFlomConfig(file: string): FlomConfigFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CorralError('CONFIG_INVALID', `ERROR: error while loading file ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseFlomConfig(text, file);
}

export function parseFlomConfig(text: string, file: string): FlomConfigFile {
  const settings: FlomSettings = {};
  const ignored: string[] = [];
  let group: string | undefined;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const where = `${file}:${index + 1}`;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      group = (header[1] as string).trim();
      return;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) throw new CorralError('CONFIG_INVALID', `ERROR: error while loading file ${where}: expected [Group] or Key=Value, got '${line}'`);
    if (group === undefined) throw new CorralError('CONFIG_INVALID', `ERROR: error while loading file ${where}: key outside of a [Group]`);
    const key = `${group}/${line.slice(0, eq).trim()}`;
    const value = line.slice(eq + 1).trim();
    const bad = (what: string): never => {
      throw new CorralError('CONFIG_INVALID', `ERROR: error while loading file ${where}: [${group}]/${line.slice(0, eq).trim()} must be ${what}, not '${value}'`);
    };
    const integer = (): number => (/^[-+]?\d+$/.test(value) && Number.isSafeInteger(Number(value)) ? Number(value) : bad('an integer'));
    const boolean = (): boolean => parseFlomBoolean(value) ?? bad('yes or no');
    switch (key) {
      case 'Resource/Name':
        settings.resourceName = value;
        return;
      case 'Resource/Timeout':
        settings.resourceTimeoutMs = integer();
        return;
      case 'Resource/Quantity':
        settings.resourceQuantity = integer();
        return;
      case 'Resource/LockMode':
        settings.lockMode = value;
        return;
      case 'Resource/Create':
        settings.resourceCreate = boolean();
        return;
      case 'Resource/IdleLifespan':
        settings.resourceIdleLifespanMs = Math.abs(integer());
        return;
      case 'Daemon/SocketName':
        settings.socketName = value;
        return;
      case 'Daemon/Lifespan':
        settings.daemonLifespanMs = integer();
        return;
      case 'Daemon/UnicastAddress':
        settings.unicastAddress = value;
        return;
      case 'Daemon/UnicastPort': {
        const port = integer();
        if (port < 1 || port > 65535) bad('a port number');
        settings.unicastPort = port;
        return;
      }
      case 'Monitor/IgnoredSignals':
        settings.ignoredSignals = value.split(';').map((s) => s.trim()).filter((s) => s !== '');
        return;
      case 'Trace/Verbose':
        settings.verbose = boolean();
        return;
      default:
        if (UNSUPPORTED.has(key)) {
          ignored.push(`[${group}]/${line.slice(0, eq).trim()}`);
          return;
        }
        throw new CorralError('CONFIG_INVALID', `ERROR: error while loading file ${where}: unknown key [${group}]/${line.slice(0, eq).trim()}`);
    }
  });
  return { settings, ignored };
}
