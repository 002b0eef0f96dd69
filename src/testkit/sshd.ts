// A real OpenSSH server for tests and benchmarks, on loopback only: Debian's /usr/sbin/sshd run as
// a child (-D -e -f CONFIG) on a free port, with a throwaway host key and user key (ssh-keygen),
// its own authorized_keys, a known_hosts that pins the host key, and an ssh_config that clients
// are pointed at (`ssh -F FILE`; corral reads it from CORRAL_SSH_CONFIG, pdsh from PDSH_SSH_ARGS,
// clush from -o). Nothing outside its temporary directory is used or changed, except that sshd
// needs /run/sshd when it runs as root (created if missing, as the Debian service does).
//
// Several loopback addresses (127.0.0.2, 127.0.0.3, ...) act as several hosts; sshd listens on at
// most 16 addresses, so more take several sshd processes on the same port. With `homes`, a
// session on each address starts in a directory of its own (ForceCommand cd DIR), so that hosts
// sharing this machine do not share files, like `corral local`'s nodes.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const SSHD = '/usr/sbin/sshd';
const PER_PROCESS = 16;

/** Why SSH tests cannot run here, or undefined when they can. */
export function sshdMissing(): string | undefined {
  if (!existsSync(SSHD)) return `${SSHD} is missing: install openssh-server (apt-get install openssh-server)`;
  for (const tool of ['ssh', 'ssh-keygen']) {
    if (spawnSync(tool, ['-V'], { stdio: 'ignore' }).error) return `${tool} is missing: install openssh-client`;
  }
  return undefined;
}

export interface SshdOptions {
  /** Loopback addresses to serve (default ["127.0.0.1"]). */
  addresses?: string[];
  /** A start directory per address (DIR/homes/ADDRESS) instead of the user's home. */
  homes?: boolean;
  /** Client key exchange (default: curve25519-sha256, fast; "default" keeps OpenSSH's own). */
  kex?: string;
}

export interface Sshd {
  dir: string;
  port: number;
  addresses: string[];
  /** ssh_config for `ssh -F`: the user, port, key and known_hosts of this server. */
  sshConfig: string;
  knownHosts: string;
  /** The environment that points corral at this server. */
  env: { CORRAL_SSH_CONFIG: string };
  /** The directory sessions on `address` start in. */
  home(address: string): string;
  /** Writes a hosts file (one line each) in the fixture's directory; returns its path. */
  hostsFile(lines: string[], name?: string): string;
  /** Another ssh_config, identical but for known_hosts (e.g. a wrong key: host key mismatch). */
  configWithKnownHosts(text: string, name: string): string;
  /** `[address]:port keytype key` lines, the known_hosts of this server. */
  knownHostsLines(addresses?: string[]): string;
  pids(): number[];
  log(): string;
  stop(): Promise<void>;
}

function keygen(file: string): void {
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'corral-test', '-f', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.setTimeout(1000, () => done(false));
  });
}

export async function startSshd(options: SshdOptions = {}): Promise<Sshd> {
  const addresses = options.addresses ?? ['127.0.0.1'];
  for (const a of addresses) if (!/^127\.\d+\.\d+\.\d+$/.test(a)) throw new Error(`startSshd: ${a} is not a loopback address`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-sshd-'));
  const user = os.userInfo().username;
  keygen(path.join(dir, 'host_key'));
  keygen(path.join(dir, 'user_key'));
  writeFileSync(path.join(dir, 'authorized_keys'), readFileSync(path.join(dir, 'user_key.pub')), { mode: 0o600 });
  const hostKeyPub = readFileSync(path.join(dir, 'host_key.pub'), 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  if (process.geteuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const homes = new Map<string, string>();
  for (const a of addresses) {
    const home = options.homes ? path.join(dir, 'homes', a) : os.homedir();
    if (options.homes) mkdirSync(home, { recursive: true });
    homes.set(a, home);
  }

  let children: ChildProcess[] = [];
  let logText = '';
  let port = 0;
  const groups: string[][] = [];
  for (let i = 0; i < addresses.length; i += PER_PROCESS) groups.push(addresses.slice(i, i + PER_PROCESS));
  const stopAll = async (): Promise<void> => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const timer = setTimeout(() => {
              try {
                process.kill(-(child.pid as number), 'SIGKILL');
              } catch {
                // gone
              }
            }, 3000);
            child.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            try {
              process.kill(-(child.pid as number), 'SIGTERM');
            } catch {
              resolve();
            }
          }),
      ),
    );
    children = [];
  };

  // Another process may take the port between the probe and sshd's bind: try a few ports.
  for (let attempt = 0; attempt < 5; attempt++) {
    port = await freePort();
    children = groups.map((group, g) => {
      const lines = [
        `Port ${port}`,
        ...group.map((a) => `ListenAddress ${a}`),
        `HostKey ${path.join(dir, 'host_key')}`,
        `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        // The key files live under /tmp, which StrictModes would refuse (world-writable).
        'StrictModes no',
        'PidFile none',
        'MaxStartups 200',
        'MaxSessions 64',
        'PrintMotd no',
        'PrintLastLog no',
        'LogLevel INFO',
        ...(options.homes ? group.flatMap((a) => [`Match LocalAddress ${a}`, `  ForceCommand cd ${homes.get(a) as string} && exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"`]) : []),
      ];
      const config = path.join(dir, `sshd_config.${g}`);
      writeFileSync(config, lines.join('\n') + '\n');
      const child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
      child.stderr?.on('data', (d: Buffer) => (logText = (logText + d.toString()).slice(-64 * 1024)));
      return child;
    });
    const deadline = Date.now() + 15_000;
    let ready = false;
    while (Date.now() < deadline) {
      if (children.some((c) => c.exitCode !== null || c.signalCode !== null)) break;
      const ok = await Promise.all(groups.map((group) => canConnect(group[0] as string, port)));
      if (ok.every(Boolean)) {
        ready = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (ready) break;
    await stopAll();
    if (attempt === 4 || !/Address already in use|Cannot bind/.test(logText)) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`sshd did not start on port ${port}:\n${logText}`);
    }
  }

  const knownHostsLines = (list = addresses): string => list.map((a) => `[${a}]:${port} ${hostKeyPub}\n`).join('');
  const knownHosts = path.join(dir, 'known_hosts');
  writeFileSync(knownHosts, knownHostsLines());
  const configText = (known: string): string =>
    [
      'Host *',
      `  User ${user}`,
      `  Port ${port}`,
      `  IdentityFile ${path.join(dir, 'user_key')}`,
      '  IdentitiesOnly yes',
      `  UserKnownHostsFile ${known}`,
      '  GlobalKnownHostsFile /dev/null',
      '  StrictHostKeyChecking yes',
      '  PasswordAuthentication no',
      '  KbdInteractiveAuthentication no',
      ...(options.kex === 'default' ? [] : [`  KexAlgorithms ${options.kex ?? 'curve25519-sha256'}`]),
      '',
    ].join('\n');
  const sshConfig = path.join(dir, 'ssh_config');
  writeFileSync(sshConfig, configText(knownHosts));

  return {
    dir,
    port,
    addresses,
    sshConfig,
    knownHosts,
    env: { CORRAL_SSH_CONFIG: sshConfig },
    home: (address) => homes.get(address) ?? os.homedir(),
    hostsFile(lines, name = 'hosts') {
      const file = path.join(dir, name);
      writeFileSync(file, lines.join('\n') + '\n');
      return file;
    },
    configWithKnownHosts(text, name) {
      const known = path.join(dir, `known_hosts.${name}`);
      writeFileSync(known, text);
      const file = path.join(dir, `ssh_config.${name}`);
      writeFileSync(file, configText(known));
      return file;
    },
    knownHostsLines,
    pids: () => children.map((c) => c.pid as number),
    log: () => logText,
    async stop() {
      await stopAll();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A TCP port on `host` (loopback) that nobody listens on: a host that is down, for hosts files. */
export function closedPort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
