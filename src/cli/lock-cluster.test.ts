// Cluster-wide locks through the real CLI on a local 3-node cluster, on the embedded store and on
// etcd: FLoM's distributed use cases 7 (unicast: -a HOST -p PORT), 8 (no server named: the cluster
// configuration finds an agent) and 9 (no split brain when the agent a holder used dies), the
// coordinator (or etcd) dying under a holder, and the listing.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LockListingWire } from '../api/lock-wire.js';
import { loadClusterConfig } from '../config/cluster-config.js';
import { startEtcd, type EtcdCluster } from '../testkit/etcd.js';
import { LockTestDir, timedEvents, type Holder } from '../testkit/lock.js';
import { LocalClusterFixture, sleep, waitUntil } from '../testkit/local.js';

const events = timedEvents;

/** Waits for `what` in `file`; when `holder` is given and exits first, fails with its stderr. */
async function appears(file: string, what: string, holder?: Holder, timeoutMs = 20_000): Promise<bigint> {
  let gone: { code: number | null } | undefined;
  void holder?.exited.then((r) => (gone = r));
  try {
    const { value } = await waitUntil(
      `${what} in ${path.basename(file)}`,
      () => {
        const at = events(file).get(what);
        if (at === undefined && gone) throw new Error(`the holder exited (${String(gone.code)}) before writing ${what}: ${holder?.stderr() ?? ''}`);
        return Promise.resolve(at);
      },
      timeoutMs,
      10,
    );
    return value;
  } catch (err) {
    // A holder still waiting for its lock: what it said so far is the diagnosis.
    if (holder && !gone) throw new Error(`${(err as Error).message}; the holder still waits, its stderr: ${JSON.stringify(holder.stderr())}`, { cause: err });
    throw err;
  }
}

const holding = (log: string, tag = 'first'): string =>
  `trap 'echo term $(date +%s%N) >> ${log}; exit 1' TERM; echo ${tag} $(date +%s%N) >> ${log}; i=0; while [ $i -lt 2000 ]; do sleep 0.02; i=$((i+1)); done`;

for (const backend of ['embedded', 'etcd'] as const) {
  describe(`cluster-wide corral lock on the ${backend} store`, { timeout: 240_000 }, () => {
    const td = new LockTestDir();
    const lc = new LocalClusterFixture(3);
    let etcd: EtcdCluster | undefined;
    let port: (node: string) => string;
    const env = (): NodeJS.ProcessEnv => ({ CORRAL_CONFIG: lc.config });
    /** `corral lock` through `node`'s agent over mutual TLS (-a/-p), or the local agent (--config). */
    const via = (node: string | undefined, args: string[]): string[] => (node ? ['lock', '--config', lc.config, '-a', '127.0.0.1', '-p', port(node), ...args] : ['lock', '--config', lc.config, ...args]);

    before(async () => {
      const store: string[] = [];
      if (backend === 'etcd') {
        etcd = await startEtcd({ members: 1 });
        store.push('--store', `etcd://${etcd.endpoints.join(',')}`);
      }
      const r = await lc.corral(['local', 'up', '-n', '3', '--dir', lc.dir, ...store], { timeoutMs: 90_000 });
      assert.equal(r.code, 0, r.stderr);
      const config = loadClusterConfig(lc.config);
      port = (node) => String(config.nodes.find((n) => n.name === node)?.address.port);
    });
    after(async () => {
      await td.destroy();
      await lc.destroy();
      await etcd?.stop();
    });

    it('use case 7: commands on different nodes (-a HOST -p PORT) take turns; -d 0 as flom clients write it', async () => {
      const log = path.join(td.dir, `${backend}-uc7.log`);
      const first = td.start(via('n2', ['-d', '0', '-r', 'uc7', '--', 'sh', '-c', `echo first $(date +%s%N) >> ${log}; sleep 1; echo done $(date +%s%N) >> ${log}`]));
      await appears(log, 'first');
      const second = td.start(via('n3', ['-d', '0', '-r', 'uc7', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]));
      const third = td.start(via(undefined, ['-r', 'uc7', '--', 'sh', '-c', `echo third $(date +%s%N) >> ${log}`]));
      for (const h of [first, second, third]) assert.equal((await h.exited).code, 0, h.stderr());
      const e = events(log);
      const done = e.get('done') as bigint;
      assert.ok((e.get('second') as bigint) > done && (e.get('third') as bigint) > done, 'the others ran after the first ended');
    });

    it('use case 7: -a without the cluster’s admin credentials is a clear error (99)', async () => {
      const r = await td.corral(['lock', '--config', path.join(td.dir, 'none.yaml'), '-a', '127.0.0.1', '-p', port('n2'), '--', 'true']);
      assert.equal(r.code, 99);
      assert.match(r.stderr, /-a needs the cluster's admin credentials/);
    });

    it('use case 8: no server named — $CORRAL_CONFIG finds an agent; multicast discovery (-A) is refused with a pointer', async () => {
      const log = path.join(td.dir, `${backend}-uc8.log`);
      const first = td.start(via('n2', ['-r', 'uc8', '--', 'sh', '-c', `echo first $(date +%s%N) >> ${log}; sleep 0.8; echo done $(date +%s%N) >> ${log}`]));
      await appears(log, 'first');
      const r = await td.corral(['lock', '-r', 'uc8', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`], { env: env() });
      assert.equal(r.code, 0, r.stderr);
      assert.ok((events(log).get('second') as bigint) > (events(log).get('done') as bigint));
      assert.equal((await first.exited).code, 0);
      const multicast = await td.corral(['lock', '-A', '239.255.0.1', '-d', '0', '--', 'true'], { env: env() });
      assert.equal(multicast.code, 99);
      assert.match(multicast.stderr, /multicast discovery is not supported/);
    });

    it('corral locks --config shows holders and waiters of every node', async () => {
      const log = path.join(td.dir, `${backend}-list.log`);
      const holder = td.start(via('n2', ['-r', 'listed', '-l', 'PR', '--', 'sh', '-c', `echo first $(date +%s%N) >> ${log}; sleep 1.5`]));
      await appears(log, 'first');
      const waiter = td.start(via('n3', ['-r', 'listed', '--', 'true']));
      const { value } = await waitUntil('the waiter listed', async () => {
        const r = await td.corral(['locks', '--json'], { env: env() });
        const l = JSON.parse(r.stdout) as LockListingWire;
        const res = l.resources.find((x) => x.name === 'listed');
        return res?.waiters.length === 1 ? res : undefined;
      }, 15_000);
      assert.match(value.holders[0]?.node ?? '', /n2/);
      assert.match(value.waiters[0]?.node ?? '', /n3/);
      await Promise.all([holder.exited, waiter.exited]);
    });

    it('the library API: CorralClient.lock through the cluster, and an agent’s node certificate may lock too', async () => {
      const { CorralClient } = await import('../client/client.js');
      const { RpcClient } = await import('../transport/client.js');
      const { acquireLock } = await import('../client/locks.js');
      const { loadNodeCredentials } = await import('../config/pki-files.js');
      const config = loadClusterConfig(lc.config);
      const client = new CorralClient(config);
      const n3 = config.nodes.find((n) => n.name === 'n3');
      assert.ok(n3);
      const asNode = new RpcClient({ kind: 'tls', host: n3.address.host, port: n3.address.port, credentials: loadNodeCredentials(config.pkiDir, 'n2'), serverName: 'n3' });
      try {
        const lock = await client.lock({ resource: 'libcluster', mode: 'PW' });
        const busy = acquireLock(asNode, { resource: 'libcluster', timeoutMs: 0 });
        await assert.rejects(busy, (err) => (err as { code?: string }).code === 'LOCK_BUSY');
        await lock.release();
        const other = await acquireLock(asNode, { resource: 'libcluster', timeoutMs: 0 });
        assert.ok(other.fencingToken > lock.fencingToken);
        await other.release();
      } finally {
        await asNode.close();
        await client.close();
      }
    });

    it("use case 9: no split brain — the agent of a holder dies: it stops its command (98), and the lock moves only after that", async () => {
      const log = path.join(td.dir, `${backend}-uc9.log`);
      const first = td.start(via('n2', ['-r', 'uc9', '--', 'sh', '-c', holding(log)]));
      await appears(log, 'first');
      const second = td.start(via('n3', ['-r', 'uc9', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]));
      await sleep(300);
      process.kill(lc.pid('n2'), 'SIGKILL');
      const done = await first.exited;
      assert.equal(done.code, 98, first.stderr());
      assert.equal((await second.exited).code, 0, second.stderr());
      const e = events(log);
      assert.ok((e.get('second') as bigint) > (e.get('term') as bigint), 'the second holder came in after the first command stopped');
      await lc.up(); // n2 back
    });

    it(`the ${backend === 'etcd' ? 'etcd member' : 'coordinator'} dies under a holder: the holder is stopped (98); after the store returns, the waiter gets in`, async () => {
      const log = path.join(td.dir, `${backend}-store.log`);
      const first = td.start(via('n2', ['-r', 'storeloss', '--', 'sh', '-c', holding(log)]));
      await appears(log, 'first', first);
      const second = td.start(via('n3', ['-r', 'storeloss', '--', 'sh', '-c', `echo second $(date +%s%N) >> ${log}`]));
      await sleep(300);
      const member = etcd?.members[0];
      if (etcd && member) etcd.kill(member, 'SIGKILL');
      else process.kill(lc.pid('n1'), 'SIGKILL');
      const done = await first.exited;
      assert.equal(done.code, 98, first.stderr());
      assert.match(first.stderr(), /has not confirmed it in time|lost the lock/);
      const stoppedAt = events(log).get('term') as bigint;
      if (etcd && member) await etcd.restart(member);
      else await lc.up();
      assert.equal((await second.exited).code, 0, second.stderr());
      assert.ok((events(log).get('second') as bigint) > stoppedAt);
    });
  });
}
