import { commonOptions, flag, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'status',
  summary: 'show the cluster: its state, every node UP or DOWN, and the master',
  usage: 'status [--config FILE] [--json]',
  options: [
    commonOptions.config,
    commonOptions.json,
    { name: 'node', type: 'string', value: 'NAME', description: "ask this node's agent first" },
    commonOptions.help,
  ],
  details: `Prints the cluster name and state, each node with its address and uptime, and which node
is master, in the spirit of TrueCL's lha_stat. The answer comes from an agent on this machine
(its UNIX socket) or, with admin credentials, from the first configured node that answers.

When the coordination store is unavailable (on the embedded store: the coordinator is down),
the cluster cannot make decisions; status says so and shows node states probed directly.

--json prints {"cluster", "state", "master", "term", "store", "nodes": [{"name", "state":
"up"|"down", "address", "uptimeSeconds", ...}], "note"}.`,
  exitCodes: [
    [0, 'the cluster is up: store available and a master elected'],
    [1, 'the cluster answered but is degraded: store unavailable or no master yet'],
    [69, 'no agent could be reached'],
    [78, 'no or invalid configuration'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { configPath, loadClusterConfig } = await import('../../config/cluster-config.js');
  const { CorralClient } = await import('../../client/client.js');
  const { table, duration, paint, json } = await import('../output.js');
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  const node = str(args, 'node');
  const client = new CorralClient(config, node ? { node } : {});
  try {
    const s = await client.status();
    if (flag(args, 'json')) io.stdout(json(s));
    else {
      const up = s.nodes.filter((n) => n.state === 'up').length;
      const stateText = s.state === 'up' ? paint(io, 'good', 'UP') : s.state === 'forming' ? paint(io, 'warn', 'FORMING') : paint(io, 'bad', 'STORE UNAVAILABLE');
      const lines = [
        `cluster: ${s.cluster} - ${stateText}`,
        `master: ${s.master ? `${s.master} (term ${s.term})` : 'none'}`,
        `store: ${s.store.backend} ${s.store.backend === 'etcd' ? `at ${(s.store.endpoints ?? []).join(',')}` : `on ${s.store.coordinator}`}${
          s.store.available ? `, revision ${s.store.revision}` : ` - ${paint(io, 'bad', 'unavailable')}`
        }`,
        `nodes: ${s.nodes.length} [${s.nodes.length - up} DOWN/${up} UP]`,
        '',
      ];
      io.stdout(lines.join('\n') + '\n');
      const rows = s.nodes.map((n) => [
        n.name,
        n.state === 'up' ? paint(io, 'good', 'UP') : paint(io, 'bad', 'DOWN'),
        n.address,
        n.uptimeSeconds === null ? '-' : duration(n.uptimeSeconds),
        [n.master ? 'master' : '', n.coordinator ? 'coordinator' : ''].filter(Boolean).join(', '),
      ]);
      io.stdout(table(['NODE', 'STATUS', 'ADDRESS', 'UPTIME', 'ROLE'], rows));
      if (s.note) io.stdout(`\nnote: ${s.note}\n`);
    }
    return s.state === 'up' ? 0 : 1;
  } finally {
    await client.close();
  }
}

export const verb: Verb = { spec, run };
