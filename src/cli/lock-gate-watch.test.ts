// An orphaned command's gate watches the agent (issue 4c): `corral lock` killed while CMD runs
// attached, then the agent killed too, on etcd, where the lock's lease counts on while the agent is
// down. Kept down, the gate stops CMD's group before the lease can expire (before a holder through
// the other agent gets in); restarted at once, the agent takes the lock back, the gate sees it
// confirmed, and CMD runs on, holding the lock, until it ends.

import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LockListingWire } from '../api/lock-wire.js';
import { EtcdLockCluster, LockTestDir, timedEvents, type Holder } from '../testkit/lock.js';
import { sleep, waitUntil } from '../testkit/local.js';
import { isProcessAlive } from '../util/process.js';

const td = new LockTestDir();
const cluster = new EtcdLockCluster(2);

/** Wall-clock nanoseconds as `date +%s%N` writes them. */
const now = (): bigint => BigInt(Date.now()) * 1_000_000n;

/** Waits for `what` in `file`; a holder that exits first fails the wait with its stderr. */
async function appears(file: string, what: string, holder?: Holder, timeoutMs = 20_000): Promise<bigint> {
  let gone = false;
  void holder?.exited.then(() => (gone = true));
  const { value } = await waitUntil(
    `${what} in ${path.basename(file)}`,
    () => {
      const at = timedEvents(file).get(what);
      if (at === undefined && gone) throw new Error(`the holder exited before ${what}: ${holder?.stderr() ?? ''}`);
      return Promise.resolve(at);
    },
    timeoutMs,
    10,
  );
  return value;
}

/** CMD: logs `enter`, its pid, then a `beat` every 20 ms until `go` exists (at most 60 s), then `leave`. */
function beating(log: string, go: string): string {
  return `echo pid $$ >> ${log}; echo enter $(date +%s%N) >> ${log}; i=0; while [ ! -e ${go} ] && [ $i -lt 3000 ]; do sleep 0.02; echo beat $(date +%s%N) >> ${log}; i=$((i+1)); done; echo leave $(date +%s%N) >> ${log}`;
}

/** The shell's pid, as CMD logged it. */
function cmdPid(log: string): number {
  const line = readFileSync(log, 'utf8').split('\n').find((l) => l.startsWith('pid '));
  return Number(line?.split(' ')[1]);
}

async function holders(resource: string): Promise<LockListingWire['resources'][number]['holders']> {
  const r = await td.corral(['locks', '--json', '--config', cluster.config]);
  assert.equal(r.code, 0, r.stderr);
  const listing = JSON.parse(r.stdout) as LockListingWire;
  return listing.resources.find((x) => x.name === resource)?.holders ?? [];
}

/**
 * A beating CMD holding `resource` through corral lock, which is then SIGKILLed: CMD runs on,
 * orphaned, its gate (having asked the agent itself by now) watching the lock.
 */
async function orphanedHolder(name: string, resource: string): Promise<{ log: string; go: string; first: ReturnType<typeof td.start>; pid: number }> {
  const log = path.join(td.dir, `${name}.log`);
  const go = path.join(td.dir, `${name}.go`);
  const first = td.start(['lock', '--config', cluster.config, '-r', resource, '--', 'sh', '-c', beating(log, go)]);
  await appears(log, 'enter', first);
  const pid = cmdPid(log);
  process.kill(first.pid, 'SIGKILL');
  await first.exited;
  await sleep(300);
  return { log, go, first, pid };
}

describe('an orphaned command’s gate watches the agent (etcd: the lease counts on while the agent is down)', { timeout: 150_000 }, () => {
  before(() => cluster.start());
  after(async () => {
    await td.destroy();
    await cluster.stop();
  });

  it('corral lock and then the agent killed and kept down: the gate stops CMD before the lease expires and another holder gets in', async (t) => {
    const { log, go, first, pid } = await orphanedHolder('down', 'gwdown');
    assert.ok(isProcessAlive(pid), 'CMD runs on while the agent keeps the lock');
    process.kill(cluster.local.pid('n1'), 'SIGKILL');
    const killedAt = now();
    // n1's socket refuses: this one goes through n2, and gets in once the lease has expired on etcd.
    const second = td.start(['lock', '--config', cluster.config, '-r', 'gwdown', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]);
    try {
      assert.equal((await second.exited).code, 0, second.stderr());
      const e = timedEvents(log);
      const secondAt = e.get('second') as bigint;
      const lastBeat = e.get('beat') as bigint;
      t.diagnostic(`after the agent's death: CMD's last beat ${(lastBeat - killedAt) / 1_000_000n} ms, the second holder in ${(secondAt - killedAt) / 1_000_000n} ms`);
      assert.ok(lastBeat < secondAt, `CMD's last beat (${lastBeat}) comes before the second holder's enter (${secondAt})`);
      assert.ok(secondAt - killedAt > 2_000_000_000n, `the second holder got in only once the lease had expired (${(secondAt - killedAt) / 1_000_000n} ms after the agent died)`);
      assert.equal(e.get('leave'), undefined, 'CMD was stopped, it did not end by itself');
      assert.ok(!isProcessAlive(pid), 'CMD is gone');
      await waitUntil('the gate’s message', () => Promise.resolve(/LOCK_LOST/.test(first.stderr()) ? true : undefined), 5000);
      assert.match(first.stderr(), /has not confirmed it in time/);
    } finally {
      writeFileSync(go, '');
      await cluster.local.up(); // n1 back for the next test
    }
  });

  it('corral lock and then the agent killed, the agent restarted at once: it takes the lock back, CMD runs on holding it, and the lock is released when CMD ends', async (t) => {
    const { log, go, first, pid } = await orphanedHolder('back', 'gwback');
    process.kill(cluster.local.pid('n1'), 'SIGKILL');
    const t0 = performance.now();
    await cluster.local.up();
    const upMs = performance.now() - t0;
    t.diagnostic(`the agent restarted (local up) in ${Math.round(upMs)} ms`);
    try {
      // Past the lock session's 5 s TTL since the kill: the lease would have expired by now.
      await sleep(Math.max(0, 7000 - (performance.now() - t0)));
      assert.ok(isProcessAlive(pid), `CMD runs on (the agent restarted in ${Math.round(upMs)} ms); gate said: ${first.stderr()}`);
      assert.doesNotMatch(first.stderr(), /LOCK_LOST/);
      const held = await holders('gwback');
      assert.equal(held.length, 1, JSON.stringify(held));
      assert.equal(held[0]?.orphaned, true);
    } finally {
      writeFileSync(go, '');
    }
    await appears(log, 'leave');
    await waitUntil('the lock released', async () => ((await holders('gwback')).length === 0 ? true : undefined), 10_000, 100);
    const t1 = performance.now();
    const next = await td.corral(['lock', '--config', cluster.config, '-r', 'gwback', '-o', '0', '--', 'true']);
    assert.equal(next.code, 0, next.stderr);
    assert.ok(performance.now() - t1 < 5000);
    assert.ok(existsSync(log));
  });
});
