import { commonOptions, flag, int, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'local',
  summary: 'start or stop a local cluster of N agents on this machine (loopback)',
  usage: 'local up [-n N] --dir DIR [--store embedded|etcd://HOST:PORT,...] [--timeout MS] [--json] | local down --dir DIR',
  positionals: { min: 1, max: 1, names: 'up or down' },
  options: [
    { name: 'nodes', short: 'n', type: 'integer', value: 'N', description: 'number of agents, named n1..nN (default 3; up only)' },
    { name: 'dir', short: 'd', type: 'string', value: 'DIR', description: 'the cluster directory: corral.yaml, pki/, and one directory per node' },
    { name: 'timeout', type: 'integer', value: 'MS', description: 'how long up waits for the cluster to form (default 30000 + 500 per node)' },
    { name: 'store', type: 'string', value: 'URL', description: 'embedded (default), or etcd://HOST:PORT[,HOST:PORT...] to use an etcd cluster (up only)' },
    commonOptions.json,
    commonOptions.help,
  ],
  details: `'local up' creates DIR/corral.yaml (cluster "local", coordinator n1, the embedded store unless
--store names an etcd cluster) and the
credentials on first use, starts each agent in the background (logs in DIR/nK/agent.log, pid in
DIR/nK/agent.pid), and returns once every node is up and a master is elected, printing how long
formation took. Clients use the cluster with --config DIR/corral.yaml. Running 'up' on a DIR
that is already up says so and changes nothing; on a stopped DIR it starts the same cluster again
with its data.

'local down' stops every agent of DIR by pid (SIGTERM, then SIGKILL after the grace period) and
leaves no process behind; the data stays in DIR for the next 'up'.`,
  exitCodes: [
    [0, 'done (including: already up, or nothing to stop)'],
    [2, 'bad command line'],
    [69, 'an agent exited during start-up (its log tail is printed)'],
    [75, 'the cluster did not form in time (the agents are stopped again)'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const path = await import('node:path');
  const { existsSync } = await import('node:fs');
  const { CorralError } = await import('../../api/errors.js');
  const { loadClusterConfig } = await import('../../config/cluster-config.js');
  const local = await import('../local-cluster.js');
  const action = args.positionals[0];
  const dirArg = str(args, 'dir');
  if (!dirArg) throw new CorralError('USAGE', `local ${action ?? ''} needs --dir DIR`);
  const dir = path.resolve(dirArg);
  const configFile = path.join(dir, 'corral.yaml');
  const json = flag(args, 'json');

  if (action === 'down') {
    if (!existsSync(configFile)) {
      io.stdout(`no local cluster in ${dir}; nothing to stop\n`);
      return 0;
    }
    const config = loadClusterConfig(configFile);
    const stopped = await local.stopLocalCluster(config, dir, config.timings.shutdownGraceMs + 2000);
    if (json) io.stdout(JSON.stringify({ dir, stopped }, null, 2) + '\n');
    else if (stopped.length === 0) io.stdout(`no agents running in ${dir}; nothing to stop\n`);
    else io.stdout(`stopped ${stopped.map((s) => `${s.node} (pid ${s.pid}${s.forced ? ', killed' : ''})`).join(', ')}\n`);
    return 0;
  }
  if (action !== 'up') throw new CorralError('USAGE', `local takes 'up' or 'down', not ${JSON.stringify(action)}`);

  const requested = int(args, 'nodes');
  const storeArg = str(args, 'store');
  const describeStore = (s: import('../../config/cluster-config.js').StoreConfig | undefined): string =>
    s === undefined || s.backend === 'embedded' ? 'embedded' : `etcd://${s.endpoints.join(',')}`;
  if (requested !== undefined && (requested < 1 || requested > 256)) throw new CorralError('USAGE', '-n must be between 1 and 256');
  let config;
  if (existsSync(configFile)) {
    config = loadClusterConfig(configFile);
    if (requested !== undefined && requested !== config.nodes.length) {
      throw new CorralError('USAGE', `${dir} already holds a ${config.nodes.length}-node cluster; use -n ${config.nodes.length}, or another --dir for ${requested} nodes`);
    }
    if (storeArg !== undefined && describeStore(config.store) !== describeStore(storeArg === 'embedded' ? undefined : local.parseStoreUrl(storeArg))) {
      throw new CorralError('USAGE', `${dir} already holds a cluster on the ${describeStore(config.store)} store; drop --store, or use another --dir`);
    }
    const running = local.runningAgents(config, dir);
    if (running.length === config.nodes.length) {
      const msg = `local cluster in ${dir} is already up (${running.map((r) => `${r.node} pid ${r.pid}`).join(', ')}); nothing changed`;
      io.stdout(json ? JSON.stringify({ dir, config: configFile, alreadyUp: true, agents: running }, null, 2) + '\n' : `${msg}\n`);
      return 0;
    }
  } else {
    const count = requested ?? 3;
    const ports = await local.freePorts(count + 1);
    config = local.createLocalCluster(dir, count, ports, storeArg === undefined || storeArg === 'embedded' ? undefined : local.parseStoreUrl(storeArg));
  }
  const timeout = int(args, 'timeout') ?? 30_000 + 500 * config.nodes.length;
  let formation;
  try {
    formation = await local.startLocalCluster(config, dir, { timeoutMs: timeout });
  } catch (err) {
    await local.stopLocalCluster(config, dir, config.timings.shutdownGraceMs + 2000);
    throw err;
  }
  const seconds = (formation.formationMs / 1000).toFixed(2);
  if (json) {
    io.stdout(JSON.stringify({ dir, config: configFile, formationMs: Math.round(formation.formationMs), started: formation.started, status: formation.status }, null, 2) + '\n');
  } else {
    io.stdout(
      [
        `cluster ${config.cluster} formed in ${seconds} s: ${config.nodes.length} nodes up, master ${formation.status.master ?? '?'}`,
        `  config: ${configFile}   (export CORRAL_CONFIG=${configFile})`,
        `  logs:   ${path.join(dir, 'n*/agent.log')}`,
        `  stop:   corral local down --dir ${dir}`,
        '',
      ].join('\n'),
    );
  }
  return 0;
}

export const verb: Verb = { spec, run };
