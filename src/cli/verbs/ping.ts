import { commonOptions, flag, int, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'ping',
  summary: 'measure the round trip to every node; fail if any does not answer',
  usage: 'ping [--config FILE] [--timeout MS] [--json]',
  options: [
    commonOptions.config,
    { name: 'timeout', short: 't', type: 'integer', value: 'MS', description: 'how long to wait for each node (default: timings.requestTimeoutMs)' },
    commonOptions.json,
    { name: 'node', type: 'string', value: 'NAME', description: "ask this node's agent first" },
    commonOptions.help,
  ],
  details: `The agent this command reaches pings every registered node over the cluster's mutual-TLS
transport and reports each round trip; the first line is the round trip from here to that agent.`,
  exitCodes: [
    [0, 'every node answered'],
    [1, 'at least one node did not answer'],
    [69, 'no agent could be reached'],
    [78, 'no or invalid configuration'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { configPath, loadClusterConfig } = await import('../../config/cluster-config.js');
  const { CorralClient } = await import('../../client/client.js');
  const { table, paint, json } = await import('../output.js');
  const { CorralError } = await import('../../api/errors.js');
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  const timeout = int(args, 'timeout');
  if (timeout !== undefined && (timeout < 1 || timeout > 60_000)) throw new CorralError('USAGE', '--timeout must be between 1 and 60000 ms');
  const node = str(args, 'node');
  const client = new CorralClient(config, node ? { node } : {});
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
      if (failed.length > 0) io.stderr(`corral ping: ${failed.length} of ${result.nodes.length} nodes did not answer: ${failed.map((n) => n.name).join(', ')}\n`);
    }
    return failed.length > 0 ? 1 : 0;
  } finally {
    await client.close();
  }
}

export const verb: Verb = { spec, run };
