import { commonOptions, flag, int, str, type VerbSpec } from '../args.js';
import type { Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'agent',
  summary: 'run the corral agent (the daemon) for one node, in the foreground',
  usage: 'agent --config FILE --node NAME [--log-level LEVEL] | agent --private --socket PATH [--lifespan MS] [--data-dir DIR]',
  options: [
    commonOptions.config,
    { name: 'node', short: 'n', type: 'string', value: 'NAME', description: "this node's name in the configuration" },
    { name: 'private', type: 'boolean', description: 'run as a private lock daemon (what corral lock starts): no cluster, no TCP' },
    { name: 'socket', type: 'string', value: 'PATH', description: 'private: the UNIX socket to serve' },
    { name: 'lifespan', type: 'integer', value: 'MS', description: 'private: exit after this long idle (default 5000; negative: never)' },
    { name: 'data-dir', type: 'string', value: 'DIR', description: 'private: where the store lives (default: beside the socket, per user)' },
    { name: 'socket-mode', type: 'string', value: 'OCTAL', description: 'private: the socket file mode (default 600)' },
    { name: 'log-level', type: 'string', value: 'LEVEL', description: 'debug, info (default), warn or error; also $CORRAL_LOG_LEVEL' },
    { name: 'pretty', type: 'boolean', description: 'readable log lines even when stderr is not a terminal' },
    commonOptions.help,
  ],
  details: `The agent serves local clients on its UNIX socket (mode 0600) and peers on its TCP address
(HTTP/2 over TLS 1.3, both sides authenticated under the cluster's CA). On the coordinator it also
hosts the embedded store. It logs JSON lines to stderr, or readable lines on a terminal.

SIGTERM or SIGINT stops it cleanly: it leaves the cluster (its session is revoked, so peers see it
DOWN at once), stops its children, closes its sockets and flushes the store, then exits 0.
Under systemd, use packaging/corral-agent.service.

--private runs the private lock daemon that corral lock starts by itself when no daemon answers
on its socket (as flom starts its daemon): the embedded store in a per-user data directory, a
UNIX socket and no TCP listener, no cluster. It exits after --lifespan milliseconds without a
lock held or waited for and without a client (corral lock -d), and on corral lock -x (once idle)
or -X (at once). If another private daemon already serves the socket or owns the data directory,
it exits 0 at once: two callers racing to start one get one.`,
  exitCodes: [
    [0, 'stopped cleanly by SIGTERM or SIGINT'],
    [2, 'bad command line'],
    [69, 'a port or socket is in use, or the store could not be opened'],
    [74, 'the store journal is corrupt before its end (see the message)'],
    [75, 'another agent already owns the data directory'],
    [77, 'credentials are missing or invalid'],
    [78, 'the configuration is invalid or names an unknown node'],
  ],
};

async function run(args: Parameters<Verb['run']>[0], io: Parameters<Verb['run']>[1]): Promise<number> {
  if (flag(args, 'private')) return runPrivate(args, io);
  const { CorralError } = await import('../../api/errors.js');
  const { configPath, loadClusterConfig, findNode } = await import('../../config/cluster-config.js');
  const node = str(args, 'node') ?? io.env.CORRAL_NODE;
  if (!node) throw new CorralError('USAGE', 'agent needs --node NAME (or $CORRAL_NODE): which node of the configuration this is');
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  findNode(config, node);
  const { createAgentLogger } = await import('../../agent/logger.js');
  const { Agent } = await import('../../agent/agent.js');
  const { packageVersion } = await import('../version.js');
  const level = str(args, 'log-level');
  const logger = createAgentLogger({ node, ...(level ? { level } : {}), ...(flag(args, 'pretty') ? { pretty: true } : {}) });
  let agent: Awaited<ReturnType<typeof Agent.start>> | undefined;
  let stopRequested: string | undefined;
  let signals = 0;
  const stop = (reason: string): void => {
    if (!agent) return;
    // A stop that takes longer than the grace period (plus the store's request deadline) is stuck.
    setTimeout(() => {
      logger.error({ reason }, 'the agent did not stop in time; exiting');
      logger.flush();
      process.exit(1);
    }, config.timings.shutdownGraceMs + config.timings.requestTimeoutMs + 1000).unref();
    void agent.stop(reason);
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal: sig }, 'second signal: exiting immediately');
      logger.flush();
      process.exit(130);
    }
    if (agent) stop(`received ${sig}`);
    else stopRequested = `received ${sig} while starting`;
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => logger.info('SIGHUP ignored (configuration reload is not supported yet)'));
  try {
    agent = await Agent.start({ config, node, logger, version: packageVersion() });
  } catch (err) {
    logger.error({ err: (err as Error).message, code: (err as { code?: string }).code }, 'agent failed to start');
    logger.flush();
    throw err;
  }
  if (stopRequested) stop(stopRequested);
  await agent.stopped();
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  logger.flush();
  return 0;
}

export const verb: Verb = { spec, run };

/** `corral agent --private`: the lock daemon corral lock starts (src/agent/private-agent.ts). */
async function runPrivate(args: Parameters<Verb['run']>[0], io: Parameters<Verb['run']>[1]): Promise<number> {
  const { CorralError, isCorralError } = await import('../../api/errors.js');
  const { privateDataDir } = await import('../../client/private-daemon.js');
  const socket = str(args, 'socket');
  if (!socket) throw new CorralError('USAGE', 'agent --private needs --socket PATH');
  const modeText = str(args, 'socket-mode') ?? '600';
  if (!/^[0-7]{3,4}$/.test(modeText)) throw new CorralError('USAGE', `--socket-mode takes an octal file mode such as 600, not '${modeText}'`);
  const lifespanMs = int(args, 'lifespan') ?? 5000;
  const path = await import('node:path');
  const socketPath = path.resolve(socket);
  const dataDir = path.resolve(str(args, 'data-dir') ?? privateDataDir(socketPath));
  const { createAgentLogger } = await import('../../agent/logger.js');
  const { Agent } = await import('../../agent/agent.js');
  const { privateAgentConfig, privateNodeName } = await import('../../agent/private-agent.js');
  const { packageVersion } = await import('../version.js');
  const node = privateNodeName();
  const level = str(args, 'log-level') ?? io.env.CORRAL_LOG_LEVEL ?? 'warn';
  const logger = createAgentLogger({ node, level, ...(flag(args, 'pretty') ? { pretty: true } : {}) });
  const config = privateAgentConfig({ socket: socketPath, dataDir, node });
  let agent: Awaited<ReturnType<typeof Agent.start>>;
  try {
    agent = await Agent.start({ config, node, logger, version: packageVersion(), private: { socket: socketPath, socketMode: parseInt(modeText, 8), lifespanMs } });
  } catch (err) {
    // Lost the race to another daemon starting on this socket: it serves; exit quietly.
    if (isCorralError(err, 'DATA_DIR_LOCKED') || isCorralError(err, 'ALREADY_RUNNING')) {
      logger.info({ socket: socketPath, err: err.message }, 'another private daemon serves this socket; exiting');
      logger.flush();
      return 0;
    }
    logger.error({ err: (err as Error).message, code: (err as { code?: string }).code }, 'private daemon failed to start');
    logger.flush();
    throw err;
  }
  const started = agent;
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (++signals > 1) process.exit(130);
    setTimeout(() => process.exit(1), config.timings.shutdownGraceMs + config.timings.requestTimeoutMs + 1000).unref();
    void started.stop(`received ${sig}`);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // A daemon outlives the terminal it was started from.
  process.on('SIGHUP', () => undefined);
  await started.stopped();
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  logger.flush();
  return 0;
}
