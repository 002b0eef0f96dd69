import { commonOptions, str, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'token',
  summary: 'print the join token that lets a new machine join the cluster',
  usage: 'token [--config FILE]',
  options: [commonOptions.config, commonOptions.help],
  details: `Run on the coordinator (the machine holding pki/join.secret). The token carries the CA's
fingerprint and the join secret: 'corral join' uses the secret to authenticate both ends of its
TLS handshake and the fingerprint to check the CA it receives. Treat it like a password.`,
  exitCodes: [
    [0, 'printed'],
    [77, 'this machine does not hold the join secret'],
    [78, 'no or invalid configuration'],
  ],
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { readFileSync } = await import('node:fs');
  const path = await import('node:path');
  const { CorralError } = await import('../../api/errors.js');
  const { configPath, loadClusterConfig } = await import('../../config/cluster-config.js');
  const { PKI_FILES } = await import('../../config/pki-files.js');
  const { makeJoinToken } = await import('../../transport/join-token.js');
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  let secretHex: string;
  try {
    secretHex = readFileSync(path.join(config.pkiDir, PKI_FILES.joinSecret), 'utf8').trim();
  } catch {
    throw new CorralError('TLS', `${path.join(config.pkiDir, PKI_FILES.joinSecret)} is missing: run 'corral token' on the coordinator (${config.coordinator})`);
  }
  const ca = readFileSync(path.join(config.pkiDir, PKI_FILES.caCert), 'utf8');
  io.stdout(makeJoinToken(ca, Buffer.from(secretHex, 'hex')) + '\n');
  return 0;
}

export const verb: Verb = { spec, run };
