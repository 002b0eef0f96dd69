// corral tell GROUP LEVEL: Cluster::Init's `clinit GROUP LEVEL`, cluster-wide. The target level is
// recorded in the store and every node the group runs on brings it there (docs/groups.md).

import { commonOptions, flag, int, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'tell',
  summary: 'move a resource group to a runlevel on every node it runs on',
  usage: 'tell [--config FILE] [--wait [--timeout MS]] [--json] GROUP LEVEL',
  options: [
    commonOptions.config,
    { name: 'wait', short: 'w', type: 'boolean', description: 'wait until every UP node of the group reports the level DONE, PASSED or FAILED' },
    { name: 'timeout', type: 'integer', value: 'MS', description: 'with --wait: give up after MS milliseconds (default 60000)' },
    commonOptions.json,
    commonOptions.help,
  ],
  positionals: { min: 2, max: 2, names: 'GROUP LEVEL' },
  details: `Records LEVEL as GROUP's target in the cluster store and returns, printing Cluster::Init's
'level transition started' (or 'no such group: GROUP'). The agent of every node the group runs on
(all nodes, or the group's 'nodes:' set) moves its processes there with Cluster::Init's
semantics; a node that is down or restarts applies the target when it comes back.

With --wait it prints each node's state once every node that is UP has settled (DONE, PASSED or
FAILED) and exits accordingly; nodes that are DOWN are listed and do not hold the wait up.
Groups are declared in corral.yaml and published with 'corral reload'.`,
  exitCodes: [
    [0, 'the target was recorded (with --wait: every node of the group reached DONE or PASSED)'],
    [1, 'with --wait: a node reported FAILED, or a node of the group is DOWN'],
    [2, 'bad command line'],
    [65, 'no such group (or a malformed level)'],
    [69, 'no agent or no store could be reached'],
    [75, 'with --wait: not every node settled within --timeout'],
    [78, 'no or invalid configuration'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { configPath, loadClusterConfig } = await import('../../config/cluster-config.js');
  const { CorralClient } = await import('../../client/client.js');
  const { table, json, paint } = await import('../output.js');
  const [group, level] = args.positionals as [string, string];
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  const client = new CorralClient(config);
  const wait = flag(args, 'wait');
  try {
    const r = await client.tell(group, level, { wait, timeoutMs: int(args, 'timeout') ?? 60_000 });
    if (flag(args, 'json')) io.stdout(json(r));
    else io.stdout('level transition started\n');
    if (!wait) return 0;
    const results = r.results ?? [];
    if (!flag(args, 'json')) {
      const tone = (s: string): string => (s === 'DONE' || s === 'PASSED' ? paint(io, 'good', s) : s === 'FAILED' || s === 'DOWN' ? paint(io, 'bad', s) : paint(io, 'warn', s));
      io.stdout(table(['NODE', 'LEVEL', 'STATE'], results.map((x) => [x.node, x.level ?? '-', tone(x.state)])));
    }
    if (!r.settled) {
      io.stderr(`corral tell: ${group} did not settle at ${level} on every node within ${int(args, 'timeout') ?? 60_000} ms (see corral status ${group})\n`);
      return 75;
    }
    return results.every((x) => x.state === 'DONE' || x.state === 'PASSED') ? 0 : 1;
  } finally {
    await client.close();
  }
}

export const verb: Verb = { spec, run };
