import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { prettyLine } from '../agent/logger.js';
import { runCorral } from '../testkit/cli.js';
import { verbs } from './main.js';

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

describe('the corral command line', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'corral-cli-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('prints its version', async () => {
    const r = await runCorral(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `corral ${pkg.version}\n`);
  });

  it('has help for every verb', async () => {
    const names = Object.keys(verbs);
    assert.ok(names.length >= 7);
    for (const name of names) {
      const r = await runCorral(['help', name]);
      assert.equal(r.code, 0, `help ${name}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: corral ${name}`));
      const viaFlag = await runCorral([name, '--help']);
      assert.equal(viaFlag.stdout, r.stdout);
    }
    const general = await runCorral(['help']);
    for (const name of names) assert.match(general.stdout, new RegExp(`^  ${name} `, 'm'));
  });

  it('exits 2 with usage for an unknown verb or flag', async () => {
    const verb = await runCorral(['frobnicate']);
    assert.equal(verb.code, 2);
    assert.match(verb.stderr, /unknown verb 'frobnicate'/);
    assert.match(verb.stderr, /Usage: corral <verb>/);
    const flag = await runCorral(['status', '--frobnicate']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /^corral status: unknown option --frobnicate\nUsage: corral status/);
    const missing = await runCorral(['status', '--config']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--config needs a value/);
    const help = await runCorral(['help', 'nope']);
    assert.equal(help.code, 2);
  });

  it('says where to find a configuration when there is none', async () => {
    const r = await runCorral(['status', '--config', path.join(tmp, 'missing.yaml')]);
    assert.equal(r.code, 78);
    assert.match(r.stderr, /missing\.yaml does not exist; create one with 'corral init'.*\[CONFIG_NOT_FOUND\]/);
    const env = await runCorral(['status'], { env: { CORRAL_CONFIG: path.join(tmp, 'env.yaml') } });
    assert.match(env.stderr, /env\.yaml does not exist/);
  });

  it('refuses to start an agent on a malformed corral.yaml, naming file, line and field', async () => {
    const file = path.join(tmp, 'bad.yaml');
    writeFileSync(file, 'cluster: demo\nnodes:\n  n1:\n    address: 127.0.0.1\n');
    const r = await runCorral(['agent', '--config', file, '--node', 'n1']);
    assert.equal(r.code, 78);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:4:\\d+: nodes\\.n1\\.address: expected HOST:PORT`));
  });

  it('refuses an agent for a node the configuration does not list', async () => {
    const file = path.join(tmp, 'ok.yaml');
    writeFileSync(file, 'cluster: demo\nnodes:\n  n1:\n    address: 127.0.0.1:1\n');
    const r = await runCorral(['agent', '--config', file, '--node', 'n7']);
    assert.equal(r.code, 78);
    assert.match(r.stderr, /node "n7" is not in .*ok\.yaml \(nodes: n1\) \[UNKNOWN_NODE\]/);
  });

  it('renders readable log lines for a terminal', () => {
    const line = prettyLine(JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 1, 12, 0, 1, 5), node: 'n2', pid: 1, msg: 'node n3 is DOWN', peer: 'n3' }), false);
    assert.equal(line, '12:00:01.005 WARN  n2: node n3 is DOWN  peer=n3\n');
  });
});
