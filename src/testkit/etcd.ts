// Real etcd for tests: starts 1 or 3 `etcd` processes on 127.0.0.1 with random free ports and a
// temporary data directory each, waits until the cluster serves, and ends every process by pid
// (SIGTERM, then SIGKILL) and removes the directories. Every wait is bounded.
//
// etcd must be installed (Debian: `apt-get install etcd-server`; CI's .ci/run does it). Tests do not
// skip without it: they fail and say so.

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { credentials as grpcCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import { RawEtcdClient } from '../store/etcd/raw-bench-client.js';
import { isProcessAlive } from '../util/process.js';

export interface EtcdMember {
  readonly name: string;
  /** The current process (changes on restart). */
  pid: number;
  /** http(s)://127.0.0.1:PORT */
  readonly clientUrl: string;
  /** 127.0.0.1:PORT, as EtcdStore's endpoints take it. */
  readonly endpoint: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  /** etcd's member id (decimal), known once the cluster has started. */
  id: string;
}

export interface EtcdTestTls {
  /** PEM contents; written to files for etcd. The server certificate must name 127.0.0.1. */
  ca: string;
  cert: string;
  key: string;
  /** Require client certificates signed by `ca` (etcd's --client-cert-auth). */
  clientCertAuth?: boolean;
}

export interface StartEtcdOptions {
  members?: 1 | 3;
  /** etcd's --heartbeat-interval (default 50 ms, fast for tests). */
  heartbeatIntervalMs?: number;
  /** etcd's --election-timeout (default 500 ms). */
  electionTimeoutMs?: number;
  /** Serve clients over TLS (peers stay plain on loopback). */
  tls?: EtcdTestTls;
  /** Bound on start-up and on every restart (default 30 s). */
  startTimeoutMs?: number;
}

export interface EtcdCluster {
  /** "127.0.0.1:PORT" per member, in member order. */
  readonly endpoints: string[];
  readonly members: EtcdMember[];
  readonly heartbeatIntervalMs: number;
  readonly electionTimeoutMs: number;
  /** The member the live members agree leads (waits, bounded, for an election). */
  leader(timeoutMs?: number): Promise<EtcdMember>;
  /** Whether the member's process exists (stopped counts; a zombie does not). */
  running(member: EtcdMember): boolean;
  /** Sends `signal` (default SIGKILL) to the member's process; throws if it is not running. */
  kill(member: EtcdMember, signal?: NodeJS.Signals): void;
  /** Stops the member if it runs, starts it again on its data directory, and waits until it serves. */
  restart(member: EtcdMember): Promise<void>;
  /** Ends every process by pid and removes the temporary directories. Idempotent. */
  stop(): Promise<void>;
}

const ETCD_CANDIDATES = ['/usr/bin/etcd'];

/** The etcd binary, or a failure that says how to install it. */
export function etcdBinary(): string {
  const candidates = [process.env.CORRAL_TEST_ETCD, ...ETCD_CANDIDATES, ...(process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'etcd'))];
  for (const c of candidates) {
    const found = c ? executable(c) : undefined;
    if (found) return found;
  }
  throw new Error('etcd is not installed (looked for /usr/bin/etcd and etcd on PATH): install it with `apt-get install etcd-server` (CI installs it in .ci/run)');
}

// Processes this module started and has not seen exit: killed if the test process exits first.
const running = new Map<number, ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (child.pid === undefined) return;
  running.set(child.pid, child);
  child.once('exit', () => running.delete(child.pid as number));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const pid of running.keys()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** A bound on a wait that must not keep the test process alive once the wait is over. */
const bound = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** `n` distinct free TCP ports on 127.0.0.1 (held open together so they differ, then released). */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((s) => {
      const address = s.address();
      if (address === null || typeof address === 'string') throw new Error('no port');
      return address.port;
    });
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

interface MemberState extends EtcdMember {
  child: ChildProcess | undefined;
  exited: Promise<void>;
  args: string[];
  logFile: string;
}

function executable(path: string): string | undefined {
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    return undefined;
  }
}

export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdCluster> {
  const bin = etcdBinary();
  const setpriv = executable('/usr/bin/setpriv');
  const size = options.members ?? 1;
  const heartbeat = options.heartbeatIntervalMs ?? 50;
  const election = options.electionTimeoutMs ?? 500;
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const root = await mkdtemp(join(tmpdir(), 'corral-etcd-'));
  let tlsFiles: { ca: string; cert: string; key: string } | undefined;
  if (options.tls) {
    tlsFiles = { ca: join(root, 'ca.crt'), cert: join(root, 'server.crt'), key: join(root, 'server.key') };
    await writeFile(tlsFiles.ca, options.tls.ca);
    await writeFile(tlsFiles.cert, options.tls.cert);
    await writeFile(tlsFiles.key, options.tls.key, { mode: 0o600 });
  }
  const clientScheme = options.tls ? 'https' : 'http';
  // Health checks from here speak TLS to a TLS etcd: with the server's own certificate as client
  // certificate (it names 127.0.0.1 and is signed by the CA), which satisfies --client-cert-auth.
  const probeCredentials: ChannelCredentials = options.tls
    ? grpcCredentials.createSsl(Buffer.from(options.tls.ca), Buffer.from(options.tls.key), Buffer.from(options.tls.cert))
    : grpcCredentials.createInsecure();

  let members: MemberState[] = [];
  let stopped = false;

  const launch = (m: MemberState): void => {
    const fd = openSync(m.logFile, 'a');
    try {
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD')));
      // Under setpriv --pdeathsig (util-linux; it execs etcd, so the pid is etcd's), etcd is killed
      // even if this process dies without running its exit hook (SIGKILL, a runner's hard stop).
      const [command, args] = setpriv ? [setpriv, ['--pdeathsig', 'SIGKILL', '--', bin, ...m.args]] : [bin, m.args];
      const child = spawn(command, args, { stdio: ['ignore', fd, fd], env });
      track(child);
      m.child = child;
      m.pid = child.pid ?? -1;
      m.exited = new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.once('error', () => resolve());
      });
    } finally {
      closeSync(fd);
    }
  };

  const alive = (m: MemberState): boolean => m.child !== undefined && m.child.exitCode === null && m.child.signalCode === null && isProcessAlive(m.pid);

  const terminate = async (m: MemberState): Promise<void> => {
    if (!alive(m)) return;
    try {
      process.kill(m.pid, 'SIGCONT'); // a SIGSTOPped etcd would not act on SIGTERM
      process.kill(m.pid, 'SIGTERM');
    } catch {
      // gone meanwhile
    }
    const graceful = await Promise.race([m.exited.then(() => true), bound(5_000).then(() => false)]);
    if (!graceful) {
      try {
        process.kill(m.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      await Promise.race([m.exited, bound(5_000)]);
    }
  };

  const logTail = (m: MemberState): string => {
    try {
      return readFileSync(m.logFile, 'utf8').trim().split('\n').slice(-15).join('\n');
    } catch {
      return '(no log)';
    }
  };

  const status = async (m: MemberState, timeoutMs = 1_000): Promise<{ id: string; leader: string } | undefined> => {
    const client = new RawEtcdClient(m.endpoint, timeoutMs, probeCredentials);
    try {
      const s = await client.status(timeoutMs);
      return { id: s.header.member_id, leader: s.leader };
    } catch {
      return undefined;
    } finally {
      client.close();
    }
  };

  /** Waits until every member in `which` is up and knows a leader; fails early if one exits. */
  const waitServing = async (which: MemberState[], deadline: number): Promise<void> => {
    for (;;) {
      const dead = which.find((m) => !alive(m));
      if (dead) throw new Error(`etcd member ${dead.name} exited during start-up:\n${logTail(dead)}`);
      const states = await Promise.all(which.map((m) => status(m)));
      if (states.every((s) => s !== undefined && s.leader !== '0')) {
        states.forEach((s, i) => ((which[i] as MemberState).id = (s as { id: string }).id));
        return;
      }
      if (performance.now() > deadline) {
        throw new Error(`etcd did not start within ${startTimeoutMs} ms:\n${which.map((m) => `${m.name}:\n${logTail(m)}`).join('\n')}`);
      }
      await sleep(50);
    }
  };

  const attemptStart = async (attempt: number): Promise<void> => {
    const ports = await freePorts(2 * size);
    const token = `corral-test-${process.pid}-${Date.now()}-${attempt}`;
    members = [];
    for (let i = 0; i < size; i++) {
      const name = `m${i + 1}`;
      const clientPort = ports[2 * i] as number;
      const peerPort = ports[2 * i + 1] as number;
      const dataDir = join(root, `attempt${attempt}`, name);
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      members.push({
        name,
        pid: -1,
        id: '',
        clientUrl: `${clientScheme}://127.0.0.1:${clientPort}`,
        endpoint: `127.0.0.1:${clientPort}`,
        peerUrl: `http://127.0.0.1:${peerPort}`,
        dataDir,
        child: undefined,
        exited: Promise.resolve(),
        args: [],
        logFile: join(root, `attempt${attempt}`, `${name}.log`),
      });
    }
    const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
    for (const m of members) {
      m.args = [
        '--name', m.name,
        '--data-dir', m.dataDir,
        '--listen-client-urls', m.clientUrl,
        '--advertise-client-urls', m.clientUrl,
        '--listen-peer-urls', m.peerUrl,
        '--initial-advertise-peer-urls', m.peerUrl,
        '--initial-cluster', initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', token,
        '--heartbeat-interval', String(heartbeat),
        '--election-timeout', String(election),
        '--logger', 'zap',
        '--log-outputs', 'stderr',
        ...(tlsFiles
          ? ['--cert-file', tlsFiles.cert, '--key-file', tlsFiles.key, '--trusted-ca-file', tlsFiles.ca, ...(options.tls?.clientCertAuth ? ['--client-cert-auth'] : [])]
          : []),
      ];
      launch(m);
    }
    await waitServing(members, performance.now() + startTimeoutMs);
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await Promise.all(members.map(terminate));
    await rm(root, { recursive: true, force: true });
  };

  // Free ports are found before etcd binds them; another process may take one meanwhile. Retry
  // a few times on "address already in use", fail at once on anything else.
  for (let attempt = 1; ; attempt++) {
    try {
      await attemptStart(attempt);
      break;
    } catch (err) {
      await Promise.all(members.map(terminate));
      const inUse = err instanceof Error && /address already in use/i.test(err.message);
      if (!inUse || attempt >= 3) {
        await rm(root, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const cluster: EtcdCluster = {
    endpoints: members.map((m) => m.endpoint),
    members,
    heartbeatIntervalMs: heartbeat,
    electionTimeoutMs: election,
    async leader(timeoutMs = 10_000) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const live = members.filter(alive);
        const states = await Promise.all(live.map((m) => status(m, 500)));
        const leaders = new Set(states.filter((s) => s !== undefined && s.leader !== '0').map((s) => s?.leader));
        const [only] = leaders;
        const found = leaders.size === 1 ? members.find((m) => m.id === only && alive(m)) : undefined;
        if (found) return found;
        if (performance.now() > deadline) throw new Error(`the etcd members did not agree on a live leader within ${timeoutMs} ms`);
        await sleep(50);
      }
    },
    running(member) {
      return alive(member as MemberState);
    },
    kill(member, signal = 'SIGKILL') {
      const m = member as MemberState;
      if (!alive(m)) throw new Error(`etcd member ${m.name} is not running`);
      process.kill(m.pid, signal);
    },
    async restart(member) {
      const m = member as MemberState;
      if (stopped) throw new Error('the etcd cluster was stopped');
      await terminate(m);
      launch(m);
      await waitServing([m], performance.now() + startTimeoutMs);
    },
    stop,
  };
  return cluster;
}
