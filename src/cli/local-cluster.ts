// A local cluster: N agents named n1..nN on loopback, each with its own directories under DIR,
// started in the background and stopped by pid. For trials, tests and benchmarks.

import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorralError, isCorralError } from '../api/errors.js';
import type { StatusResponse } from '../api/types.js';
import { CorralClient } from '../client/client.js';
import { loadClusterConfig, parseHostPort, type ClusterConfig, type NodeConfig, type StoreConfig } from '../config/cluster-config.js';
import { isProcessAlive } from '../util/process.js';
import { bootstrapCluster } from './bootstrap.js';

/** The `corral` executable at the repository root. */
export const CORRAL_BIN = fileURLToPath(new URL('../../../bin/corral', import.meta.url));

export function nodeDir(dir: string, node: string): string {
  return path.join(dir, node);
}

function pidFile(dir: string, node: string): string {
  return path.join(nodeDir(dir, node), 'agent.pid');
}

export function logFile(dir: string, node: string): string {
  return path.join(nodeDir(dir, node), 'agent.log');
}

/** Ports the kernel hands out right now on 127.0.0.1 (released before use; a race we accept for trials). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise<net.Server>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** Whether `pid` is the agent for `node` of this config (guards against a reused pid). */
export function isOurAgent(pid: number, configFile: string, node: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const at = argv.indexOf('agent');
    return at !== -1 && argv.includes(configFile) && argv[argv.indexOf('--node') + 1] === node;
  } catch {
    return false;
  }
}

export interface AgentProcess {
  node: string;
  pid: number;
}

/** Agents of this local cluster that are running now. */
export function runningAgents(config: ClusterConfig, dir: string): AgentProcess[] {
  const running: AgentProcess[] = [];
  for (const n of config.nodes) {
    const file = pidFile(dir, n.name);
    if (!existsSync(file)) continue;
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid) && isOurAgent(pid, config.file, n.name)) running.push({ node: n.name, pid });
  }
  return running;
}

/** Parses `etcd://HOST:PORT[,HOST:PORT...]` (plain endpoints; TLS is configured in corral.yaml). */
export function parseStoreUrl(url: string): StoreConfig {
  const m = /^etcd:\/\/(.+)$/.exec(url);
  if (!m) throw new CorralError('USAGE', `--store ${JSON.stringify(url)}: expected embedded or etcd://HOST:PORT[,HOST:PORT...]`);
  const endpoints = (m[1] as string).split(',').map((e) => e.trim());
  for (const e of endpoints) {
    if (!parseHostPort(e)) throw new CorralError('USAGE', `--store: ${JSON.stringify(e)} is not HOST:PORT`);
  }
  return { backend: 'etcd', endpoints, prefix: '', tls: undefined };
}

export function createLocalCluster(dir: string, count: number, ports: number[], store?: StoreConfig): ClusterConfig {
  const nodes = Array.from({ length: count }, (_, i) => {
    const name = `n${i + 1}`;
    return {
      name,
      address: `127.0.0.1:${ports[i] as number}`,
      socket: `${name}/agent.sock`,
      dataDir: `${name}/data`,
      workDir: `${name}/work`,
    };
  });
  const socketPath = path.join(dir, 'n1', 'agent.sock');
  if (Buffer.byteLength(socketPath) > 107 - String(count).length) {
    throw new CorralError('USAGE', `${dir} is too long a path for agent sockets (UNIX sockets allow 107 bytes); choose a shorter --dir`);
  }
  bootstrapCluster({ dir, cluster: 'local', coordinator: 'n1', nodes, join: `127.0.0.1:${ports[count] as number}`, ...(store ? { store } : {}) });
  return loadClusterConfig(path.join(dir, 'corral.yaml'));
}

function spawnAgent(config: ClusterConfig, dir: string, node: NodeConfig, env: NodeJS.ProcessEnv): AgentProcess {
  mkdirSync(nodeDir(dir, node.name), { recursive: true });
  const log = openSync(logFile(dir, node.name), 'a');
  try {
    const child = spawn(process.execPath, [CORRAL_BIN, 'agent', '--config', config.file, '--node', node.name], {
      cwd: dir,
      detached: true,
      stdio: ['ignore', log, log],
      env,
    });
    if (child.pid === undefined) throw new CorralError('INTERNAL', `could not start the agent for ${node.name}`);
    child.unref();
    writeFileSync(pidFile(dir, node.name), `${child.pid}\n`);
    return { node: node.name, pid: child.pid };
  } finally {
    closeSync(log);
  }
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface FormOptions {
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
}

export interface Formation {
  started: AgentProcess[];
  status: StatusResponse;
  formationMs: number;
}

/** Whether every configured node is up and a master is elected. */
export function isFormed(config: ClusterConfig, s: StatusResponse): boolean {
  const up = new Set(s.nodes.filter((n) => n.state === 'up').map((n) => n.name));
  return s.master !== null && config.nodes.every((n) => up.has(n.name));
}

/** Starts the agents that are not running and waits until the cluster is formed. */
export async function startLocalCluster(config: ClusterConfig, dir: string, options: FormOptions): Promise<Formation> {
  const t0 = performance.now();
  const running = new Set(runningAgents(config, dir).map((a) => a.node));
  const env = { ...(options.env ?? process.env) };
  const started = config.nodes.filter((n) => !running.has(n.name)).map((n) => spawnAgent(config, dir, n, env));
  const client = new CorralClient(config, { requestTimeoutMs: 1000 });
  const deadline = t0 + options.timeoutMs;
  let last: StatusResponse | undefined;
  let lastError = '';
  try {
    while (performance.now() < deadline) {
      for (const a of started) {
        if (!isProcessAlive(a.pid)) {
          throw new CorralError('UNAVAILABLE', `the agent of ${a.node} exited during start-up; its log (${logFile(dir, a.node)}) ends with:\n${tail(logFile(dir, a.node), 8)}`);
        }
      }
      try {
        last = await client.status();
        // A restarted agent counts only once the store shows its new pid: the killed incarnation's
        // membership lingers until its lease expires and would look up before the new one serves.
        const current = last;
        const fresh = started.every((a) => current.nodes.some((n) => n.name === a.node && n.state === 'up' && n.pid === a.pid));
        if (isFormed(config, last) && fresh) return { started, status: last, formationMs: performance.now() - t0 };
      } catch (err) {
        if (!isCorralError(err, 'UNAVAILABLE') && !isCorralError(err, 'STORE_UNAVAILABLE') && !isCorralError(err, 'TIMEOUT')) throw err;
        lastError = err.message;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  } finally {
    await client.close();
  }
  const up = last ? last.nodes.filter((n) => n.state === 'up').map((n) => n.name).join(', ') || 'none' : 'unknown';
  throw new CorralError('TIMEOUT', `the cluster did not form within ${options.timeoutMs} ms (up: ${up}; master: ${last?.master ?? 'none'}${lastError ? `; last error: ${lastError}` : ''})`);
}

export interface StopResult {
  node: string;
  pid: number;
  forced: boolean;
}

/** Stops every running agent of the local cluster: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopLocalCluster(config: ClusterConfig, dir: string, graceMs: number): Promise<StopResult[]> {
  const agents = runningAgents(config, dir);
  for (const a of agents) {
    try {
      process.kill(a.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = performance.now() + graceMs;
  const results: StopResult[] = [];
  for (const a of agents) {
    while (isProcessAlive(a.pid) && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    let forced = false;
    if (isProcessAlive(a.pid) && isOurAgent(a.pid, config.file, a.node)) {
      process.kill(a.pid, 'SIGKILL');
      forced = true;
      const killDeadline = performance.now() + 2000;
      while (isProcessAlive(a.pid) && performance.now() < killDeadline) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    results.push({ node: a.node, pid: a.pid, forced });
  }
  for (const n of config.nodes) rmSync(pidFile(dir, n.name), { force: true });
  return results;
}
