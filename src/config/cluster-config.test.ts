import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../api/errors.js';
import { parseClusterConfig, parseHostPort, renderClusterConfig } from './cluster-config.js';

const good = `cluster: demo
coordinator: n2
nodes:
  n1:
    address: 127.0.0.1:7401
  n2:
    address: "[::1]:7402"
    socket: n2.sock
timings:
  sessionTtlSeconds: 3
`;

function configError(text: string): string {
  try {
    parseClusterConfig(text, '/etc/corral/corral.yaml');
  } catch (err) {
    assert.ok(isCorralError(err, 'CONFIG_INVALID'), `expected CONFIG_INVALID, got ${String(err)}`);
    return err.message;
  }
  assert.fail('the config was accepted');
}

describe('corral.yaml', () => {
  it('parses nodes in file order with defaults and resolved paths', () => {
    const c = parseClusterConfig(good, '/srv/c/corral.yaml');
    assert.equal(c.cluster, 'demo');
    assert.equal(c.coordinator, 'n2');
    assert.deepEqual(c.nodes.map((n) => n.name), ['n1', 'n2']);
    assert.deepEqual(c.nodes[1]?.address, { host: '::1', port: 7402 });
    assert.equal(c.nodes[1]?.socket, '/srv/c/n2.sock');
    assert.equal(c.nodes[0]?.dataDir, '/var/lib/corral/n1');
    assert.equal(c.pkiDir, '/srv/c/pki');
    assert.equal(c.timings.sessionTtlSeconds, 3);
    assert.equal(c.timings.keepaliveIntervalMs, 500);
  });

  it('names file, line and field for a bad address', () => {
    const msg = configError(good.replace('127.0.0.1:7401', 'n1-host'));
    assert.match(msg, /^\/etc\/corral\/corral\.yaml:5:\d+: nodes\.n1\.address: expected HOST:PORT/);
  });

  it('rejects an unknown field with its line', () => {
    const msg = configError(good.replace('  sessionTtlSeconds: 3', '  sessionTtlSecs: 3'));
    assert.match(msg, /:10:3: timings\.sessionTtlSecs: unknown field/);
  });

  it('rejects a coordinator that is not a node', () => {
    assert.match(configError(good.replace('coordinator: n2', 'coordinator: n9')), /:2:\d+: coordinator: "n9" is not one of the nodes/);
  });

  it('rejects a missing cluster name, a bad timing type and YAML syntax errors', () => {
    assert.match(configError(good.replace('cluster: demo\n', '')), /cluster: missing/);
    assert.match(configError(good.replace('sessionTtlSeconds: 3', 'sessionTtlSeconds: soon')), /:10:\d+: timings\.sessionTtlSeconds: expected a whole number/);
    assert.match(configError('cluster: [unclosed\n'), /^\/etc\/corral\/corral\.yaml:\d+:\d+: /);
    assert.match(configError('- just\n- a list\n'), /expected a mapping/);
  });

  it('rejects duplicate addresses and keys', () => {
    assert.match(configError(good.replace('"[::1]:7402"', '127.0.0.1:7401')), /nodes\.n2\.address: 127\.0\.0\.1:7401 is already the address of node n1/);
    assert.match(configError(good.replace('  n2:\n', '  n1:\n')), /:\d+:\d+: /);
  });

  it('rejects a keepalive interval that cannot keep the session alive', () => {
    assert.match(configError(good.replace('  sessionTtlSeconds: 3', '  sessionTtlSeconds: 1\n  keepaliveIntervalMs: 900')), /keepaliveIntervalMs: must be at most half/);
  });

  it('round-trips what renderClusterConfig writes', () => {
    const text = renderClusterConfig({
      cluster: 'c1',
      coordinator: 'a',
      pki: 'pki',
      nodes: [
        { name: 'a', address: '127.0.0.1:1', socket: 'a/s' },
        { name: 'b', address: '127.0.0.2:2' },
      ],
      join: '127.0.0.1:3',
    });
    const c = parseClusterConfig(text, '/x/corral.yaml');
    assert.equal(c.cluster, 'c1');
    assert.deepEqual(c.join, { host: '127.0.0.1', port: 3 });
    assert.equal(c.nodes[0]?.socket, '/x/a/s');
  });

  it('reads an etcd store with endpoints, a prefix and TLS files relative to the config', () => {
    const c = parseClusterConfig(
      good + 'store:\n  backend: etcd\n  endpoints: ["10.0.0.5:2379", "https://10.0.0.6:2379"]\n  prefix: /clusters/prod\n  tls:\n    ca: etcd/ca.crt\n    cert: etcd/c.crt\n    key: etcd/c.key\n',
      '/srv/c/corral.yaml',
    );
    assert.deepEqual(c.store, {
      backend: 'etcd',
      endpoints: ['10.0.0.5:2379', 'https://10.0.0.6:2379'],
      prefix: '/clusters/prod',
      tls: { ca: '/srv/c/etcd/ca.crt', cert: '/srv/c/etcd/c.crt', key: '/srv/c/etcd/c.key' },
    });
    assert.match(configError(good + 'store:\n  backend: etcd\n'), /store\.endpoints: missing/);
    assert.match(configError(good + 'store:\n  backend: etcd\n  endpoints: [nohost]\n'), /:\d+:\d+: store\.endpoints: "nohost" is not HOST:PORT/);
    assert.match(configError(good + 'store:\n  backend: etcd\n  endpoints: [h:1]\n  tls:\n    ca: x\n    cert: y\n'), /store\.tls\.key: a client certificate needs both/);
    assert.match(configError(good + 'store:\n  backend: zookeeper\n'), /unknown store backend "zookeeper" \(known: embedded, etcd\)/);
  });

  it('parses HOST:PORT forms', () => {
    assert.deepEqual(parseHostPort('h:1'), { host: 'h', port: 1 });
    assert.deepEqual(parseHostPort('[fe80::1]:80'), { host: 'fe80::1', port: 80 });
    assert.equal(parseHostPort('h:0'), undefined);
    assert.equal(parseHostPort('h:70000'), undefined);
    assert.equal(parseHostPort('::1:80'), undefined);
  });
});
