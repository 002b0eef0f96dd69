// corral reload: re-reads corral.yaml, validates its groups, and publishes them through the store
// to every agent, which applies what changed (docs/groups.md). A file that does not validate is
// refused here with FILE:LINE and never reaches any node.

import { commonOptions, flag, int, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'reload',
  summary: "re-read and validate corral.yaml's resource groups and apply them cluster-wide",
  usage: 'reload [--config FILE] [--timeout MS] [--json]',
  options: [
    commonOptions.config,
    { name: 'timeout', type: 'integer', value: 'MS', description: 'how long to wait for every UP node to apply it (default 10000)' },
    commonOptions.json,
    commonOptions.help,
  ],
  details: `Reads the configuration file, validates it as the agent does at start (an error names the
file, line and field, and nothing is published), then publishes its 'groups:' section through
the cluster store. Every agent validates it again and applies the difference, as Cluster::Init
does on a re-read: new groups appear CONFIGURED, removed groups are halted with their stop
ladder, and a changed group that was told a level is told it again, so edited and deleted
entries stop gracefully, new ones start and unchanged ones keep running.

It prints what was added, removed, changed and left unchanged, then waits for every node that
is UP to report the new configuration.`,
  exitCodes: [
    [0, 'published, and every UP node applied it'],
    [1, 'published, but a node reported an error or did not apply it within --timeout'],
    [69, 'no agent or no store could be reached'],
    [75, 'another reload ran at the same time (run it again)'],
    [78, 'the configuration file is invalid (nothing was published)'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { configPath, loadClusterConfig } = await import('../../config/cluster-config.js');
  const { CorralClient } = await import('../../client/client.js');
  const { json } = await import('../output.js');
  const file = configPath(str(args, 'config'), io.env);
  const config = loadClusterConfig(file);
  const client = new CorralClient(config);
  const timeoutMs = int(args, 'timeout') ?? 10_000;
  try {
    const r = await client.reload(config.groups, config.file);
    const list = (names: string[]): string => (names.length ? names.join(', ') : '-');
    if (!flag(args, 'json')) {
      io.stdout(`published ${config.file} (revision ${r.revision}): added ${list(r.added)}; removed ${list(r.removed)}; changed ${list(r.changed)}; unchanged ${list(r.unchanged)}\n`);
    }
    // Every UP node reports the revision it runs, or why it could not apply it.
    const deadline = performance.now() + timeoutMs;
    const target = BigInt(r.revision);
    let lagging: string[] = [];
    let errors: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      const up = (await client.groups()).nodes.filter((n) => n.up);
      lagging = up.filter((n) => BigInt(n.configRevision ?? '0') < target).map((n) => n.node);
      errors = up.flatMap((n) => (n.configError ? [`${n.node}: ${n.configError}`] : []));
      if (lagging.length === 0 || performance.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (flag(args, 'json')) io.stdout(json({ ...r, lagging, errors }));
    for (const e of errors) io.stderr(`corral reload: ${e}\n`);
    if (lagging.length > 0) io.stderr(`corral reload: not applied within ${timeoutMs} ms on ${lagging.join(', ')}\n`);
    return lagging.length === 0 && errors.length === 0 ? 0 : 1;
  } finally {
    await client.close();
  }
}

export const verb: Verb = { spec, run };
