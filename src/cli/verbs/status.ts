import { commonOptions, flag, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'status',
  summary: 'show the cluster: its state, every node UP or DOWN, and the master',
  usage: 'status [--config FILE] [--json] [GROUP]',
  options: [
    commonOptions.config,
    commonOptions.json,
    { name: 'node', type: 'string', value: 'NAME', description: "ask this node's agent first" },
    commonOptions.help,
  ],
  positionals: { min: 0, max: 1, names: 'GROUP' },
  details: `Prints the cluster name and state, each node with its address and uptime, and which node
is master, in the spirit of TrueCL's lha_stat. The answer comes from an agent on this machine
(its UNIX socket) or, with admin credentials, from the first configured node that answers.

When the coordination store is unavailable (on the embedded store: the coordinator is down),
the cluster cannot make decisions; status says so and shows node states probed directly.

Then, when resource groups are published (corral reload), one line per group and node: the
group's target level, and the level and state the node's supervisor reports.

  corral status GROUP      each process of GROUP on each node: tag, mode, pid, state, restarts
                           and last exit (with --json, all of it as JSON)

--json prints {"cluster", "state", "master", "term", "store", "nodes": [{"name", "state":
"up"|"down", "address", "uptimeSeconds", ...}], "note", "groups": [{"name", "target", "nodes":
[{"node", "up", "level", "state"}]}]}; with GROUP, {"group", "target", "nodes": [{"node", "up",
"level", "state", "processes": [{"tag", "mode", "pid", "state", "runs", "restarts", "lastExit",
"paused", "log"}]}]}.`,
  exitCodes: [
    [0, 'the cluster is up: store available and a master elected (with GROUP: the group is settled on every node)'],
    [1, 'the cluster answered but is degraded: store unavailable or no master yet'],
    [65, 'with GROUP: no such group'],
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
  const group = args.positionals[0];
  try {
    if (group !== undefined) return await groupStatus(client, group, args, io);
    const s = await client.status();
    // Groups come from the store: when it is unavailable, the cluster part is still shown.
    const groups = s.store.available ? await client.groups().catch(() => undefined) : undefined;
    const summary = groups?.groups.map((g) => ({
      name: g.name,
      target: g.target,
      nodes: g.perNode.map((p) => ({ node: p.node, up: p.up, level: p.report?.level ?? null, state: p.up ? (p.report?.state ?? 'UNKNOWN') : 'DOWN' })),
    }));
    if (flag(args, 'json')) io.stdout(json({ ...s, ...(summary ? { groups: summary } : {}) }));
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
      if (groups?.configError) io.stdout(`\n${paint(io, 'bad', 'group configuration invalid')}: ${groups.configError} (the nodes keep the one in force; fix it and run corral reload)\n`);
      if (summary && summary.length > 0) {
        io.stdout('\n');
        const rows = summary.flatMap((g) => g.nodes.map((n) => [g.name, n.node, g.target ?? '-', n.level ?? '-', groupStateText(io, paint, n.state)]));
        io.stdout(table(['GROUP', 'NODE', 'TARGET', 'LEVEL', 'STATE'], rows));
      }
    }
    return s.state === 'up' ? 0 : 1;
  } finally {
    await client.close();
  }
}

type Paint = (io: CliIO, tone: 'good' | 'bad' | 'warn' | 'dim', text: string) => string;

function groupStateText(io: CliIO, paint: Paint, state: string): string {
  if (state === 'DONE' || state === 'PASSED') return paint(io, 'good', state);
  if (state === 'FAILED' || state === 'DOWN') return paint(io, 'bad', state);
  if (state === 'CONFIGURED' || state === 'UNKNOWN') return paint(io, 'dim', state);
  return paint(io, 'warn', state);
}

async function groupStatus(client: import('../../client/client.js').CorralClient, name: string, args: ParsedArgs, io: CliIO): Promise<number> {
  const { CorralError } = await import('../../api/errors.js');
  const { table, paint, json } = await import('../output.js');
  const all = await client.groups();
  const g = all.groups.find((x) => x.name === name);
  if (!g) throw new CorralError('NOT_FOUND', `no such group: ${name}`);
  const detail = {
    group: g.name,
    target: g.target,
    nodes: g.perNode.map((p) => ({
      node: p.node,
      up: p.up,
      level: p.report?.level ?? null,
      state: p.up ? (p.report?.state ?? 'UNKNOWN') : 'DOWN',
      processes: p.up ? (p.report?.processes ?? []) : [],
    })),
  };
  if (flag(args, 'json')) io.stdout(json(detail));
  else {
    io.stdout(`group: ${g.name} - target ${g.target ?? 'none (never told)'} - nodes ${g.nodes.join(',')}\n\n`);
    const rows = detail.nodes.flatMap((n) => {
      if (n.processes.length === 0) return [[n.node, '-', '-', '-', groupStateText(io, paint, n.state), '-', '-']];
      return n.processes.map((p) => {
        const last = p.lastExit ? (p.lastExit.error ? 'spawn failed' : p.lastExit.signal ? p.lastExit.signal : `exit ${String(p.lastExit.code)}`) : '-';
        return [n.node, p.tag, p.mode, p.pid === null ? '-' : String(p.pid), groupStateText(io, paint, p.state) + (p.paused ? ' (throttled)' : ''), String(p.restarts), last];
      });
    });
    io.stdout(table(['NODE', 'TAG', 'MODE', 'PID', 'STATE', 'RESTARTS', 'LAST EXIT'], rows));
    const groupRows = detail.nodes.map((n) => [n.node, n.level ?? '-', groupStateText(io, paint, n.state)]);
    io.stdout('\n' + table(['NODE', 'LEVEL', 'GROUP STATE'], groupRows));
  }
  return detail.nodes.every((n) => n.state === 'DONE' || n.state === 'PASSED') ? 0 : 1;
}

export const verb: Verb = { spec, run };
