import { commonOptions, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'join',
  summary: 'join this machine to a cluster with one token: get its certificate and write corral.yaml',
  usage: 'join SERVER --token TOKEN --node NAME --address HOST:PORT [--dir DIR] [--data-dir DIR]',
  positionals: { min: 1, max: 1, names: 'SERVER (the join address printed by corral init, HOST:PORT)' },
  options: [
    { name: 'token', type: 'string', value: 'TOKEN', description: "the cluster's join token ('corral token' on the coordinator); also $CORRAL_JOIN_TOKEN" },
    { name: 'node', type: 'string', value: 'NAME', description: "this node's name in the cluster" },
    { name: 'address', type: 'string', value: 'HOST:PORT', description: 'the address where peers reach this node' },
    { name: 'dir', short: 'd', type: 'string', value: 'DIR', description: 'where to write corral.yaml and pki/ (default /etc/corral)' },
    { name: 'data-dir', type: 'string', value: 'DIR', description: "this node's data directory (default /var/lib/corral/NAME)" },
    commonOptions.help,
  ],
  details: `The token's secret keys a TLS 1.3 handshake with the coordinator (a pre-shared key: both
ends prove they hold it, and it never crosses the wire). This node generates its key pair, sends
the public key, and receives its certificate and the CA, whose fingerprint must match the token.
Then start the agent with the command printed at the end.`,
  exitCodes: [
    [0, 'joined: corral.yaml and credentials written'],
    [1, 'DIR already holds a cluster (nothing was changed)'],
    [2, 'bad command line or malformed token'],
    [69, 'the coordinator could not be reached'],
    [77, 'the token was refused, or the CA did not match the token'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { X509Certificate, createPublicKey } = await import('node:crypto');
  const { existsSync, mkdirSync, writeFileSync } = await import('node:fs');
  const path = await import('node:path');
  const { CorralError, isCorralError } = await import('../../api/errors.js');
  const { PATHS } = await import('../../api/types.js');
  const { NODE_NAME, parseHostPort, renderClusterConfig } = await import('../../config/cluster-config.js');
  const { PKI_FILES } = await import('../../config/pki-files.js');
  const { joinPsk, parseJoinToken } = await import('../../transport/join-token.js');
  const { caFingerprint, generateKeyPair } = await import('../../transport/pki.js');
  const { RpcClient } = await import('../../transport/client.js');
  type JoinResponse = import('../../api/types.js').JoinResponse;

  const server = parseHostPort(args.positionals[0] as string);
  if (!server) throw new CorralError('USAGE', `SERVER ${JSON.stringify(args.positionals[0])} is not HOST:PORT`);
  const tokenText = str(args, 'token') ?? io.env.CORRAL_JOIN_TOKEN;
  if (!tokenText) throw new CorralError('USAGE', 'join needs --token TOKEN (or $CORRAL_JOIN_TOKEN)');
  const node = str(args, 'node');
  if (!node || !NODE_NAME.test(node)) throw new CorralError('USAGE', 'join needs --node NAME (letters, digits, ".", "_", "-")');
  const address = str(args, 'address');
  if (!address || !parseHostPort(address)) throw new CorralError('USAGE', 'join needs --address HOST:PORT (where peers reach this node)');
  const dir = path.resolve(str(args, 'dir') ?? '/etc/corral');
  const configFile = path.join(dir, 'corral.yaml');
  if (existsSync(configFile)) throw new CorralError('ALREADY_RUNNING', `${configFile} already exists; nothing changed`);
  const token = parseJoinToken(tokenText);
  const pkiDir = path.join(dir, 'pki');
  for (const file of [PKI_FILES.nodeKey(node), PKI_FILES.nodeCert(node), PKI_FILES.caCert]) {
    if (existsSync(path.join(pkiDir, file))) throw new CorralError('ALREADY_RUNNING', `${path.join(pkiDir, file)} already exists; remove ${pkiDir} or join into another --dir`);
  }

  const keys = generateKeyPair();
  const rpc = new RpcClient({ kind: 'psk', host: server.host, port: server.port, ...joinPsk(token.secret) }, { requestTimeoutMs: 10_000, connectTimeoutMs: 5000 });
  let answer: JoinResponse;
  try {
    answer = await rpc.call<JoinResponse>('POST', PATHS.join, { node, address, publicKeyPem: keys.publicKeyPem });
  } catch (err) {
    if (isCorralError(err, 'UNAVAILABLE') || isCorralError(err, 'TLS')) {
      throw new CorralError('JOIN_REFUSED', `cannot join through ${args.positionals[0]}: ${err.message} (a wrong or rotated token fails the handshake)`);
    }
    throw err;
  } finally {
    await rpc.close();
  }
  if (caFingerprint(answer.caPem) !== token.caFingerprint) {
    throw new CorralError('JOIN_REFUSED', "the CA the server sent does not match the token's fingerprint; nothing was written");
  }
  const cert = new X509Certificate(answer.certPem);
  const ca = new X509Certificate(answer.caPem);
  if (!cert.verify(ca.publicKey) || !cert.publicKey.equals(createPublicKey(keys.publicKeyPem))) {
    throw new CorralError('JOIN_REFUSED', 'the certificate the server sent is not signed by its CA or not for our key; nothing was written');
  }
  mkdirSync(path.join(pkiDir, 'nodes'), { recursive: true, mode: 0o700 });
  // Never overwrite credentials that are there already (flag wx), and the key is private from birth.
  const writeNew = (file: string, text: string, mode: number): void => {
    try {
      writeFileSync(file, text, { flag: 'wx', mode });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new CorralError('ALREADY_RUNNING', `${file} already exists; remove ${pkiDir} or join into another --dir`);
      throw err;
    }
  };
  writeNew(path.join(pkiDir, PKI_FILES.nodeKey(node)), keys.keyPem, 0o600);
  writeNew(path.join(pkiDir, PKI_FILES.nodeCert(node)), answer.certPem, 0o644);
  writeNew(path.join(pkiDir, PKI_FILES.caCert), answer.caPem, 0o644);
  const dataDir = str(args, 'data-dir');
  writeFileSync(
    configFile,
    renderClusterConfig({
      cluster: answer.cluster,
      coordinator: answer.coordinator.name,
      pki: 'pki',
      nodes: [
        { name: answer.coordinator.name, address: answer.coordinator.address },
        { name: node, address, ...(dataDir ? { dataDir: path.resolve(dataDir) } : {}) },
      ],
      join: answer.join,
      timings: answer.timings,
    }),
    { flag: 'wx', mode: 0o644 },
  );
  io.stdout(
    [
      `joined cluster ${answer.cluster} as node ${node}; wrote ${configFile} and ${pkiDir}/`,
      'start the agent:',
      `  corral agent --config ${configFile} --node ${node}`,
      '',
    ].join('\n'),
  );
  return 0;
}

export const verb: Verb = { spec, run };
