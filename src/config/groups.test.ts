// The groups section of corral.yaml and its JSON form in the store: what is accepted, and that
// every malformed group is refused with the file, line and field (or, from the store, a reason).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../api/errors.js';
import { parseClusterConfig } from './cluster-config.js';
import { decodeGroups, nodesOf, runsOn } from './groups.js';

const head = `cluster: demo
nodes:
  n1: { address: 127.0.0.1:7401 }
  n2: { address: 127.0.0.1:7402 }
  n3: { address: 127.0.0.1:7403 }
`;

const good = `${head}groups:
  web:
    nodes: n[1-2]
    stop: { termAfterMs: 1000, killAfterMs: 3000 }
    throttle: { limit: 3, windowMs: 500, pauseMs: 10000 }
    env: { PORT: 8080, NAME: web }
    entries:
      - { tag: setup, levels: "12", mode: wait, command: "mkdir -p /srv" }
      - { tag: httpd, levels: [1, maint], mode: respawn, command: "exec httpd" }
      - { tag: spare, levels: "3", mode: "off" }
  all:
    entries:
      - { tag: t, levels: 0, mode: test, command: "true" }
`;

function refusal(text: string): string {
  try {
    parseClusterConfig(text, '/etc/corral/corral.yaml');
  } catch (err) {
    assert.ok(isCorralError(err, 'CONFIG_INVALID'), String(err));
    return err.message;
  }
  assert.fail('accepted');
}

function decodeRefusal(value: unknown): string {
  try {
    decodeGroups(value, ['n1', 'n2', 'n3']);
  } catch (err) {
    assert.ok(isCorralError(err, 'CONFIG_INVALID'), String(err));
    return err.message;
  }
  assert.fail('accepted');
}

describe('groups in corral.yaml', () => {
  it('reads groups in file order: node sets expanded, levels as cltab fields or lists, timings and environment', () => {
    const { groups } = parseClusterConfig(good, '/etc/corral/corral.yaml');
    assert.deepEqual(groups.map((g) => g.name), ['web', 'all']);
    const [web, all] = groups as [NonNullable<(typeof groups)[0]>, NonNullable<(typeof groups)[0]>];
    assert.deepEqual(web.nodes, ['n1', 'n2']);
    assert.deepEqual(web.entries.map((e) => [e.tag, e.levels, e.mode]), [['setup', '12', 'wait'], ['httpd', ['1', 'maint'], 'respawn'], ['spare', '3', 'off']]);
    assert.deepEqual(web.stop, { termAfterMs: 1000, killAfterMs: 3000 });
    assert.deepEqual(web.throttle, { limit: 3, windowMs: 500, pauseMs: 10000 });
    assert.deepEqual(web.env, { PORT: '8080', NAME: 'web' });
    assert.equal(all.nodes, null);
    assert.deepEqual(all.entries[0]?.levels, '0', 'level 0 is a level like any other');
    assert.ok(runsOn(all, 'n3') && !runsOn(web, 'n3'));
    assert.deepEqual(nodesOf(all, ['n1', 'n2', 'n3']), ['n1', 'n2', 'n3']);
    // The JSON form round-trips through the store's validator unchanged.
    assert.deepEqual(decodeGroups(JSON.parse(JSON.stringify(groups)), ['n1', 'n2', 'n3']), groups);
  });

  it('refuses each malformed group with file:line and the field', () => {
    const cases: [string, RegExp][] = [
      ['  w:\n    entries:\n      - { tag: a, levels: "1", mode: sometimes, command: x }\n', /:\d+:\d+: groups\.w\.entries\[0\]\.mode: invalid mode 'sometimes'/],
      ['  w:\n    entries:\n      - { tag: a, levels: "1", mode: once, command: x }\n      - { tag: a, levels: "2", mode: once, command: y }\n', /entries\[1\]\.tag: duplicate tag a in group w/],
      ['  w:\n    nodes: n[1-5]\n    entries:\n      - { tag: a, levels: "1", mode: once, command: x }\n', /groups\.w\.nodes: names nodes that are not in this cluster: n4, n5/],
      ['  w:\n    entries: []\n', /groups\.w\.entries: expected a list of entries/],
      ['  w:\n    entries:\n      - { tag: a, mode: once, command: x }\n', /entries\[0\]\.levels: missing/],
      ['  w:\n    entries:\n      - { tag: a, levels: "1", mode: once }\n', /entries\[0\]\.command: missing/],
      ['  w:\n    entries:\n      - { tag: "a b", levels: "1", mode: once, command: x }\n', /entries\[0\]\.tag: invalid value/],
      ['  w:\n    stop: { termAfterMs: 5000, killAfterMs: 1000 }\n    entries:\n      - { tag: a, levels: "1", mode: once, command: x }\n', /groups\.w\.stop\.killAfterMs: must be at least termAfterMs/],
      ['  w:\n    env: { 1BAD: x }\n    entries:\n      - { tag: a, levels: "1", mode: once, command: x }\n', /groups\.w\.env\.1BAD: an environment variable name/],
      ['  w:\n    restart: always\n    entries:\n      - { tag: a, levels: "1", mode: once, command: x }\n', /groups\.w\.restart: unknown field/],
      ['  w:\n    entries:\n      - { tag: a, levels: "1", mode: once, command: x, user: root }\n', /entries\[0\]\.user: unknown field/],
    ];
    for (const [section, expected] of cases) assert.match(refusal(`${head}groups:\n${section}`), expected, section);
  });

  it('validates the JSON form as strictly (what an agent receives through the store)', () => {
    const entry = { tag: 'a', levels: '1', mode: 'once', command: 'x' };
    assert.match(decodeRefusal({}), /expected a list of groups/);
    assert.match(decodeRefusal([{ name: 'g', nodes: null, entries: [{ ...entry, mode: 'sometimes' }] }]), /g\/a: mode must be one of/);
    assert.match(decodeRefusal([{ name: 'g', nodes: ['n9'], entries: [entry] }]), /"n9" is not a node of this cluster/);
    assert.match(decodeRefusal([{ name: 'g', nodes: null, entries: [entry, entry] }]), /duplicate tag a/);
    assert.match(decodeRefusal([{ name: 'g', nodes: null, entries: [entry] }, { name: 'g', nodes: null, entries: [entry] }]), /declared twice/);
    assert.match(decodeRefusal([{ name: 'g', nodes: null, entries: [{ ...entry, command: ' ' }] }]), /the command is empty/);
    assert.match(decodeRefusal([{ name: 'g', nodes: null, entries: [entry], stop: { termAfterMs: 2, killAfterMs: 1 } }]), /killAfterMs must be at least/);
    assert.match(decodeRefusal([{ name: 'g', nodes: null, entries: [entry], env: { A: 1 } }]), /env "A" must be a variable name with a string value/);
    assert.match(decodeRefusal([{ name: 'g', nodes: null, entries: [entry], extra: 1 }]), /unknown field 'extra'/);
  });
});
