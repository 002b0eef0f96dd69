// corral locks: every lock resource with its holders and waiters, from the private daemon (default)
// or a cluster's agent (--config, $CORRAL_CONFIG).

import { isCorralError } from '../../api/errors.js';
import type { LockEntryWire, LockListingWire } from '../../api/lock-wire.js';
import { commonOptions, flag, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'locks',
  summary: 'list lock resources with their holders and waiters',
  usage: 'locks [-s PATH | --config FILE] [--json]',
  options: [
    { name: 'socket-name', short: 's', type: 'string', value: 'PATH', description: "the private daemon's socket (default: corral lock's per-user socket)" },
    { name: 'config', type: 'string', value: 'FILE', description: "list a cluster's locks through its agent (also $CORRAL_CONFIG)" },
    commonOptions.json,
    commonOptions.help,
  ],
  details: `Shows every resource in use or kept within its idle lifespan: each holder and waiter with its
mode, quantity, value (set element, sequence number or timestamp), node, pid and command, how
long ago it asked, and for holders the fencing token. Waiters are listed in the order they will
be served. Without --config or $CORRAL_CONFIG it asks the private daemon of corral lock (and
starts none: no daemon, no locks).

--json prints {"revision", "node", "resources": [{"name", "kind", "kept", "holders": [...],
"waiters": [{"resource", "mode", "quantity", "value", "node", "pid", "command", "since",
"fencingToken"}]}]}.`,
  exitCodes: [
    [0, 'listed (also: no private daemon runs, so no locks)'],
    [2, 'bad command line'],
    [69, 'the agent could not be reached'],
    [78, 'no or invalid cluster configuration'],
  ],
};

async function fetchListing(args: ParsedArgs, io: CliIO): Promise<LockListingWire | { none: string }> {
  const { RpcClient } = await import('../../transport/client.js');
  const { listLocksVia } = await import('../../client/locks.js');
  const configFile = str(args, 'config') ?? (str(args, 'socket-name') ? undefined : io.env.CORRAL_CONFIG);
  if (configFile) {
    const { loadClusterConfig } = await import('../../config/cluster-config.js');
    const { CorralClient } = await import('../../client/client.js');
    const client = new CorralClient(loadClusterConfig(configFile));
    try {
      return await client.locks();
    } finally {
      await client.close();
    }
  }
  const { defaultLockSocket, nobodyListens } = await import('../../client/private-daemon.js');
  const path = await import('node:path');
  const given = str(args, 'socket-name');
  const socket = given ? path.resolve(given) : defaultLockSocket(io.env);
  const rpc = new RpcClient({ kind: 'unix', path: socket }, { connectTimeoutMs: 2000, requestTimeoutMs: 10_000 });
  try {
    return await listLocksVia(rpc);
  } catch (err) {
    if (isCorralError(err, 'UNAVAILABLE') && nobodyListens(err)) return { none: socket };
    throw err;
  } finally {
    await rpc.close();
  }
}

function ago(since: string, now: number): string {
  const t = Date.parse(since);
  if (!Number.isFinite(t)) return '-';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const listing = await fetchListing(args, io);
  if ('none' in listing) {
    io.stdout(flag(args, 'json') ? JSON.stringify({ revision: null, node: null, resources: [] }, null, 2) + '\n' : `no lock daemon runs on ${listing.none}: no locks\n`);
    return 0;
  }
  if (flag(args, 'json')) {
    io.stdout(JSON.stringify(listing, null, 2) + '\n');
    return 0;
  }
  if (listing.resources.length === 0) {
    io.stdout('no locks\n');
    return 0;
  }
  const { table } = await import('../output.js');
  const now = Date.now();
  const rows: string[][] = [];
  const row = (name: string, kind: string, state: string, e: LockEntryWire): string[] => [
    name,
    kind,
    state,
    e.mode,
    String(e.quantity),
    e.value ?? '-',
    e.node ?? '-',
    e.pid === null ? '-' : String(e.pid),
    ago(e.since, now),
    e.fencingToken ?? '-',
    e.command ?? '-',
  ];
  for (const r of listing.resources) {
    for (const h of r.holders) rows.push(row(r.name, r.kind, h.orphaned ? 'held (client gone)' : 'held', h));
    r.waiters.forEach((w, i) => rows.push(row(r.name, r.kind, `waiting #${i + 1}`, w)));
    if (r.holders.length === 0 && r.waiters.length === 0 && r.kept) rows.push([r.name, r.kind, 'kept (idle lifespan)', '-', '-', '-', '-', '-', '-', '-', '-']);
  }
  io.stdout(table(['RESOURCE', 'KIND', 'STATE', 'MODE', 'QTY', 'VALUE', 'NODE', 'PID', 'SINCE', 'TOKEN', 'COMMAND'], rows));
  return 0;
}

export const verb: Verb = { spec, run };
