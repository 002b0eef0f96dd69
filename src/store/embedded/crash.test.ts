// The process-crash test: a child process hosts the store and writes concurrently, printing each
// acknowledged write; we SIGKILL it mid-stream, reopen the store and check that every acknowledged
// write is there with its revision, and that nothing acknowledged is ever handed out again.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { withStore, withTempDir } from './fixtures.js';

const CHILD = fileURLToPath(new URL('./crash-child.js', import.meta.url));
const ROUND_TIMEOUT_MS = 20_000;

interface Acknowledged {
  puts: Map<string, bigint>;
  leases: bigint[];
}

/** Runs the child until it has acknowledged `killAfter` puts, then SIGKILLs it. */
async function runAndKill(dataDir: string, killAfter: number, acked: Acknowledged): Promise<void> {
  const child = spawn(process.execPath, [CHILD, dataDir, '16'], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the child acknowledged too few puts in ${ROUND_TIMEOUT_MS} ms`)), ROUND_TIMEOUT_MS);
      let pending = '';
      let puts = 0;
      child.stdout?.on('data', (chunk: Buffer) => {
        const lines = (pending + chunk.toString('utf8')).split('\n');
        pending = lines.pop() ?? ''; // an incomplete last line is not an acknowledgement
        for (const line of lines) {
          const [kind, a, b] = line.split(' ');
          if (kind === 'put' && a !== undefined && b !== undefined) {
            acked.puts.set(a, BigInt(b));
            puts++;
          } else if (kind === 'lease' && a !== undefined) acked.leases.push(BigInt(a));
        }
        if (puts >= killAfter && child.exitCode === null) {
          child.kill('SIGKILL'); // mid-stream: writers are still running
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (signal !== 'SIGKILL') reject(new Error(`the child exited early (code ${code}, signal ${signal})`));
      });
    });
  } finally {
    await killAndReap(child);
  }
}

async function killAndReap(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

describe('embedded store process crash', () => {
  it('after a SIGKILL mid-stream, every acknowledged write survives with its revision', { timeout: 120_000 }, () =>
    withTempDir(async (dataDir) => {
      const acked: Acknowledged = { puts: new Map(), leases: [] };
      for (const killAfter of [300, 1_500, 4_000]) {
        await runAndKill(dataDir, killAfter, acked);
        await withStore({ dataDir }, async (store) => {
          const maxRevision = [...acked.puts.values()].reduce((a, b) => (a > b ? a : b), 0n);
          for (const [key, revision] of acked.puts) {
            const { kv } = await store.get(key);
            assert.ok(kv !== undefined, `acknowledged ${key} at revision ${revision} was lost`);
            assert.equal(kv.modRevision, revision, `${key} has the revision that was acknowledged`);
            assert.equal(kv.createRevision, revision);
          }
          assert.ok((await store.revision()) >= maxRevision);
          const probe = await store.put(`probe/${killAfter}`, 'x');
          assert.ok(probe.revision > maxRevision, `revision ${probe.revision} after the crash reuses an acknowledged one`);
          const lease = await store.grantLease(5);
          for (const id of acked.leases) assert.ok(lease.id > id, `lease id ${lease.id} reuses an acknowledged one`);
          acked.leases.push(lease.id);
          acked.puts.set(`probe/${killAfter}`, probe.revision);
        });
      }
      assert.ok(acked.puts.size >= 5_800, `${acked.puts.size} acknowledged puts were checked`);
    }));
});
