import { commonOptions, flag, str, UsageError, type ParsedArgs, type VerbSpec } from '../args.js';
import { fanoutLimit, interruptible, openFleet, targetOptions, targetSpec } from '../fanout-common.js';
import type { CliIO, Verb } from '../verb.js';

const DEFAULT_TIMEOUT_S = 5;

const spec: VerbSpec = {
  name: 'ping',
  summary: 'check every node end to end (connect, authenticate, run a no-op): ON with latency, or OFF and why',
  usage: 'ping [-w SET] [-x SET] [-a] [--ssh --hosts FILE] [-t SECONDS] [--json] | ping --mesh [-t SECONDS] [--json]',
  options: [
    ...targetOptions,
    { name: 'timeout', short: 't', type: 'string', value: 'SECONDS', description: `how long each node has to answer (default ${DEFAULT_TIMEOUT_S}; fractions allowed, at most 60)` },
    { name: 'mesh', type: 'boolean', description: "instead: the round trip from the agent reached to every registered node's agent (mutual TLS, no command run)" },
    commonOptions.json,
    commonOptions.help,
  ],
  details: `Each node gets the no-op \`true\` through the same path as \`corral run\`: over the cluster's
agents by default (the agent reached relays over its mutual-TLS connections), over the system ssh
with --ssh. A node is ON when \`true\` ran and exited 0 there; the latency is the time from the
request to its answer. A node is OFF with one of: unreachable, auth refused, timed out, no-op
failed with code N (details on standard error). Nodes are listed in natural order (n2 before n10).

--mesh prints what the cluster's own agents see instead: the round trip from the agent this
command reaches to every registered node's agent, without running anything.`,
  exitCodes: [
    [0, 'every node is ON (with --mesh: every node answered)'],
    [2, 'usage: bad option, unknown node, empty node set'],
    [4, 'some node is OFF (with --mesh: did not answer)'],
    [69, 'no agent could be reached'],
    [78, 'no or invalid configuration'],
    [130, 'interrupted (Ctrl-C): the nodes that had not answered are listed as cancelled'],
  ],
};

function timeoutMs(args: ParsedArgs): number {
  const text = str(args, 'timeout');
  if (text === undefined) return DEFAULT_TIMEOUT_S * 1000;
  const s = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(s) || s <= 0 || s > 60) throw new UsageError(`--timeout takes seconds, more than 0 and at most 60 (e.g. 2 or 0.5), not '${text}'`);
  return Math.max(1, Math.round(s * 1000));
}

async function mesh(args: ParsedArgs, io: CliIO, timeout: number): Promise<number> {
  for (const o of ['nodes', 'exclude', 'all', 'ssh', 'hosts', 'fanout']) {
    if (args.options[o] !== undefined && args.options[o] !== false) throw new UsageError(`--mesh pings every registered node from the cluster's agents; it does not take --${o}`);
  }
  const { configPath, loadClusterConfig } = await import('../../config/cluster-config.js');
  const { CorralClient } = await import('../../client/client.js');
  const { table, paint, json } = await import('../output.js');
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  const via = str(args, 'via');
  const client = new CorralClient(config, via ? { node: via } : {});
  try {
    const t0 = performance.now();
    const local = await client.ping();
    const localRtt = performance.now() - t0;
    const result = await client.clusterPing(timeout);
    const failed = result.nodes.filter((n) => !n.ok);
    if (flag(args, 'json')) {
      io.stdout(json({ via: client.via, agent: local.node, agentRttMs: Math.round(localRtt * 1000) / 1000, nodes: result.nodes }));
    } else {
      io.stdout(`via ${local.node} (${client.via ?? '?'}): ${localRtt.toFixed(2)} ms\n`);
      const rows = result.nodes.map((n) => [
        n.name,
        n.address,
        n.ok ? paint(io, 'good', `${(n.rttMs ?? 0).toFixed(2)} ms`) : paint(io, 'bad', 'no answer'),
        n.error ?? '',
      ]);
      io.stdout(table(['NODE', 'ADDRESS', 'RTT', 'ERROR'], rows));
    }
    if (failed.length > 0) io.stderr(`corral ping: ${failed.length} of ${result.nodes.length} nodes did not answer: ${failed.map((n) => n.name).join(', ')}\n`);
    return failed.length > 0 ? 4 : 0;
  } finally {
    await client.close();
  }
}

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const timeout = timeoutMs(args);
  if (flag(args, 'mesh')) return mesh(args, io, timeout);
  const { pingNodes, pingExit } = await import('../../fanout/ping.js');
  const { paint, json } = await import('../output.js');
  const { foldNodeSet } = await import('../../config/nodeset.js');
  const targets = targetSpec(args);
  const fanout = fanoutLimit(args);
  const fleet = await openFleet(args, io);
  const interrupt = interruptible();
  try {
    const result = await pingNodes(fleet, { targets, timeoutMs: timeout, ...(fanout !== undefined ? { fanout } : {}), signal: interrupt.signal });
    const code = pingExit(result);
    const offNodes = result.nodes.filter((n) => n.state === 'OFF');
    if (flag(args, 'json')) {
      io.stdout(
        json({
          via: fleet.via,
          timeoutMs: timeout,
          nodes: result.nodes,
          summary: { on: result.nodes.length - offNodes.length, off: offNodes.length },
          exitCode: code,
        }),
      );
      return code;
    }
    // Padding is computed on the plain words; colour wraps the padded state word.
    const rows = result.nodes.map((n) => [n.node, n.state, `${n.ms.toFixed(1)} ms`, n.reason ?? '']);
    const widths = [0, 1, 2].map((i) => Math.max(['NODE', 'STATE', 'LATENCY'][i]?.length ?? 0, ...rows.map((r) => (r[i] as string).length)));
    const line = (cells: string[], colour: boolean): string => {
      const [node, state, latency, reason] = cells as [string, string, string, string];
      const stateCell = state.padEnd(widths[1] as number);
      const painted = colour ? paint(io, state === 'ON' ? 'good' : 'bad', stateCell) : stateCell;
      return `${node.padEnd(widths[0] as number)}  ${painted}  ${latency.padStart(widths[2] as number)}  ${reason}`.trimEnd() + '\n';
    };
    io.stdout(line(['NODE', 'STATE', 'LATENCY', 'REASON'], false) + rows.map((r) => line(r, true)).join(''));
    for (const n of offNodes) io.stderr(`corral ping: ${n.node}: ${n.reason ?? 'OFF'}: ${n.error ?? ''}\n`);
    const on = result.nodes.filter((n) => n.state === 'ON').map((n) => n.node);
    io.stderr(`ON: ${on.length}${on.length ? ` (${foldNodeSet(on)})` : ''}${offNodes.length ? `, OFF: ${offNodes.length} (${foldNodeSet(offNodes.map((n) => n.node))})` : ''}${result.interrupted ? ', interrupted' : ''}\n`);
    return code;
  } finally {
    interrupt.dispose();
    await fleet.close();
  }
}

export const verb: Verb = { spec, run };
