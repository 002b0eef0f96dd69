// corral lock: FLoM's `flom -- CMD`, with FLoM's options, letters and exit codes: the full path.
// The common request never gets here: bin/corral gives it to the fast path (cli/lock-fast.cts),
// which hands over to this one whatever it does not do. Everything heavy is imported inside run();
// the private path (the default) loads the transport client, the lock client and child_process,
// and nothing else (no yaml, no logger, no store).

import { CorralError, isCorralError } from '../../api/errors.js';
import { systemClock } from '../../util/clock.js';
import type { OptionSpec, ParsedArgs, VerbSpec } from '../args.js';
import type { CliIO, Verb } from '../verb.js';
import { exitCodeOf, FORWARDED, KILL_MARGIN_MS, timedOutMessage } from '../lock-common.cjs';

// Decides the request's one deadline and the kill time after a loss.
const clock = systemClock;

const unsupported = (name: string, what: string, short?: string, type: OptionSpec['type'] = 'string'): OptionSpec => ({
  name,
  ...(short ? { short } : {}),
  type,
  hidden: true,
  description: what,
});

const spec: VerbSpec = {
  name: 'lock',
  summary: 'run a command while holding a lock (flom compatible: corral lock [options] -- CMD)',
  usage: 'lock [options] -- CMD [ARGS...]',
  command: 'optional',
  usageExitCode: 99,
  options: [
    { name: 'resource-name', short: 'r', type: 'string', value: 'NAME', description: 'resource to lock (default _RESOURCE): name, name[N], a.b.c, /a/b, _s_name[N], _S_name[N], _t_FORMAT[N]' },
    { name: 'lock-mode', short: 'l', type: 'string', value: 'MODE', description: 'NL, CR, CW, PR, PW, EX (default) or NullLock ... Exclusive' },
    { name: 'resource-timeout', short: 'o', type: 'integer', value: 'MS', description: 'wait at most MS for the lock: -1 forever (default), 0 do not wait' },
    { name: 'resource-quantity', short: 'q', type: 'integer', value: 'N', description: 'units of a numeric resource name[N] to take (default 1)' },
    { name: 'resource-create', short: 'e', type: 'string', value: 'yes|no', description: 'no: do not create the resource, wait until it exists (default yes)' },
    { name: 'resource-idle-lifespan', short: 'i', type: 'integer', value: 'MS', description: 'keep the resource and its state MS after its last use (default 0)' },
    { name: 'daemon-lifespan', short: 'd', type: 'integer', value: 'MS', description: 'start a private daemon if none answers, exiting after MS idle (default 5000); 0 never start one; negative: never exits' },
    { name: 'socket-name', short: 's', type: 'string', value: 'PATH', description: 'private daemon socket (default /tmp/corral-UID/lock.sock, or $CORRAL_RUNTIME_DIR/lock.sock)' },
    { name: 'unicast-address', short: 'a', type: 'string', value: 'HOST', description: "lock through the agent at HOST over mutual TLS (the cluster's admin credentials)" },
    { name: 'unicast-port', short: 'p', type: 'integer', value: 'PORT', description: "that agent's port (default: the configured node's, else 7400)" },
    { name: 'config-file', short: 'c', type: 'string', value: 'FILE', description: 'read settings from a FLoM configuration file (INI)' },
    { name: 'config', type: 'string', value: 'FILE', description: 'cluster-wide lock through the local agent of this cluster (also $CORRAL_CONFIG)' },
    { name: 'on-lost', type: 'string', value: 'kill|warn', description: 'if the lock is lost: stop CMD (kill, default) or only warn; both exit 98' },
    { name: 'foreground', type: 'boolean', description: "run CMD in corral lock's process group and session: it keeps the terminal (/dev/tty prompts such as sudo's, job control); only CMD itself is signalled" },
    { name: 'ignore-signal', type: 'string', multiple: true, value: 'SIG', description: 'ignore SIG (name or number) and do not forward it to CMD, as flom does' },
    { name: 'quiesce-exit', short: 'x', type: 'boolean', description: 'ask the private daemon to exit once idle' },
    { name: 'immediate-exit', short: 'X', type: 'boolean', description: 'ask the private daemon to exit now (holders lose their locks and stop their commands)' },
    { name: 'verbose', short: 'V', type: 'boolean', description: 'print the effective settings, and the element locked' },
    { name: 'version', short: 'v', type: 'boolean', description: 'print the version' },
    { name: 'signal-list', type: 'boolean', description: 'list signal names and numbers' },
    { name: 'help', short: 'h', type: 'boolean', description: 'show this help' },
    unsupported('multicast-address', 'multicast discovery', 'A'),
    unsupported('multicast-port', 'multicast discovery', 'P'),
    unsupported('mount-point-vfs', 'the FUSE view (use corral locks)', 'm'),
    unsupported('network-interface', 'IPv6 link-local interfaces', 'n'),
    unsupported('discovery-attempts', 'multicast discovery', 'D'),
    unsupported('discovery-timeout', 'multicast discovery', 'I'),
    unsupported('discovery-ttl', 'multicast discovery'),
    unsupported('tcp-keepalive-time', 'TCP keepalive tuning'),
    unsupported('tcp-keepalive-intvl', 'TCP keepalive tuning'),
    unsupported('tcp-keepalive-probes', 'TCP keepalive tuning'),
    unsupported('tls-certificate', "FLoM's TLS settings (corral always uses the cluster's mutual TLS)"),
    unsupported('tls-private-key', "FLoM's TLS settings (corral always uses the cluster's mutual TLS)"),
    unsupported('tls-ca-certificate', "FLoM's TLS settings (corral always uses the cluster's mutual TLS)"),
    unsupported('tls-check-peer-id', "FLoM's TLS settings (corral always uses the cluster's mutual TLS)"),
    unsupported('daemon-trace-file', 'trace files (the daemon logs to its data directory)', 't'),
    unsupported('command-trace-file', 'trace files', 'T'),
    unsupported('append-trace-file', 'trace files'),
    unsupported('unique-id', 'unique ids (nodes are named by the cluster configuration)', undefined, 'boolean'),
    unsupported('debug-feature', 'debug features'),
  ],
  details: `Takes the lock, runs CMD (without a shell, in a process group of its own, started only once
the lock is granted: on the fast path, taken when the private daemon answers and the options are
-r -l -o -i -d -s --on-lost, by a /bin/sh trampoline that execs it; otherwise through a gate
process; CORRAL_LOCK_FAST=0 turns the fast path off), releases the lock when CMD ends and exits
with CMD's status (128+N if a signal N killed it). A set, sequence or timestamp resource's element
is appended to CMD's arguments and exported as CORRAL_LOCK_VALUE; the fencing token (strictly
increasing across grants) as CORRAL_FENCE.

Where the lock lives: with no --config, $CORRAL_CONFIG or -a, on a private daemon on a per-user
socket (-s for another), started in the background if none answers (-d sets its idle lifespan),
as flom does. With --config or $CORRAL_CONFIG, cluster-wide through the local agent of that
cluster; with -a HOST [-p PORT], through that agent over mutual TLS.

Signals INT, TERM, HUP, QUIT, USR1 and USR2 are forwarded to CMD, which keeps the lock until it
exits (--ignore-signal SIG: ignored and not forwarded, as flom). If the lock is lost (the daemon
or agent dies or is cut off, or its session ends), corral lock says so, sends SIGTERM to CMD's
process group and SIGKILL before anyone else can be granted the lock, and exits 98. If corral
lock itself is killed, a local agent keeps the lock until CMD's process group has ended (even
across a crash and restart of the agent; on etcd or a coordinator elsewhere, CMD's gate stops the
group if the agent stays down too long to keep the lock); where the group cannot be attached (-a,
another user's daemon, --foreground), the gate stops CMD and the agent keeps the lock until it
has. See docs/locks.md.

CMD runs in a session of its own, without a controlling terminal (Node cannot make a process group
inside the terminal's session): a program that prompts on /dev/tty (sudo, ssh) fails there. Use
--foreground for such commands, or sudo -S (stdin is still the terminal).

Requests are granted first come, first served among incompatible ones (flom lets readers starve
writers). -c FILE reads flom's INI settings: [Resource] Name Timeout Quantity LockMode Create
IdleLifespan, [Daemon] SocketName Lifespan UnicastAddress UnicastPort, [Monitor] IgnoredSignals,
[Trace] Verbose (other flom keys are ignored with a warning; flom's system file and ~/.flom are
not read). Multicast discovery, FLoM's TLS options, trace files and the FUSE view are not
supported: use a cluster (--config) and corral locks.`,
  exitCodes: [
    [0, "CMD's exit status (any), or 128+N when signal N killed it; 0 for -x, -X, -v"],
    [96, 'the resource does not exist (-e no) and the request may not wait (-o 0)'],
    [97, 'no command given, or CMD cannot be executed'],
    [98, 'busy (-o 0), the timeout expired, or the lock was lost'],
    [99, 'any other failure: bad option, resource name or mode, impossible quantity, no daemon (-d 0), ...'],
  ],
};

/** A daemon that does not answer within this after being started is reported. */
const DAEMON_START_BUDGET_MS = 15_000;

interface Settings {
  resource: string;
  timeoutMs: number;
  quantity: number | undefined;
  mode: string;
  create: boolean;
  idleLifespanMs: number;
  socket: string;
  socketGiven: boolean;
  lifespanMs: number;
  address: string | undefined;
  port: number | undefined;
  ignored: NodeJS.Signals[];
  verbose: boolean;
  onLost: 'kill' | 'warn';
  clusterConfig: string | undefined;
  foreground: boolean;
}

type Target = { kind: 'private'; socket: string } | { kind: 'cluster'; config: string } | { kind: 'tls'; host: string; port: number | undefined; config: string | undefined };


async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  try {
    return await runLock(args, io);
  } catch (err) {
    const e = err as { message?: string; code?: string };
    io.stderr(`corral lock: ${e.message ?? String(err)}${e.code ? ` [${e.code}]` : ''}\n`);
    return exitCodeOf(err);
  }
}

async function runLock(args: ParsedArgs, io: CliIO): Promise<number> {
  const o = args.options;
  if (o.version === true) {
    const { packageVersion } = await import('../version.js');
    io.stdout(`corral lock (corral ${packageVersion()}): flom-compatible lock manager\n`);
    return 0;
  }
  if (o['signal-list'] === true) {
    io.stdout(await signalList());
    return 0;
  }
  for (const opt of spec.options) {
    if (opt.hidden && o[opt.name] !== undefined) {
      throw new CorralError('USAGE', `--${opt.name}${opt.short ? ` (-${opt.short})` : ''}: ${opt.description} is not supported by corral; see 'corral help lock'`);
    }
  }
  const shutdown = o['quiesce-exit'] === true || o['immediate-exit'] === true;
  // CMD's gate starts first (bin/corral has usually started it already), so that its start-up
  // overlaps everything else corral lock does.
  const gate = !shutdown && args.command.length > 0 ? await startGate(o.foreground === true) : undefined;
  try {
    const settings = await resolveSettings(args, io);
    const target = chooseTarget(settings, io.env);
    if (shutdown) return await shutdownDaemon(target, o['immediate-exit'] === true, io);
    if (gate === undefined) {
      io.stderr('corral lock: No command to execute! Give it after --: corral lock [options] -- CMD [ARGS...]\n');
      return 97;
    }
    if (settings.verbose) printSettings(settings, target, io);
    return await lockAndRun(args.command, settings, target, gate, io);
  } finally {
    // Told to run CMD, it ends with CMD; otherwise it goes now (a bad option, a failed request).
    gate?.abandon();
  }
}

// --- settings ---------------------------------------------------------------------------------

async function resolveSettings(args: ParsedArgs, io: CliIO): Promise<Settings> {
  const [{ parseLockMode }, { parseResourceName, effectiveMode, DEFAULT_RESOURCE_NAME }, path, { defaultLockSocket }] = await Promise.all([
    import('../../coord/lock/modes.js'),
    import('../../coord/lock/resource.js'),
    import('node:path'),
    import('../../client/private-daemon.js'),
  ]);
  const o = args.options;
  const str = (name: string): string | undefined => (typeof o[name] === 'string' ? o[name] : undefined);
  const int = (name: string): number | undefined => (typeof o[name] === 'number' ? o[name] : undefined);

  const file = str('config-file');
  // flom-config.js only for -c FILE and -e (one module less on the usual start path).
  const fromFile = file ? (await import('../flom-config.js')).readFlomConfig(file) : undefined;
  for (const key of fromFile?.ignored ?? []) io.stderr(`corral lock: ${file}: ${key} is not supported by corral; ignored\n`);
  const f = fromFile?.settings ?? {};

  const resource = str('resource-name') ?? f.resourceName ?? DEFAULT_RESOURCE_NAME;
  if (str('resource-name') === DEFAULT_RESOURCE_NAME) throw new CorralError('BAD_RESOURCE', `ERROR: '${DEFAULT_RESOURCE_NAME}' is a reserved resource name: it is the default; omit -r`);
  const parsed = parseResourceName(resource);
  const mode = parseLockMode(str('lock-mode') ?? f.lockMode ?? 'EX');
  const verbose = o.verbose === true || f.verbose === true;
  if (effectiveMode(parsed.kind, mode) !== mode && verbose) io.stderr(`corral lock: warning: ${parsed.kind} resources are locked EX; -l ${mode} ignored\n`);
  let quantity = int('resource-quantity') ?? f.resourceQuantity;
  if (quantity !== undefined && quantity < 1) {
    if (quantity < 0) io.stderr(`corral lock: warning: resource quantity ${quantity} is negative; ignored\n`);
    quantity = undefined;
  }
  if (quantity !== undefined && parsed.kind !== 'numeric') {
    if (verbose) io.stderr(`corral lock: warning: -q applies to numeric resources name[N] only; ignored\n`);
    quantity = undefined;
  }
  if (quantity !== undefined && parsed.kind === 'numeric' && quantity > parsed.total) {
    throw new CorralError('LOCK_IMPOSSIBLE', `Resource will never satisfy the request, the lock cannot be obtained: ${resource} has ${parsed.total} units and the request asks for ${quantity}`);
  }
  const createText = str('resource-create');
  let create = f.resourceCreate ?? true;
  if (createText !== undefined) {
    const b = (await import('../flom-config.js')).parseFlomBoolean(createText);
    if (b === undefined) throw new CorralError('USAGE', `-e/--resource-create takes yes or no, not '${createText}'`);
    create = b;
  }
  const onLost = str('on-lost') ?? 'kill';
  if (onLost !== 'kill' && onLost !== 'warn') throw new CorralError('USAGE', `--on-lost takes kill or warn, not '${onLost}'`);
  const socketGiven = str('socket-name') ?? f.socketName;
  const socket = socketGiven !== undefined ? path.resolve(socketGiven) : defaultLockSocket(io.env);
  if (Buffer.byteLength(socket) > 107) throw new CorralError('USAGE', `socket path ${socket} is longer than a UNIX socket allows (107 bytes)`);
  const ignored = await parseSignals([...(f.ignoredSignals ?? []), ...((o['ignore-signal'] as string[] | undefined) ?? [])]);
  const port = int('unicast-port') ?? f.unicastPort;
  if (port !== undefined && (port < 1 || port > 65535)) throw new CorralError('USAGE', `-p/--unicast-port takes a port number, not ${port}`);
  const timeout = int('resource-timeout') ?? f.resourceTimeoutMs ?? -1;
  return {
    resource,
    timeoutMs: timeout < 0 ? -1 : timeout,
    quantity,
    mode,
    create,
    idleLifespanMs: Math.abs(int('resource-idle-lifespan') ?? f.resourceIdleLifespanMs ?? 0),
    socket,
    socketGiven: socketGiven !== undefined,
    lifespanMs: int('daemon-lifespan') ?? f.daemonLifespanMs ?? 5000,
    address: str('unicast-address') ?? f.unicastAddress,
    port,
    ignored,
    verbose,
    onLost,
    clusterConfig: str('config'),
    foreground: o.foreground === true,
  };
}

function chooseTarget(s: Settings, env: NodeJS.ProcessEnv): Target {
  if (s.address !== undefined) {
    if (s.socketGiven) {
      throw new CorralError('USAGE', 'ERROR: corral lock can not use a local socket (-s) and a network agent (-a) at the same time.');
    }
    return { kind: 'tls', host: s.address, port: s.port, config: s.clusterConfig ?? env.CORRAL_CONFIG };
  }
  const config = s.clusterConfig ?? (s.socketGiven ? undefined : env.CORRAL_CONFIG);
  if (config !== undefined && config !== '') return { kind: 'cluster', config };
  return { kind: 'private', socket: s.socket };
}

async function parseSignals(names: string[]): Promise<NodeJS.Signals[]> {
  const { constants } = await import('node:os');
  const byNumber = new Map<number, string>();
  for (const [name, n] of Object.entries(constants.signals)) if (!byNumber.has(n)) byNumber.set(n, name);
  return names.map((raw) => {
    const text = raw.trim().toUpperCase();
    const name = /^\d+$/.test(text) ? byNumber.get(Number(text)) : text.startsWith('SIG') ? text : `SIG${text}`;
    if (name === undefined || !Object.hasOwn(constants.signals, name)) throw new CorralError('USAGE', `--ignore-signal: '${raw}' is not a signal; see corral lock --signal-list`);
    if (name === 'SIGKILL' || name === 'SIGSTOP') throw new CorralError('USAGE', `--ignore-signal: ${name} cannot be ignored`);
    return name as NodeJS.Signals;
  });
}

async function signalList(): Promise<string> {
  const { constants } = await import('node:os');
  const seen = new Set<number>();
  const cells: string[] = [];
  for (const [name, n] of Object.entries(constants.signals).sort((a, b) => a[1] - b[1])) {
    if (seen.has(n)) continue;
    seen.add(n);
    cells.push(`${String(n).padStart(2)}) ${name.padEnd(10)}`);
  }
  const rows: string[] = [];
  for (let i = 0; i < cells.length; i += 4) rows.push(cells.slice(i, i + 4).join(' ').trimEnd());
  return rows.join('\n') + '\n';
}

function printSettings(s: Settings, target: Target, io: CliIO): void {
  const q = (v: string | undefined): string => `'${v ?? ''}'`;
  const modeNumber = ['NL', 'CR', 'CW', 'PR', 'PW', 'EX'].indexOf(s.mode);
  io.stdout(
    [
      `[Trace]/Verbose=1`,
      `[Resource]/Name=${q(s.resource)}`,
      `[Resource]/Timeout=${s.timeoutMs}`,
      `[Resource]/Quantity=${s.quantity ?? 1}`,
      `[Resource]/LockMode=${modeNumber}`,
      `[Resource]/Create=${s.create ? 1 : 0}`,
      `[Resource]/IdleLifespan=${s.idleLifespanMs}`,
      `[Daemon]/SocketName=${q(target.kind === 'private' ? s.socket : '')}`,
      `[Daemon]/Lifespan=${s.lifespanMs}`,
      `[Daemon]/UnicastAddress=${q(s.address)}`,
      `[Daemon]/UnicastPort=${s.port ?? (target.kind === 'tls' ? 7400 : 0)}`,
      `[Monitor]/IgnoredSignals=${q(s.ignored.join(';'))}`,
      `[Corral]/Target=${q(target.kind === 'private' ? `private daemon unix:${target.socket}` : target.kind === 'cluster' ? `cluster ${target.config}` : `agent ${target.host}`)}`,
      `[Corral]/OnLost=${q(s.onLost)}`,
      `[Corral]/Foreground=${s.foreground ? 1 : 0}`,
      '',
    ].join('\n'),
  );
}

// --- reaching the lock service ------------------------------------------------------------------

type RpcClient = import('../../transport/client.js').RpcClient;
type HeldLock = import('../../client/locks.js').HeldLock;
type LockOptions = import('../../client/locks.js').LockOptions;

async function defaultUmask(): Promise<number> {
  const { readFileSync } = await import('node:fs');
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return parseInt(m[1] as string, 8);
  } catch {
    // not Linux
  }
  return 0o022;
}

/** The private daemon on `socket`: acquire through it, starting it (or another) when nobody answers. */
async function acquirePrivate(socket: string, s: Settings, lock: LockOptions, deadline: number): Promise<{ rpc: RpcClient; held: HeldLock }> {
  const [{ RpcClient }, { acquireLock }, daemon] = await Promise.all([
    import('../../transport/client.js'),
    import('../../client/locks.js'),
    import('../../client/private-daemon.js'),
  ]);
  const rpc = new RpcClient({ kind: 'unix', path: socket }, { connectTimeoutMs: 2000, requestTimeoutMs: 10_000 });
  let started: import('../../client/private-daemon.js').DaemonStart | undefined;
  let startedAt = 0;
  let starts = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      return { rpc, held: await acquireLock(rpc, { ...lock, timeoutMs: remainingOf(s.timeoutMs, deadline) }) };
    } catch (err) {
      if (!isCorralError(err, 'UNAVAILABLE') && !isCorralError(err, 'SHUTTING_DOWN')) {
        await rpc.close();
        throw err;
      }
      const nobody = daemon.nobodyListens(err);
      // Errors no retry can fix (a socket we may not use, a path that is not a socket): say so now.
      const errno = (err.cause as NodeJS.ErrnoException | undefined)?.code;
      if (errno !== undefined && PERMANENT_CONNECT_ERRORS.has(errno)) {
        await rpc.close();
        throw new CorralError('UNAVAILABLE', `cannot connect to the lock daemon socket ${socket} (${errno}): check its path and permissions, or choose another with -s`);
      }
      if (s.lifespanMs === 0 && nobody) {
        await rpc.close();
        const why = (err.cause as NodeJS.ErrnoException | undefined)?.code ?? 'no answer';
        throw new CorralError('UNAVAILABLE', `no lock daemon answers on ${socket} (${why}) and -d 0 forbids starting one: start one (corral lock -d -1 -- true) or drop -d 0`);
      }
      if (s.timeoutMs > 0 && clock.now() >= deadline) {
        await rpc.close();
        throw new CorralError('LOCK_TIMEOUT', `the lock on ${s.resource} was not obtained because the timeout (${s.timeoutMs} milliseconds) expired (no lock daemon answered on ${socket})`);
      }
      if (started && !started.running()) {
        const code = await started.exited;
        if (code !== 0) {
          await rpc.close();
          throw new CorralError('UNAVAILABLE', `the private lock daemon for ${socket} failed to start (exit ${code}); its log ${started.logFile} ends with:\n${daemon.logTail(started.logFile)}`);
        }
        started = undefined; // it lost a race and left quietly: the winner serves, or another start is due
      }
      if (nobody && started === undefined && s.lifespanMs !== 0) {
        if (++starts > 5) {
          await rpc.close();
          throw new CorralError('UNAVAILABLE', `no private lock daemon stays up on ${socket}; see ${daemon.privateDataDir(socket)}/agent.log`);
        }
        started = daemon.startPrivateDaemon({ socket, lifespanMs: s.lifespanMs, socketMode: s.socketGiven ? 0o666 & ~(await defaultUmask()) : 0o600 });
        startedAt = clock.now();
      }
      if (started && clock.now() - startedAt > DAEMON_START_BUDGET_MS) {
        await rpc.close();
        throw new CorralError('UNAVAILABLE', `the private lock daemon for ${socket} did not answer within ${DAEMON_START_BUDGET_MS} ms; see ${started.logFile}`);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(100, 2 + attempt * 3)));
    }
  }
}

/** connect(2) failures on a UNIX socket that waiting does not cure. */
const PERMANENT_CONNECT_ERRORS = new Set(['EACCES', 'EPERM', 'ENOTSOCK', 'ENOTDIR', 'ENAMETOOLONG', 'ELOOP', 'EPROTOTYPE']);

function remainingOf(timeoutMs: number, deadline: number): number {
  if (timeoutMs <= 0) return timeoutMs;
  return Math.max(1, Math.ceil(deadline - clock.now()));
}

/** A cluster's agents, local socket first: the first that answers takes the request. */
async function acquireCluster(configFile: string, s: Settings, lock: LockOptions, deadline: number): Promise<{ rpc: RpcClient; held: HeldLock; socket: string | undefined }> {
  const [{ RpcClient }, { acquireLock }, { candidateEndpoints }, { loadClusterConfig }] = await Promise.all([
    import('../../transport/client.js'),
    import('../../client/locks.js'),
    import('../../client/client.js'),
    import('../../config/cluster-config.js'),
  ]);
  const config = loadClusterConfig(configFile);
  const endpoints = candidateEndpoints(config);
  if (endpoints.length === 0) {
    throw new CorralError('UNAVAILABLE', `no agent socket of cluster ${config.cluster} exists on this machine and ${config.pkiDir} holds no admin credentials; run this on a node, or copy admin.crt and admin.key`);
  }
  const failures: string[] = [];
  for (let round = 0; round < 2; round++) {
    for (const endpoint of endpoints) {
      const timeout = config.timings.requestTimeoutMs;
      const rpc = new RpcClient(endpoint, { connectTimeoutMs: timeout, requestTimeoutMs: Math.max(10_000, timeout) });
      try {
        const held = await acquireLock(rpc, { ...lock, timeoutMs: remainingOf(s.timeoutMs, deadline) });
        return { rpc, held, socket: endpoint.kind === 'unix' ? endpoint.path : undefined };
      } catch (err) {
        await rpc.close();
        if (!isCorralError(err, 'UNAVAILABLE') && !isCorralError(err, 'SHUTTING_DOWN')) throw err;
        failures.push(err.message);
        if (s.timeoutMs > 0 && clock.now() >= deadline) throw new CorralError('LOCK_TIMEOUT', `the lock on ${s.resource} was not obtained because the timeout (${s.timeoutMs} milliseconds) expired`);
      }
    }
  }
  throw new CorralError('UNAVAILABLE', `no agent of cluster ${config.cluster} took the lock request: ${failures.join('; ')}`);
}

/** -a HOST -p PORT: one agent over mutual TLS, with the cluster's admin credentials. */
async function acquireTls(target: Extract<Target, { kind: 'tls' }>, s: Settings, lock: LockOptions, deadline: number): Promise<{ rpc: RpcClient; held: HeldLock }> {
  const [{ RpcClient }, { acquireLock }, { configPath, loadClusterConfig }, { loadAdminCredentials, PKI_FILES }, fs, path] = await Promise.all([
    import('../../transport/client.js'),
    import('../../client/locks.js'),
    import('../../config/cluster-config.js'),
    import('../../config/pki-files.js'),
    import('node:fs'),
    import('node:path'),
  ]);
  const file = configPath(target.config, {});
  if (!fs.existsSync(file)) {
    throw new CorralError('TLS', `-a needs the cluster's admin credentials to reach ${target.host} over mutual TLS, found through its corral.yaml: pass --config FILE or set CORRAL_CONFIG (${file} does not exist)`);
  }
  const config = loadClusterConfig(file);
  if (!fs.existsSync(path.join(config.pkiDir, PKI_FILES.adminCert))) {
    throw new CorralError('TLS', `-a needs the cluster's admin credentials (${path.join(config.pkiDir, 'admin.crt')} and admin.key) to reach ${target.host}; copy them from where 'corral init' ran`);
  }
  const named = config.nodes.filter((n) => n.address.host === target.host && (target.port === undefined || n.address.port === target.port));
  const port = target.port ?? named[0]?.address.port ?? 7400;
  const serverName = named.length === 1 ? named[0]?.name : undefined;
  const rpc = new RpcClient(
    { kind: 'tls', host: target.host, port, credentials: loadAdminCredentials(config.pkiDir), ...(serverName ? { serverName } : {}) },
    { connectTimeoutMs: config.timings.requestTimeoutMs, requestTimeoutMs: Math.max(10_000, config.timings.requestTimeoutMs) },
  );
  try {
    return { rpc, held: await acquireLock(rpc, { ...lock, timeoutMs: remainingOf(s.timeoutMs, deadline) }) };
  } catch (err) {
    await rpc.close();
    throw err;
  }
}

async function shutdownDaemon(target: Target, immediate: boolean, io: CliIO): Promise<number> {
  const [{ RpcClient }, { LOCK_PATHS }] = await Promise.all([
    import('../../transport/client.js'),
    import('../../api/lock-wire.js'),
  ]);
  if (target.kind !== 'private') throw new CorralError('FORBIDDEN', '-x and -X stop a private lock daemon only (no --config, $CORRAL_CONFIG or -a); stop a cluster agent with systemctl or corral local down');
  const rpc = new RpcClient({ kind: 'unix', path: target.socket }, { connectTimeoutMs: 2000, requestTimeoutMs: 5000 });
  try {
    await rpc.call('POST', immediate ? LOCK_PATHS.exit : LOCK_PATHS.quiesce, {});
  } catch (err) {
    throw new CorralError('UNAVAILABLE', `no lock daemon answers on ${target.socket}: ${(err as Error).message}`);
  } finally {
    await rpc.close();
  }
  io.stdout(immediate ? 'Starting corral lock daemon immediate shutdown...\n' : 'Starting corral lock daemon quiesce shutdown...\n');
  return 0;
}

// --- running the command ------------------------------------------------------------------------

async function lockAndRun(command: string[], s: Settings, target: Target, gate: Gate, io: CliIO): Promise<number> {
  const { constants } = await import('node:os');
  const start = clock.now();
  const deadline = s.timeoutMs > 0 ? start + s.timeoutMs : Number.POSITIVE_INFINITY;

  // CMD runs through the gate (cli/lock-gate.cts), already starting: it leads CMD's process group
  // (unless --foreground) and starts CMD only when told to, once the lock is granted with that
  // group attached.
  const pgid = s.foreground ? undefined : gate.pid;
  const waiting = new AbortController();
  void gate.exited.then(() => {
    if (!gate.told) waiting.abort(new CorralError('INTERNAL', `the gate process that was to run CMD exited before the lock was granted; see 'corral help lock'`));
  });

  // Signals: before CMD runs they abandon the request (and corral lock exits as if killed);
  // afterwards they go to CMD, which keeps the lock until it exits.
  let running = false;
  let signalledWhileWaiting: NodeJS.Signals | undefined;
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const sig of FORWARDED) {
    const ignored = s.ignored.includes(sig);
    const handler = (): void => {
      if (ignored) return;
      if (!running) {
        signalledWhileWaiting ??= sig;
        waiting.abort(new Error(`received ${sig}`));
        return;
      }
      gate.signalCommand(sig);
    };
    handlers.set(sig, handler);
    process.on(sig, handler);
  }
  for (const sig of s.ignored) {
    if (!handlers.has(sig)) {
      const handler = (): void => undefined;
      handlers.set(sig, handler);
      process.on(sig, handler);
    }
  }
  if (!s.foreground) {
    // Ctrl-Z: CMD runs in a session of its own, where the terminal's stop signals never reach it
    // (an orphaned process group ignores SIGTSTP), so corral lock stops it and then itself, and
    // continues it when continued. The lock stays held meanwhile.
    const onStop = (): void => {
      if (running) gate.signalCommand('SIGSTOP');
      process.kill(process.pid, 'SIGSTOP');
    };
    const onContinue = (): void => {
      if (running) gate.signalCommand('SIGCONT');
    };
    for (const [sig, handler] of [['SIGTSTP', onStop], ['SIGCONT', onContinue]] as const) {
      handlers.set(sig, handler);
      process.on(sig, handler);
    }
  }
  const unhook = (): void => {
    for (const [sig, handler] of handlers) process.off(sig, handler);
  };

  const lockOptions: LockOptions = {
    resource: s.resource,
    mode: s.mode,
    timeoutMs: s.timeoutMs,
    create: s.create,
    idleLifespanMs: s.idleLifespanMs,
    pid: process.pid,
    command: command.join(' ').slice(0, 1024),
    signal: waiting.signal,
    // Attached, the agent keeps the lock while CMD's group runs even if corral lock dies; where
    // it cannot (remote agent, another user's daemon), guarded: the gate stops CMD then.
    guard: true,
  };
  if (pgid !== undefined) lockOptions.attach = { pgid, secret: gate.secret };
  if (s.quantity !== undefined) lockOptions.quantity = s.quantity;

  let rpc: RpcClient;
  let held: HeldLock;
  /** The agent's UNIX socket, where the lock was taken through one. */
  let socket: string | undefined;
  try {
    ({ rpc, held, socket } =
      target.kind === 'private'
        ? { ...(await acquirePrivate(target.socket, s, lockOptions, deadline)), socket: target.socket }
        : target.kind === 'cluster'
          ? await acquireCluster(target.config, s, lockOptions, deadline)
          : { ...(await acquireTls(target, s, lockOptions, deadline)), socket: undefined });
  } catch (err) {
    unhook();
    gate.abandon();
    if (signalledWhileWaiting) return 128 + (constants.signals[signalledWhileWaiting] ?? 0);
    // The agent counts the time left when it got the request; the user gave the whole deadline.
    if (isCorralError(err, 'LOCK_TIMEOUT')) throw new CorralError('LOCK_TIMEOUT', timedOutMessage(s.resource, s.timeoutMs));
    throw err;
  }

  const value = held.value;
  if (s.verbose && value !== undefined) io.stdout(`Locked element is '${value}'\n`);
  if (s.verbose && held.attachRefused !== undefined) {
    io.stderr(`corral lock: note: CMD's process group is not attached (${held.attachRefused}); if corral lock is killed, CMD is stopped\n`);
  }
  const argv = value !== undefined ? [...command, value] : command;
  const env: NodeJS.ProcessEnv = { ...io.env, CORRAL_FENCE: held.fencingToken.toString() };
  if (value !== undefined) env.CORRAL_LOCK_VALUE = value;
  else delete env.CORRAL_LOCK_VALUE;

  testStop(io.env, 'granted');
  running = true;
  // Attached on a lease that counts on while the agent is down (etcd, a coordinator elsewhere): if
  // corral lock dies, the gate watches the agent itself, as corral lock does, and stops CMD's group
  // before the lease can expire. It starts from the validity corral lock last had confirmed,
  // forwarded at every confirmation. Not with --on-lost warn: CMD is to run on unprotected then.
  const watch =
    held.attached && held.leaseOutlivesAgent && socket !== undefined && s.onLost === 'kill'
      ? { socket, validForMs: Math.max(0, Math.floor(held.deadline - clock.now())), confirmEveryMs: held.confirmEveryMs, stopWithinMs: held.stopWithinMs }
      : undefined;
  gate.run({
    argv,
    env,
    ifParentDies: held.attached ? 'keep' : s.foreground ? 'stop-command' : 'stop-group',
    stopWithinMs: held.guardedForMs ?? held.stopWithinMs,
    ...(watch ? { watch } : {}),
  });
  let forwarded = held.deadline;
  const forward = watch
    ? setInterval(() => {
        if (held.deadline === forwarded || held.lost.aborted) return;
        forwarded = held.deadline;
        gate.tell({ valid: Math.max(0, Math.floor(forwarded - clock.now())) });
      }, held.confirmEveryMs)
    : undefined;
  forward?.unref();
  testStop(io.env, 'started');

  let lost: Error | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const onLost = (): void => {
    lost = held.lost.reason as Error;
    if (s.onLost === 'warn') {
      io.stderr(`corral lock: ${lost.message}; CMD keeps running unprotected (--on-lost warn) [LOCK_LOST]\n`);
      return;
    }
    const killIn = Math.max(0, held.deadline - clock.now() - KILL_MARGIN_MS);
    io.stderr(`corral lock: ${lost.message}; stopping CMD: SIGTERM now, SIGKILL in ${Math.round(killIn)} ms [LOCK_LOST]\n`);
    gate.signalCommand('SIGTERM');
    killTimer = setTimeout(() => gate.signalCommand('SIGKILL'), killIn);
  };
  if (held.lost.aborted) onLost();
  else held.lost.addEventListener('abort', onLost, { once: true });
  const exit = await gate.outcome;
  clearInterval(forward);

  if ('error' in exit) {
    unhook();
    clearTimeout(killTimer);
    await held.release({ rollback: true }).catch(() => undefined);
    await rpc.close();
    io.stderr(`corral lock: Unable to execute command '${argv[0]}' (${exit.error.code})\n`);
    return 97;
  }
  if (lost !== undefined && s.onLost === 'kill' && pgid !== undefined) {
    // CMD has exited; what else runs in its group must be gone too before the lock can expire.
    const { processGroupAlive } = await import('../../util/process-group.js');
    while (processGroupAlive(pgid) && clock.now() < held.deadline) await new Promise((r) => setTimeout(r, 10));
    gate.signalCommand('SIGKILL');
  }
  clearTimeout(killTimer);
  const status = exit.code ?? 128 + (exit.signal ? (constants.signals[exit.signal] ?? 0) : 0);
  try {
    await held.release({ rollback: status !== 0 || lost !== undefined });
  } catch (err) {
    io.stderr(`corral lock: warning: the lock on ${s.resource} could not be released cleanly (${(err as Error).message}); it is released when the agent notices this client is gone\n`);
  } finally {
    unhook();
    await rpc.close();
  }
  return lost !== undefined ? 98 : status;
}

/**
 * For tests only: CORRAL_LOCK_TEST_STOP_AT=granted (the lock granted, CMD not yet told to run) or
 * =started (CMD just told to run) makes corral lock stop itself (SIGSTOP) right there, so that a
 * test can kill it (SIGKILL) at that exact point. Not for use otherwise.
 */
function testStop(env: NodeJS.ProcessEnv, at: 'granted' | 'started'): void {
  if (env.CORRAL_LOCK_TEST_STOP_AT === at) process.kill(process.pid, 'SIGSTOP');
}

type GateOutcome = { code: number | null; signal: NodeJS.Signals | null } | { error: { code: string; message: string } };

interface Gate {
  pid: number;
  /** The secret in the gate's environment that proves its group was started for this request. */
  secret: string;
  /** Whether it has been told to run CMD. */
  told: boolean;
  /** Resolves when the gate process exits. */
  exited: Promise<void>;
  /** CMD's outcome: its status, or why it could not be started. */
  outcome: Promise<GateOutcome>;
  run(message: {
    argv: string[];
    env: NodeJS.ProcessEnv;
    ifParentDies: 'keep' | 'stop-group' | 'stop-command';
    stopWithinMs: number;
    watch?: { socket: string; validForMs: number; confirmEveryMs: number; stopWithinMs: number };
  }): void;
  /** The lock's validity as corral lock last had it confirmed (ms from now), for the gate's watch. */
  tell(message: { valid: number }): void;
  /** No CMD after all: the gate exits. */
  abandon(): void;
  /** Signals CMD's process group (or, --foreground, CMD alone). */
  signalCommand(sig: NodeJS.Signals): void;
}

/**
 * CMD's gate: the one bin/corral started early (lock-gate-spawn.cts), else a new one; in a session
 * of its own (CMD's group), or in corral lock's own with --foreground.
 */
async function startGate(foreground: boolean): Promise<Gate> {
  // Through require(): bin/corral loaded it already (the same module, with the gate it started),
  // and import() of CommonJS would parse it again for its exports.
  const { createRequire } = await import('node:module');
  const { spawnGate, takeGate } = createRequire(import.meta.url)('../lock-gate-spawn.cjs') as typeof import('../lock-gate-spawn.cjs');
  const started = takeGate(!foreground) ?? spawnGate(!foreground);
  const { pid, secret, channel, exited } = started;
  if (pid === undefined) {
    const error = await started.spawnError;
    throw new CorralError('INTERNAL', `could not start ${process.execPath} to run CMD: ${error.message}`);
  }
  channel.setEncoding('utf8');
  let cmdPid: number | undefined;
  const pending: NodeJS.Signals[] = [];
  let buffer = '';
  let reported: GateOutcome | undefined;
  let onReport: ((outcome: GateOutcome) => void) | undefined;
  const report = (outcome: GateOutcome): void => {
    if (reported !== undefined) return;
    reported = outcome;
    onReport?.(outcome);
  };
  // The gate's last messages may still be unread when it is seen to exit: without a report, its
  // own status counts once the channel has ended (bounded, should anything else hold it open).
  const drained = Promise.race([started.channelClosed, exited.then(() => new Promise<void>((resolve) => setTimeout(resolve, 2000).unref()))]);
  const signalCommand = (sig: NodeJS.Signals): void => {
    try {
      if (!foreground) process.kill(-pid, sig);
      else if (cmdPid !== undefined) process.kill(cmdPid, sig);
      else pending.push(sig);
    } catch {
      // gone
    }
  };
  channel.on('data', (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        const m = JSON.parse(line) as { spawned?: number; error?: { code: string; message: string }; exit?: number | null; signal?: NodeJS.Signals | null };
        if (typeof m.spawned === 'number') {
          cmdPid = m.spawned;
          for (const sig of pending.splice(0)) signalCommand(sig);
        } else if (m.error !== undefined) report({ error: m.error });
        else if ('exit' in m) report({ code: m.exit ?? null, signal: m.signal ?? null });
      } catch {
        // not a message
      }
    }
  });
  const gate: Gate = {
    pid,
    secret,
    told: false,
    exited: exited.then(() => undefined),
    // CMD's outcome as soon as the gate reports it (the gate exits right after, by itself); the
    // gate's own status stands in for it when it died without reporting (killed).
    outcome: Promise.race([
      new Promise<GateOutcome>((resolve) => (onReport = resolve)),
      Promise.all([exited, drained]).then(([own]): GateOutcome => {
        if (reported !== undefined) return reported;
        if (cmdPid === undefined) return { error: { code: `the gate exited (${own.signal ?? `status ${own.code}`}) before starting it`, message: '' } };
        return own;
      }),
    ]),
    run(message) {
      gate.told = true;
      channel.write(`${JSON.stringify({ run: message })}\n`);
    },
    tell(message) {
      if (!channel.destroyed) channel.write(`${JSON.stringify(message)}\n`);
    },
    abandon() {
      if (!gate.told) channel.destroy();
    },
    signalCommand,
  };
  return gate;
}

export const verb: Verb = { spec, run };
