// A mutual-exclusion checker through the real CLI, on both backends: a private daemon on the
// embedded store, and a local cluster whose store is a real etcd (`corral lock --config`). Workers
// run `corral lock` in loops on one resource with random modes and timeouts; each command appends
// `enter`, heartbeats and `leave` lines with its fencing token ($CORRAL_FENCE) to a shared file (a
// SIGTERM trap writes `leave` too). Meanwhile the test SIGKILLs a holder's corral lock (its command
// runs on), SIGKILLs a whole holder (corral lock and its command), SIGKILLs the server — the
// private daemon (the next corral lock starts another) or the agent (restarted at once, as systemd
// would) —, freezes a holder with SIGSTOP past the lock TTL, and freezes the server past it. On
// etcd it also SIGKILLs the etcd member and restarts it after the TTL.
//
// The checker then proves from the file alone that no two holders of incompatible modes were
// inside at once, that every grant had its own token, and that tokens rose in the order grants
// happened: a grant that certainly came first (its holder entered before the other was even
// requested, or before a conflicting holder the other had to wait for left) has the lower token.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compatible, type LockMode } from '../coord/lock/modes.js';
import { EtcdLockCluster, LockTestDir, type Holder } from '../testkit/lock.js';
import { sleep, waitUntil } from '../testkit/local.js';

const td = new LockTestDir();
after(() => td.destroy());

const MODES: LockMode[] = ['NL', 'CR', 'CW', 'PR', 'PW', 'EX'];
/** The lock session's TTL of a private daemon (src/agent/private-agent.ts) and of an agent on etcd (lock-service.ts). */
const TTL_MS = 5000;

interface Tenure {
  id: string;
  mode: LockMode;
  token: bigint;
  /** The command's process group (led by its gate, the shell's parent). */
  pgid: number;
  /** Wall-clock ns: corral lock was spawned (its request came later). */
  requested: bigint;
  enter: bigint;
  /** The last sign of life: `leave`, the last heartbeat, or when the test killed it. */
  end: bigint;
  how: 'left' | 'killed';
}

interface Run {
  id: string;
  mode: LockMode;
  requested: bigint;
  holder: Holder;
  /** Wall-clock ns when corral lock exited, and its exit code. */
  ended?: bigint;
  code?: number | null;
}

/** Only to show that the checker catches overlaps: CORRAL_TEST_MUTATE=warn leaves commands running. */
const ON_LOST = process.env.CORRAL_TEST_MUTATE === 'warn' ? ['--on-lost', 'warn'] : [];

const wallNs = (): bigint => BigInt(Date.now()) * 1_000_000n;

function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function script(log: string, id: string, mode: string, beats: number): string {
  // The process group: field 5 of /proc/$$/stat (the shell's pid is not it: its gate leads the group).
  const pg = 'read -r st < /proc/$$/stat; set -- ${st##*) }; pg=$3';
  const w = `w() { echo "$1 ${id} ${mode} $CORRAL_FENCE $pg $(date +%s%N)" >> ${log}; }`;
  return `${pg}; ${w}; trap 'w leave; exit 1' TERM; w enter; n=0; while [ $n -lt ${beats} ]; do sleep 0.02; w beat; n=$((n+1)); done; w leave`;
}

for (const backend of ['embedded', 'etcd'] as const) {
  const server = backend === 'etcd' ? 'agent' : 'daemon';
  describe(`mutual exclusion through corral lock on the ${backend} store, with holders and the ${server} killed and frozen`, { timeout: 180_000 }, () => {
    const cluster = backend === 'etcd' ? new EtcdLockCluster(1) : undefined;
    before(() => cluster?.start());
    after(() => cluster?.stop());

    it('no two incompatible holders overlap and tokens rise in grant order', async (t) => {
      const socket = td.socket();
      const where = cluster ? ['--config', cluster.config] : ['-s', socket, '-d', '-1'];
      /** The process that serves the locks: the private daemon, or the agent. */
      const serverPid = (): Promise<number> => (cluster ? Promise.resolve(cluster.local.pid('n1')) : td.daemonPid(socket));
      /** Wall-clock windows in which the agent or etcd was down: a request may fail with 99 then. */
      const outages: { from: bigint; to: bigint }[] = [];
      const log = path.join(td.dir, `${backend}-mutex.log`);
      const runs = new Map<string, Run>();
      const killedAt = new Map<string, bigint>();
      const exits: (number | null)[] = [];
      const t0 = performance.now();
      // Workers run until a second after the last disruption (about 24 s, more on a loaded machine,
      // where each wait for a holder takes longer), at most this long: a cap that chaos must never
      // reach, or its next wait for a holder would find no worker left.
      const duration = 120_000;
      let stopped = false;
      let wantLong = false;
      const longIds = new Set<string>();

      const worker = async (w: number): Promise<void> => {
        const rand = random(1000 + w);
        for (let i = 0; !stopped && performance.now() - t0 < duration; i++) {
          const id = `w${w}r${i}`;
          let mode = MODES[Math.floor(rand() * MODES.length)] as LockMode;
          const r = rand();
          let timeout = r < 0.1 ? ['-o', '0'] : r < 0.2 ? ['-o', '300'] : [];
          let beats = Math.floor(rand() * 8);
          if (w === 0 && wantLong) {
            // A long CR holder (about 7 s; it blocks EX only): the daemon dies or freezes while it
            // is inside, and its command must be stopped before an EX can get in.
            wantLong = false;
            longIds.add(id);
            [mode, timeout, beats] = ['CR', [], 300];
          }
          const run: Run = { id, mode, requested: wallNs(), holder: td.start(['lock', ...where, '-r', 'mx', '-l', mode, ...timeout, ...ON_LOST, '--', 'sh', '-c', script(log, id, mode, beats)]) };
          runs.set(id, run);
          const { code } = await run.holder.exited;
          run.ended = wallNs();
          run.code = code;
          exits.push(code);
        }
      };

      /** The holders inside now (entered, not left), from the log. */
      const inside = (): { id: string; pgid: number }[] => {
        if (!existsSync(log)) return [];
        const open = new Map<string, number>();
        for (const line of readFileSync(log, 'utf8').trim().split('\n')) {
          const [what, id, , , pgid] = line.split(' ');
          if (!id) continue;
          if (what === 'enter') open.set(id, Number(pgid));
          if (what === 'leave') open.delete(id);
        }
        return [...open].filter(([id]) => !killedAt.has(id)).map(([id, pgid]) => ({ id, pgid }));
      };
      const someHolder = async (long = false): Promise<{ id: string; pgid: number; run: Run }> => {
        try {
          const { value } = await waitUntil('a holder inside', () => {
            const h = inside().find((x) => runs.has(x.id) && long === longIds.has(x.id));
            return Promise.resolve(h ? { ...h, run: runs.get(h.id) as Run } : undefined);
          }, 20_000, 5);
          return value;
        } catch (err) {
          // What was going on: the requests still running, and what the lock service shows.
          const now = wallNs();
          const pending = [...runs.values()].filter((r) => r.ended === undefined).map((r) => `${r.id} ${r.mode}${longIds.has(r.id) ? ' (long)' : ''} for ${(now - r.requested) / 1_000_000n} ms: ${r.holder.stderr().trim().slice(-300)}`);
          const listing = await td.corral(['locks', ...where, '--json']);
          const capped = performance.now() - t0 >= duration ? ' (the workers reached their time cap)' : '';
          throw new Error(`${(err as Error).message}${capped}\nlong wanted: ${wantLong}; inside: ${JSON.stringify(inside())}\npending:\n${pending.join('\n')}\ncorral locks (exit ${listing.code}): ${listing.stdout.slice(0, 3000)}${listing.stderr}\nlog tail:\n${existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').slice(-15).join('\n') : ''}`, { cause: err });
        }
      };
      const signalGroup = (pgid: number, sig: NodeJS.Signals): void => {
        try {
          process.kill(-pgid, sig);
        } catch {
          // gone
        }
      };

      const chaos = async (): Promise<string[]> => {
        const done: string[] = [];
        /** What was done, and when (s since the start). */
        const note = (what: string): number => done.push(`${what} at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        await sleep(1500);
        // corral lock killed: its command runs on and the daemon keeps the lock for it.
        const orphan = await someHolder();
        orphan.run.holder.child.kill('SIGKILL');
        note(`killed corral lock of ${orphan.id}`);
        await sleep(1000);
        // A whole holder killed: corral lock and its command's group.
        const whole = await someHolder();
        whole.run.holder.child.kill('SIGKILL');
        signalGroup(whole.pgid, 'SIGKILL');
        killedAt.set(whole.id, wallNs() + 1_000_000n);
        note(`killed ${whole.id} and its command`);
        await sleep(1000);
        // The server killed: holders stop their commands; the next corral lock starts a daemon, or
        // the agent is restarted at once (its old session's keys keep the lock until they expire).
        wantLong = true;
        await someHolder(true);
        const killedServerAt = performance.now();
        const outage = { from: wallNs(), to: 0n };
        process.kill(await serverPid(), 'SIGKILL');
        if (cluster) {
          await cluster.local.up();
          outage.to = wallNs();
          outages.push(outage);
        }
        note(`killed the ${server}`);
        await sleep(TTL_MS + 1500 - (performance.now() - killedServerAt));
        // A holder frozen past the TTL: corral lock and its command.
        const frozen = await someHolder();
        frozen.run.holder.child.kill('SIGSTOP');
        signalGroup(frozen.pgid, 'SIGSTOP');
        await sleep(TTL_MS + 500);
        signalGroup(frozen.pgid, 'SIGCONT');
        frozen.run.holder.child.kill('SIGCONT');
        note(`froze ${frozen.id}`);
        await sleep(1000);
        // The server frozen past the TTL while someone holds.
        wantLong = true;
        await someHolder(true);
        const frozenServer = await serverPid();
        process.kill(frozenServer, 'SIGSTOP');
        await sleep(TTL_MS + 500);
        process.kill(frozenServer, 'SIGCONT');
        note(`froze the ${server}`);
        if (cluster) {
          // The etcd member killed while someone holds, and restarted after the TTL: the agent
          // cannot renew its session, so holders stop their commands before it can expire.
          await sleep(1000);
          wantLong = true;
          await someHolder(true);
          const member = cluster.etcd.members[0];
          assert.ok(member);
          const down = { from: wallNs(), to: 0n };
          outages.push(down);
          cluster.etcd.kill(member, 'SIGKILL');
          await sleep(TTL_MS + 500);
          await cluster.etcd.restart(member);
          down.to = wallNs();
          note('killed and restarted the etcd member');
        }
        return done;
      };

      const [disruptions] = await Promise.all([
        chaos().finally(() => setTimeout(() => (stopped = true), 1000)),
        ...Array.from({ length: 8 }, (_, w) => worker(w)),
      ]);
      const workersDone = (performance.now() - t0) / 1000;
      assert.equal(disruptions.length, cluster ? 6 : 5, disruptions.join('; '));

      // --- the checker -----------------------------------------------------------------------
      const tenures = new Map<string, Tenure>();
      const left = new Set<string>();
      for (const line of readFileSync(log, 'utf8').trim().split('\n')) {
        const [what, id, mode, token, pgid, at] = line.split(' ');
        if (!id || !at || !mode || !token || !pgid) continue;
        const t = BigInt(at);
        if (what === 'enter') {
          tenures.set(id, { id, mode: mode as LockMode, token: BigInt(token), pgid: Number(pgid), requested: runs.get(id)?.requested ?? 0n, enter: t, end: t, how: 'left' });
        } else {
          const tenure = tenures.get(id);
          assert.ok(tenure, `${what} of ${id} before its enter`);
          if (t > tenure.end) tenure.end = t;
          if (what === 'leave') left.add(id);
        }
      }
      // A holder killed with its command ended when it was killed (unless it had left already).
      for (const [id, at] of killedAt) {
        const tenure = tenures.get(id);
        if (tenure && !left.has(id)) {
          tenure.end = at;
          tenure.how = 'killed';
        }
      }
      const all = [...tenures.values()];
      const conflict = (a: Tenure, b: Tenure): boolean => !compatible(a.mode, b.mode);

      assert.equal(new Set(all.map((t) => t.token)).size, all.length, 'every grant has its own token');
      let pairs = 0;
      let shared = 0;
      for (const a of all) {
        for (const b of all) {
          if (a === b || a.id > b.id) continue;
          const overlap = a.enter < b.end && b.enter < a.end;
          if (!conflict(a, b)) {
            if (overlap) shared++;
            continue;
          }
          pairs++;
          assert.ok(!overlap, `incompatible holders overlapped: ${JSON.stringify([a, b], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`);
          const [first, second] = a.enter < b.enter ? [a, b] : [b, a];
          assert.ok(first.token < second.token, `${second.id} entered after ${first.id} with a lower token`);
        }
      }
      let ordered = 0;
      for (const b of all) {
        let cut = b.requested;
        for (const x of all) if (x !== b && conflict(x, b) && x.end <= b.enter && x.end > cut) cut = x.end;
        for (const a of all) {
          if (a === b || a.enter >= cut) continue;
          ordered++;
          assert.ok(a.token < b.token, `grant ${a.id} (token ${a.token}) certainly came before ${b.id} (token ${b.token})`);
        }
      }
      const unexpected = exits.filter((c) => c !== 0 && c !== 1 && c !== 98 && c !== 99 && c !== null);
      assert.deepEqual(unexpected, [], 'corral lock exits with the command’s status, 98, or was killed');
      // 99 only for a request made while the agent or etcd was down, saying that it is.
      const during = (r: Run): boolean => outages.some((o) => r.requested <= o.to && (r.ended ?? 0n) >= o.from);
      const failed = [...runs.values()].filter((r) => r.code === 99 && !(during(r) && /\[(STORE_)?UNAVAILABLE\]/.test(r.holder.stderr())));
      assert.deepEqual(failed.map((r) => `${r.id}: ${r.holder.stderr()}`), [], 'corral lock exits 99 only while the agent or etcd is down');
      t.diagnostic(`${all.length} tenures, ${pairs} conflicting pairs checked, ${shared} compatible overlaps, ${ordered} ordered pairs; ${exits.filter((c) => c === 98).length} lost (98), ${exits.filter((c) => c === 99).length} refused while down (99); ${disruptions.join('; ')}; the workers ended at ${workersDone.toFixed(1)} s`);
      assert.ok(all.length >= 40 && pairs >= 200 && shared >= 3 && ordered >= 300, `${all.length} tenures, ${pairs} conflicting pairs, ${shared} shared, ${ordered} ordered`);
      assert.ok(exits.filter((c) => c === 98).length >= 2, `holders lost their locks when the ${server} died or froze`);
    });
  });
}
