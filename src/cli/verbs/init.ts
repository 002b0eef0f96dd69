import { commonOptions, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'init',
  summary: "create a cluster: its corral.yaml, its CA and credentials, and a join token",
  usage: 'init --dir DIR --name CLUSTER [--node NAME] [--address HOST:PORT] [--join-address HOST:PORT] [--data-dir DIR]',
  options: [
    { name: 'dir', short: 'd', type: 'string', value: 'DIR', description: 'where to write corral.yaml and pki/ (e.g. /etc/corral)' },
    { name: 'name', type: 'string', value: 'CLUSTER', description: 'the cluster name' },
    { name: 'node', type: 'string', value: 'NAME', description: "this first node's name (default: the host name)" },
    { name: 'address', type: 'string', value: 'HOST:PORT', description: "this node's address for peers (default: its first non-loopback IPv4, port 7400)" },
    { name: 'join-address', type: 'string', value: 'HOST:PORT', description: 'where this node accepts joins (default: same host, port 7401)' },
    { name: 'data-dir', type: 'string', value: 'DIR', description: "this node's data directory (default /var/lib/corral/NAME)" },
    commonOptions.json,
    commonOptions.help,
  ],
  details: `The first node becomes the coordinator: its agent hosts the embedded store and signs the
certificates of nodes that join. The CA key (pki/ca.key) and the join secret (pki/join.secret) stay
on this machine; pki/admin.crt and admin.key let an administrator's machine use the cluster.

Next steps are printed: start the agent, then on each new machine run the printed 'corral join'.`,
  exitCodes: [
    [0, 'created'],
    [1, 'DIR already holds a cluster (nothing was changed)'],
    [2, 'bad command line'],
  ],
};

function defaultHost(os: typeof import('node:os')): string {
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { CorralError } = await import('../../api/errors.js');
  const { CLUSTER_NAME, NODE_NAME, parseHostPort, formatHostPort } = await import('../../config/cluster-config.js');
  const os = await import('node:os');
  const path = await import('node:path');
  const { bootstrapCluster } = await import('../bootstrap.js');
  const dir = str(args, 'dir');
  const cluster = str(args, 'name');
  if (!dir) throw new CorralError('USAGE', 'init needs --dir DIR (where corral.yaml and pki/ go)');
  if (!cluster) throw new CorralError('USAGE', 'init needs --name CLUSTER');
  if (!CLUSTER_NAME.test(cluster)) throw new CorralError('USAGE', `--name ${JSON.stringify(cluster)}: use letters, digits, ".", "_" and "-"`);
  const node = str(args, 'node') ?? os.hostname().split('.')[0] ?? 'node1';
  if (!NODE_NAME.test(node)) throw new CorralError('USAGE', `--node ${JSON.stringify(node)}: use letters, digits, ".", "_" and "-"`);
  const address = str(args, 'address') ?? `${defaultHost(os)}:7400`;
  const hp = parseHostPort(address);
  if (!hp) throw new CorralError('USAGE', `--address ${JSON.stringify(address)} is not HOST:PORT`);
  const join = str(args, 'join-address') ?? formatHostPort({ host: hp.host, port: hp.port + 1 });
  if (!parseHostPort(join)) throw new CorralError('USAGE', `--join-address ${JSON.stringify(join)} is not HOST:PORT`);
  const dataDir = str(args, 'data-dir');
  const absDir = path.resolve(dir);
  const result = bootstrapCluster({
    dir: absDir,
    cluster,
    coordinator: node,
    nodes: [{ name: node, address, ...(dataDir ? { dataDir: path.resolve(dataDir) } : {}) }],
    join,
  });
  if (args.options.json === true) {
    io.stdout(JSON.stringify({ config: result.configFile, pki: result.pkiDir, node, address, join, token: result.joinToken }, null, 2) + '\n');
    return 0;
  }
  io.stdout(
    [
      `created cluster ${cluster} in ${absDir}`,
      `  ${result.configFile}`,
      `  ${result.pkiDir}/ (CA, node ${node}, admin credentials, join secret)`,
      '',
      `start the agent on this machine (node ${node}, coordinator):`,
      `  corral agent --config ${result.configFile} --node ${node}`,
      '',
      'join another machine (one secret, one command; keep the token private):',
      `  corral join ${join} --token ${result.joinToken} --node NAME --address HOST:7400 --dir /etc/corral`,
      '',
    ].join('\n'),
  );
  return 0;
}

export const verb: Verb = { spec, run };
