// A local cluster fixture for tests: `corral local up` in a temp dir, helpers to read status and
// wait for conditions, and a teardown that stops every agent by pid and removes the directory.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { StatusResponse } from '../api/types.js';
import { isProcessAlive } from '../util/process.js';
import { runCorral, type RunResult } from './cli.js';

export const sleep = (ms: number, options: { ref?: boolean } = {}): Promise<void> =>
  new Promise((r) => {
    const t = setTimeout(r, ms);
    if (options.ref === false) t.unref();
  });

/** Polls `probe` until it returns a value, at most `timeoutMs`; returns the value and the time it took. */
export async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, everyMs = 20): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  let lastError: unknown;
  while (performance.now() - t0 < timeoutMs) {
    try {
      const value = await probe();
      if (value !== undefined) return { value, ms: performance.now() - t0 };
    } catch (err) {
      lastError = err;
    }
    await sleep(everyMs);
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${lastError instanceof Error ? lastError.message : JSON.stringify(lastError)})` : ''}`);
}

export class LocalClusterFixture {
  readonly dir: string;
  readonly config: string;

  constructor(readonly size: number) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'corral-lc-'));
    this.config = path.join(this.dir, 'corral.yaml');
  }

  corral(args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
    return runCorral(args, { ...options, env: { CORRAL_CONFIG: this.config, ...options.env } });
  }

  async up(): Promise<RunResult> {
    const r = await this.corral(['local', 'up', '-n', String(this.size), '--dir', this.dir], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, `local up failed: ${r.stderr}${r.stdout}`);
    if (process.env.CORRAL_TEST_DEBUG) {
      const { execSync } = await import('node:child_process');
      console.log('UP', r.stdout.split('\n')[0], this.pids(), execSync(`ps -eo pid,stat,args | grep ${this.dir} | grep -v grep || true`).toString());
    }
    return r;
  }

  pid(node: string): number {
    return Number(readFileSync(path.join(this.dir, node, 'agent.pid'), 'utf8').trim());
  }

  pids(): number[] {
    return Array.from({ length: this.size }, (_, i) => {
      try {
        return this.pid(`n${i + 1}`);
      } catch {
        return 0;
      }
    }).filter((p) => p > 0);
  }

  /** `corral status --json`, asking `node`'s agent first. */
  async status(node?: string): Promise<{ code: number | null; status: StatusResponse }> {
    const r = await this.corral(['status', '--json', ...(node ? ['--node', node] : [])], { timeoutMs: 15_000 });
    assert.ok(r.code === 0 || r.code === 1, `status failed (${r.code}): ${r.stderr}`);
    return { code: r.code, status: JSON.parse(r.stdout) as StatusResponse };
  }

  async waitForDeath(pid: number, timeoutMs = 10_000): Promise<void> {
    await waitUntil(`pid ${pid} to exit`, () => Promise.resolve(isProcessAlive(pid) ? undefined : true), timeoutMs, 10);
  }

  log(node: string): Promise<string> {
    return readFile(path.join(this.dir, node, 'agent.log'), 'utf8');
  }

  /**
   * Stops every agent with `local down` and removes the directory; fails if an agent survived
   * `local down` (after killing it by pid, so no test leaves a process behind either way).
   */
  async destroy(): Promise<void> {
    const pids = this.pids();
    await this.corral(['local', 'down', '--dir', this.dir], { timeoutMs: 30_000 }).catch(() => undefined);
    const survivors = pids.filter(isProcessAlive);
    for (const pid of survivors) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    assert.deepEqual(survivors, [], 'agents survived local down');
  }
}

/** A Store client over mutual TLS to the coordinator, with the cluster's admin credentials. */
export async function adminStore(configFile: string): Promise<import('../client/remote-store.js').RemoteStore> {
  const { loadClusterConfig, findNode } = await import('../config/cluster-config.js');
  const { loadAdminCredentials } = await import('../config/pki-files.js');
  const { RpcClient } = await import('../transport/client.js');
  const { RemoteStore } = await import('../client/remote-store.js');
  const config = loadClusterConfig(configFile);
  const coordinator = findNode(config, config.coordinator);
  const rpc = new RpcClient(
    { kind: 'tls', host: coordinator.address.host, port: coordinator.address.port, credentials: loadAdminCredentials(config.pkiDir), serverName: coordinator.name },
    { requestTimeoutMs: 5000, connectTimeoutMs: 5000 },
  );
  return new RemoteStore(rpc, `coordinator ${coordinator.name}`, { ownsClient: true });
}
