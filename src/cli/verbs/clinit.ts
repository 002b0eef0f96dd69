import { commonOptions, flag, str, UsageError, type ParsedArgs, type VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'clinit',
  summary: "Cluster::Init's clinit: run a node's group supervisor, or move a resource group to a runlevel",
  usage: 'clinit [-d] [-k] [-v] [-c CLTAB] [-s SOCKET] [GROUP] [LEVEL]',
  options: [
    { name: 'daemon', short: 'd', type: 'boolean', description: 'run the daemon for this cltab and socket in the foreground (logs to stderr)' },
    { name: 'kill', short: 'k', type: 'boolean', description: 'halt every group (SIGINT, then SIGTERM, then SIGKILL) and stop the daemon' },
    { name: 'status', short: 'v', type: 'boolean', description: "after the command, print each group's GROUP LEVEL STATE line" },
    { name: 'cltab', short: 'c', type: 'string', value: 'CLTAB', description: 'the cltab file (default /etc/cltab)' },
    {
      name: 'socket',
      short: 's',
      type: 'string',
      value: 'SOCKET',
      description: "the daemon's socket when the cltab has no :::socket: setting (default /var/run/clinit/clinit.s)",
    },
    { name: 'log-level', type: 'string', value: 'LEVEL', description: 'with -d: debug (every transition), info (default), warn or error' },
    { name: 'pretty', type: 'boolean', description: 'with -d: readable log lines even when stderr is not a terminal' },
    commonOptions.help,
  ],
  // Cluster::Init's clinit uses the last two arguments and ignores any before them.
  positionals: { min: 0, max: 64, names: 'GROUP LEVEL' },
  details: `As Cluster::Init's clinit, with the same cltab (group:tag:levels:mode:command) and the
same answers:

  corral clinit -d              run the daemon (foreground; a "respawn" line in inittab, a
                                systemd unit, or 'corral clinit -d &' from a shell)
  corral clinit GROUP LEVEL     move GROUP to LEVEL; prints 'level transition started' or
                                'no such group: GROUP'
  corral clinit LEVEL           the same for the group named like this host (short name)
  corral clinit                 re-read the cltab and apply what changed
  corral clinit -k              halt every group and stop the daemon; it exits once the last
                                process has stopped
  -v                            then print the status file: 'GROUP LEVEL STATE' per group

The daemon takes the socket, status file (clstat) and log directory from the cltab's :::socket:,
:::clstat: and :::log: settings, else -s, /var/run/clinit/clstat and /var/run/clinit/log. Each
process's stdout and stderr go to LOGDIR/GROUP/TAG.log, rotated at :::logrotate:SIZE,KEEP
(default 10M,5). Stops send SIGINT to the process group, SIGTERM 5 s later and SIGKILL 15 s after
the SIGINT; :::stop:[GROUP:]TERM,KILL changes the delays (seconds). A respawn entry that restarts
more than 5 times, each within 1 s of the last, pauses 60 s; :::throttle:[GROUP:]COUNT,WINDOW,PAUSE
changes that. An invalid cltab is refused with FILE:LINE and the configuration in force stays.
SIGTERM or SIGINT to the daemon is 'clinit -k'; a second one kills every process group at once;
SIGHUP re-reads the cltab. If the daemon dies anyway, a guard process stops its processes.`,
  exitCodes: [
    [0, 'done: the tell was accepted, the cltab re-read, or the daemon stopped cleanly'],
    [1, "no such group (the reply is printed as clinit's), or another daemon already answers on the socket"],
    [2, 'bad command line'],
    [65, 'the daemon refused the request as malformed'],
    [69, 'no daemon answers on the socket, or it is shutting down'],
    [75, 'the daemon did not answer within 15 s'],
    [78, 'the cltab is invalid (FILE:LINE: what is wrong), or a path cannot be used'],
    [130, 'with -d: a second SIGTERM or SIGINT killed every process group at once'],
  ],
};

async function runDaemon(args: ParsedArgs, cltab: string): Promise<number> {
  const { createAgentLogger } = await import('../../agent/logger.js');
  const { ClinitDaemon } = await import('../../supervisor/clinit-daemon.js');
  const level = str(args, 'log-level');
  const logger = createAgentLogger({ ...(level ? { level } : {}), ...(flag(args, 'pretty') ? { pretty: true } : {}) });
  const socket = str(args, 'socket');
  let daemon: Awaited<ReturnType<typeof ClinitDaemon.start>> | undefined;
  let signals = 0;
  let early: string | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1 && daemon) {
      logger.warn({ signal: sig }, 'second signal: killing every process group and exiting');
      daemon.killNow();
      logger.flush();
      process.exit(130);
    }
    if (daemon) void daemon.shutdown(`received ${sig}`);
    else early = `received ${sig} while starting`;
  };
  const onHangup = (): void => {
    try {
      daemon?.reread();
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'cltab not re-read');
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onHangup);
  try {
    daemon = await ClinitDaemon.start({ cltab, ...(socket ? { socket } : {}), logger });
    if (early) void daemon.shutdown(early);
    await daemon.stopped();
    return 0;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    process.off('SIGHUP', onHangup);
    logger.flush();
  }
}

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { CLTAB_DEFAULTS, readCltab } = await import('../../config/cltab.js');
  const cltab = str(args, 'cltab') ?? CLTAB_DEFAULTS.cltab;
  if (flag(args, 'daemon')) {
    if (args.positionals.length > 0 || flag(args, 'kill')) throw new UsageError('-d runs the daemon and takes no GROUP, LEVEL or -k');
    return runDaemon(args, cltab);
  }
  const { isCorralError } = await import('../../api/errors.js');
  const { ClinitClient } = await import('../../supervisor/clinit-client.js');
  const { readClstat, statusText } = await import('../../supervisor/clstat.js');
  // As the original's client: only the cltab's settings matter here (a bad entry must not stop -k).
  const settings = readCltab(cltab, { settingsOnly: true });
  const socket = settings?.socket ?? str(args, 'socket') ?? CLTAB_DEFAULTS.socket;
  const clstat = settings?.clstat ?? CLTAB_DEFAULTS.clstat;
  const client = new ClinitClient(socket);
  let code = 0;
  if (flag(args, 'kill')) await client.shutdown();
  else if (args.positionals.length === 0) await client.reread();
  else {
    const n = args.positionals.length;
    const level = args.positionals[n - 1] as string;
    const group = n >= 2 ? (args.positionals[n - 2] as string) : await shortHostname();
    try {
      io.stdout(`${(await client.tell(group, level)).msg}\n`);
    } catch (err) {
      if (!isCorralError(err, 'NOT_FOUND')) throw err;
      io.stdout(`${err.message}\n`);
      code = 1;
    }
  }
  if (flag(args, 'status')) io.stdout(statusText(readClstat(clstat)));
  return code;
}

async function shortHostname(): Promise<string> {
  const { hostname } = await import('node:os');
  return hostname().split('.')[0] ?? hostname();
}

export const verb: Verb = { spec, run };
