// corral logs GROUP[/TAG]: the stdout and stderr of a group's processes, from every node the group
// runs on (or one), read from each agent's per-process log files (docs/groups.md).

import { commonOptions, flag, int, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'logs',
  summary: "show (or follow) the output of a resource group's processes across nodes",
  usage: 'logs [--config FILE] [--node NAME] [-n LINES] [-f] GROUP[/TAG]',
  options: [
    commonOptions.config,
    { name: 'node', type: 'string', value: 'NAME', description: 'only this node (default: every node the group runs on)' },
    { name: 'lines', short: 'n', type: 'integer', value: 'LINES', description: 'the last LINES lines of each process (default 50)' },
    { name: 'follow', short: 'f', type: 'boolean', description: 'keep printing new lines as they are written (Ctrl-C to stop)' },
    commonOptions.help,
  ],
  positionals: { min: 1, max: 1, names: 'GROUP[/TAG]' },
  details: `Each supervised process writes its stdout and stderr to a log file of its own on its node
(DATADIR/groups/log/GROUP/TAG.log, rotated by size as TAG.log.1, TAG.log.2, ...). This prints the
last lines of each, prefixed with NODE/TAG, asking every node's agent: through its socket on this
machine, otherwise over mutual TLS with the admin credentials. With -f it keeps following them,
across rotations, until interrupted. A node that cannot be reached is named on stderr.`,
  exitCodes: [
    [0, 'printed (with -f: until interrupted)'],
    [1, 'some node could not be read (the others were printed)'],
    [2, 'bad command line'],
    [65, 'no such group or tag'],
    [69, 'no agent could be reached'],
    [78, 'no or invalid configuration'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { configPath, loadClusterConfig, findNode } = await import('../../config/cluster-config.js');
  const { CorralClient } = await import('../../client/client.js');
  const { CorralError } = await import('../../api/errors.js');
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  const [group, tag] = (args.positionals[0] as string).split('/', 2) as [string, string | undefined];
  const only = str(args, 'node');
  if (only) findNode(config, only);
  const lines = int(args, 'lines') ?? 50;
  const follow = flag(args, 'follow');
  // Which nodes the group runs on: the published configuration, as the agents see it.
  const client = new CorralClient(config);
  let nodes: string[];
  try {
    const status = await client.groups();
    const g = status.groups.find((x) => x.name === group);
    if (!g) throw new CorralError('NOT_FOUND', `no such group: ${group}`);
    nodes = only ? g.nodes.filter((n) => n === only) : g.nodes;
    if (only && nodes.length === 0) throw new CorralError('NOT_FOUND', `group ${group} does not run on node ${only} (it runs on ${g.nodes.join(',')})`);
  } finally {
    await client.close();
  }
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let failed = 0;
  let notFound: InstanceType<typeof CorralError> | undefined;
  try {
    await Promise.all(
      nodes.map(async (node) => {
        const c = new CorralClient(config, { node, only: true });
        try {
          const stream = await c.logs(group, { ...(tag ? { tag } : {}), lines, follow, signal: stop.signal });
          for await (const l of stream) io.stdout(`${l.node}/${l.tag}: ${l.line}\n`);
        } catch (err) {
          if (stop.signal.aborted) return;
          if (err instanceof CorralError && err.code === 'NOT_FOUND') notFound = err;
          failed++;
          io.stderr(`corral logs: ${node}: ${(err as Error).message}\n`);
        } finally {
          await c.close();
        }
      }),
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (notFound && failed === nodes.length) return notFound.exitCode;
  return failed > 0 ? 1 : 0;
}

export const verb: Verb = { spec, run };
