// The supervisor as a library (what the agent will host): its status snapshot, its event stream,
// validation on reload, and two promises that are hard to see from the CLI: no signal ever goes
// to a pid (or its group) after the process was reaped, and a command that cannot be started
// neither throws nor loops.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isCorralError } from '../api/errors.js';
import { sleep, waitUntil } from './fixtures.js';
import { Supervisor } from './supervisor.js';
import { RespawnCounter } from './throttle.js';
import type { GroupSpec, SupervisorEvent } from './types.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'corral-supervisor-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const FAST = { stop: { termAfterMs: 300, killAfterMs: 600 } };

function supervisor(groups: GroupSpec[], extra: Partial<ConstructorParameters<typeof Supervisor>[0]> = {}): Supervisor {
  return new Supervisor({ config: { groups }, logDir: path.join(tmp, String(Math.random()).slice(2)), guard: false, ...extra }).start();
}

function groupState(s: Supervisor, name: string): string {
  const g = s.groupStatus(name);
  return `${String(g?.level)} ${String(g?.state)}`;
}

describe('the supervisor library', () => {
  it('counts respawns as Cluster::Init: the 7th quick exit pauses, slow ones wear the count down', () => {
    const c = new RespawnCounter();
    const t = { limit: 5, windowMs: 1000, pauseMs: 60_000 };
    const verdicts = [0, 10, 20, 30, 40, 50, 60].map((ms) => c.tooRapid(ms, t));
    assert.deepEqual(verdicts, [false, false, false, false, false, false, true], '7 runs: the 7th quick exit pauses');
    assert.equal(c.tooRapid(60_100, t), false, 'after the pause: one slow exit lowers the count');
    assert.equal(c.tooRapid(60_200, t), true, 'and the next quick one pauses again');
  });

  it('never signals a pid or its group after the process was reaped', async () => {
    const sent: { target: number; signal: string }[] = [];
    const reaped = new Set<number>();
    const violations: string[] = [];
    const realKill = process.kill.bind(process);
    process.kill = ((pid: number, signal?: string | number) => {
      const target = Math.abs(pid);
      if (reaped.has(target)) violations.push(`${String(signal)} to ${pid} after it was reaped`);
      sent.push({ target, signal: String(signal) });
      return realKill(pid, signal);
    });
    const s = supervisor([
      {
        name: 'g',
        ...FAST,
        entries: [
          { tag: 'w', levels: '1', mode: 'wait', command: 'true' },
          { tag: 'o', levels: '1', mode: 'once', command: 'exit 3' },
          { tag: 't', levels: '1', mode: 'test', command: 'true' },
          { tag: 'q', levels: '1', mode: 'respawn', command: 'sleep 0.05' },
          { tag: 'r', levels: '1', mode: 'respawn', command: "trap '' INT; exec sleep 30" },
        ],
      },
    ]);
    const pids = new Map<string, number>();
    s.subscribe((e) => {
      if (e.kind !== 'process') return;
      if (e.pid !== null) pids.set(e.tag, e.pid);
      if (e.exit) reaped.add(pids.get(e.tag) as number);
    });
    try {
      s.tell('g', '1');
      await waitUntil('g DONE', () => groupState(s, 'g') === '1 DONE');
      await sleep(300); // q exits and respawns a few times; w, o and t are long reaped
      s.tell('g', '2'); // stops q and r: r ignores SIGINT and needs SIGTERM
      await waitUntil('g 2 DONE', () => groupState(s, 'g') === '2 DONE', 5_000);
      s.tell('g', '1');
      await waitUntil('g DONE again', () => groupState(s, 'g') === '1 DONE');
      await s.close();
    } finally {
      process.kill = realKill;
    }
    assert.ok(reaped.size >= 6, `processes reaped: ${reaped.size}`);
    assert.ok(sent.some((k) => k.signal === 'SIGTERM'), 'the ladder reached SIGTERM for r');
    assert.deepEqual(violations, []);
  });

  it('counts a command that cannot be started as a failed run: no exception, no spin (respawn is throttled)', async () => {
    const events: SupervisorEvent[] = [];
    const s = supervisor(
      [
        {
          name: 'g',
          entries: [
            { tag: 'w', levels: '1', mode: 'wait', command: 'true' },
            { tag: 'o', levels: '1', mode: 'once', command: 'true' },
            { tag: 't', levels: '1', mode: 'test', command: 'true' },
          ],
        },
        { name: 'r', throttle: { limit: 5, windowMs: 1000, pauseMs: 60_000 }, entries: [{ tag: 'r1', levels: '1', mode: 'respawn', command: 'true' }] },
      ],
      { shell: '/nonexistent/sh' },
    );
    s.subscribe((e) => events.push(e));
    s.tell('g', '1');
    s.tell('r', '1');
    await waitUntil('g FAILED', () => groupState(s, 'g') === '1 FAILED');
    const g = s.groupStatus('g');
    assert.equal(g?.processes.find((p) => p.tag === 'w')?.state, 'DONE');
    assert.match(String(g?.processes.find((p) => p.tag === 'w')?.lastExit?.error), /ENOENT/);
    assert.equal(g?.processes.find((p) => p.tag === 't')?.state, 'FAIL');
    await waitUntil('the throttle warning', () => events.some((e) => e.kind === 'warning' && e.message === 'r1 respawning too rapidly: sleeping 60 seconds'));
    const runs = s.groupStatus('r')?.processes[0]?.runs;
    await sleep(300);
    assert.equal(s.groupStatus('r')?.processes[0]?.runs, runs, 'paused, not spinning');
    assert.equal(runs, 7);
    assert.equal(s.groupStatus('r')?.processes[0]?.paused, true);
    await s.close();
  });

  it('reports a status snapshot and a stream of transitions; logs are where it says', async () => {
    const s = supervisor([{ name: 'web', ...FAST, entries: [{ tag: 'srv', levels: ['up', 'busy'], mode: 'respawn', command: 'echo serving; exec sleep 30' }] }]);
    const stream = s.events();
    s.tell('web', 'up');
    const seen: string[] = [];
    for await (const e of stream) {
      if (e.kind === 'group') seen.push(`${e.from}>${e.to}@${String(e.level)}`);
      if (e.kind === 'group' && e.to === 'DONE') break;
    }
    assert.deepEqual(seen, ['CONFIGURED>STARTING@up', 'STARTING>CHECKING@up', 'CHECKING>DONE@up']);
    const status = s.status();
    const srv = status.groups[0]?.processes[0];
    assert.equal(status.groups[0]?.state, 'DONE');
    assert.equal(srv?.state, 'DONE');
    assert.equal(srv?.runs, 1);
    assert.ok(srv?.pid && srv.pid > 1);
    assert.equal(srv?.log, path.join(s.logDir, 'web', 'srv.log'));
    assert.equal(s.logPath('web', 'srv'), srv?.log);
    await waitUntil('the log line', () => {
      try {
        return readFileSync(srv?.log, 'utf8') === 'serving\n';
      } catch {
        return false;
      }
    });
    assert.throws(() => s.tell('web', 'two words'), (err) => isCorralError(err, 'BAD_REQUEST'));
    assert.throws(() => s.tell('nope', '1'), (err) => isCorralError(err, 'NOT_FOUND') && err.message === 'no such group: nope');
    s.tell('web', 'busy');
    await waitUntil('busy', () => groupState(s, 'web') === 'busy DONE');
    assert.equal(s.groupStatus('web')?.processes[0]?.pid, srv?.pid, 'an explicit level list: in both levels, kept running');
    await s.close();
    stream.close();
  });

  it('validates a reload before applying it; removes deleted groups after halting them', async () => {
    const s = supervisor([
      { name: 'a', ...FAST, entries: [{ tag: 'a1', levels: '1', mode: 'respawn', command: 'exec sleep 30' }] },
      { name: 'b', ...FAST, entries: [{ tag: 'b1', levels: '1', mode: 'respawn', command: 'exec sleep 30' }] },
    ]);
    s.tell('a', '1');
    s.tell('b', '1');
    await waitUntil('both DONE', () => groupState(s, 'a') === '1 DONE' && groupState(s, 'b') === '1 DONE');
    const before = JSON.stringify(s.groupLines());
    assert.throws(
      () => s.reload({ groups: [{ name: 'a', entries: [{ tag: 'x', levels: '1', mode: 'respawn', command: 'x' }, { tag: 'x', levels: '2', mode: 'once', command: 'y' }] }] }),
      (err) => isCorralError(err, 'CONFIG_INVALID') && /duplicate tag x/.test(err.message),
    );
    assert.equal(JSON.stringify(s.groupLines()), before, 'nothing changed');
    const removed = new Promise<void>((resolve) => s.subscribe((e) => e.kind === 'removed' && e.group === 'b' && resolve()));
    const summary = s.reload({ groups: [{ name: 'a', ...FAST, entries: [{ tag: 'a1', levels: '1', mode: 'respawn', command: 'exec sleep 30' }] }, { name: 'c', entries: [] }] });
    assert.deepEqual(summary, { added: ['c'], removed: ['b'], changed: [] });
    await removed;
    assert.equal(s.groupStatus('b'), undefined);
    assert.deepEqual(
      s.groupLines().map((l) => `${l.group} ${l.level} ${l.state}`),
      ['a 1 DONE'],
    );
    await s.close();
    assert.deepEqual(
      s.groupLines().map((l) => `${l.group} ${l.level} ${l.state}`),
      ['a 1 CONFIGURED'],
      'close halted everything',
    );
  });
});
