import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isProcessAlive } from '../util/process.js';
import { CORRAL, runCorral, startAgent } from '../testkit/cli.js';
import { adminStore, LocalClusterFixture, sleep, waitUntil } from '../testkit/local.js';

describe('the agent as a service', { timeout: 180_000 }, () => {
  const lc = new LocalClusterFixture(2);
  before(() => lc.up());
  after(() => lc.destroy());

  it('clients sending garbage, or nothing, to the socket do not disturb other clients', async () => {
    const socket = path.join(lc.dir, 'n2', 'agent.sock');
    const silent = net.connect(socket);
    const garbage = net.connect(socket, () => garbage.write(Buffer.from('GET / HTTP/1.1\r\n\r\n\x00\xff garbage '.repeat(50))));
    garbage.on('error', () => undefined);
    silent.on('error', () => undefined);
    try {
      for (let i = 0; i < 5; i++) {
        const { code, status } = await lc.status('n2');
        assert.equal(code, 0);
        assert.equal(status.answeredBy, 'n2');
      }
    } finally {
      silent.destroy();
      garbage.destroy();
    }
    assert.ok(isProcessAlive(lc.pid('n2')));
  });

  it('logs readable lines when stderr is a terminal', async () => {
    // `script` gives the agent a pseudo-terminal; the agent for n2 is restarted under it.
    const pid = lc.pid('n2');
    process.kill(pid, 'SIGTERM');
    await lc.waitForDeath(pid);
    const child = spawn('script', ['-qefc', `${process.execPath} ${CORRAL} agent --config ${lc.config} --node n2`, '/dev/null'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((resolve) => child.on('exit', resolve));
    try {
      const { value } = await waitUntil('the agent to log under the terminal', () => Promise.resolve(/joined the cluster/.test(out) ? out : undefined), 15_000);
      assert.match(value, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}n2: agent started {2}socket=/m);
      assert.doesNotMatch(value, /^\{"level"/m, 'no JSON on a terminal');
    } finally {
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000, { ref: false })]);
      // `script` forwards the hangup; make sure the agent it ran is gone.
      const survivors = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${lc.config}\0--node\0n2`);
        } catch {
          return false;
        }
      });
      for (const p of survivors) process.kill(p, 'SIGKILL');
    }
    await lc.up();
  });

  it('an agent told to stop while the coordinator is down still exits promptly', async () => {
    const n1 = lc.pid('n1');
    process.kill(n1, 'SIGKILL');
    await lc.waitForDeath(n1);
    await sleep(300);
    const n2 = lc.pid('n2');
    const t0 = performance.now();
    process.kill(n2, 'SIGTERM');
    await lc.waitForDeath(n2, 15_000);
    const took = performance.now() - t0;
    assert.ok(took < 5000, `the agent took ${took.toFixed(0)} ms to stop`);
    await lc.up();
  });
});

describe('the coordinator journal on start-up', { timeout: 120_000 }, () => {
  const lc = new LocalClusterFixture(1);
  before(async () => {
    await lc.up();
    const store = await adminStore(lc.config);
    for (let i = 0; i < 20; i++) await store.put(`/journal-test/${i}`, `value ${i}`);
    await store.close();
    const r = await lc.corral(['local', 'down', '--dir', lc.dir]);
    assert.equal(r.code, 0);
  });
  after(() => lc.destroy());

  const storeDir = (): string => path.join(lc.dir, 'n1', 'data', 'store');
  const journal = (): string => {
    const wal = readdirSync(storeDir()).filter((f) => f.startsWith('wal-')).sort().pop();
    assert.ok(wal, 'a journal segment exists');
    return path.join(storeDir(), wal);
  };

  it('truncates a torn last record with a warning and starts', async () => {
    const file = journal();
    const size = readFileSync(file).length;
    appendFileSync(file, Buffer.from([0x40, 0, 0, 0, 1, 2, 3, 4, 0x7b, 0x22])); // a frame cut short
    const agent = startAgent(lc.config, 'n1');
    try {
      await waitUntil('the agent to serve', async () => ((await runCorral(['status', '--config', lc.config])).code === 0 ? true : undefined), 15_000, 100);
      assert.match(agent.output(), new RegExp(`"level":40.*torn record at offset ${size}\\b.*truncating`));
      const now = readFileSync(file);
      assert.notDeepEqual(now.subarray(size, size + 10), Buffer.from([0x40, 0, 0, 0, 1, 2, 3, 4, 0x7b, 0x22]), 'the torn bytes were cut off');
    } finally {
      assert.equal(await agent.stop(), 0);
    }
  });

  it('refuses to start on a journal corrupt before its end, naming the offset, and changes nothing', async () => {
    const file = journal();
    const bytes = readFileSync(file);
    assert.ok(bytes.length > 200, 'the journal has several records');
    const damaged = Buffer.from(bytes);
    const at = 12 + 8 + 2; // inside the first record's payload (after the 12-byte header and the frame header)
    damaged[at] = (damaged[at] as number) ^ 0xff;
    writeFileSync(file, damaged);
    const agent = startAgent(lc.config, 'n1');
    const code = await Promise.race([agent.exited, sleep(15_000, { ref: false }).then(() => 'timeout' as const)]);
    if (code === 'timeout') await agent.stop();
    assert.equal(code, 74, agent.output());
    assert.match(agent.output(), /corrupt.*offset \d+|offset \d+.*corrupt/i);
    assert.deepEqual(readFileSync(file), damaged, 'nothing was silently discarded');
  });
});
