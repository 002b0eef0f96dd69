import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as connectH2 } from 'node:http2';
import { connect as connectNet } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import { CorralError } from '../api/errors.js';
import { RpcClient } from './client.js';
import { H2_PREFACE, looksLikeHttp, makeCluster, probe, type TestCluster } from './fixtures.js';
import { RpcServer } from './server.js';
import type { PeerIdentity, TlsCredentials } from './types.js';

const HOST = '127.0.0.1';

describe('RPC over mutual TLS', { timeout: 60_000 }, () => {
  let cluster: TestCluster;
  let server: RpcServer;
  let port: number;
  let invocations = 0;
  const clients: RpcClient[] = [];

  const client = (credentials: TlsCredentials, serverName?: string): RpcClient => {
    const c = new RpcClient({ kind: 'tls', host: HOST, port, credentials, ...(serverName === undefined ? {} : { serverName }) }, { connectTimeoutMs: 3_000 });
    clients.push(c);
    return c;
  };
  const tlsProbe = (creds: Partial<TlsCredentials>, extra: ConnectionOptions = {}): ReturnType<typeof probe> =>
    probe(
      connectTls({ host: HOST, port, ALPNProtocols: ['h2'], ca: cluster.ca.certPem, ...creds, checkServerIdentity: () => undefined, ...extra }),
      H2_PREFACE,
      'secureConnect',
      { until: looksLikeHttp },
    );

  before(async () => {
    cluster = makeCluster('alpha');
    server = new RpcServer();
    server.route('POST', '/v1/whoami', (req) => {
      invocations++;
      return Promise.resolve({ peer: req.peer, body: req.body, query: req.query.get('q') });
    });
    server.route('GET', '/v1/count', (req) => {
      invocations++;
      const n = Number(req.query.get('n') ?? '3');
      return (async function* () {
        for (let i = 0; i < n; i++) {
          await Promise.resolve(); // as a real source would, between items
          yield { i, who: req.peer.kind === 'tls' ? req.peer.commonName : '?' };
        }
      })();
    });
    port = await server.listenTls({ host: HOST, port: 0, credentials: cluster.server });
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
  });

  it('answers a call and a stream, with the peer identity taken from the client certificate', async () => {
    const admin = client(cluster.admin, 'n1');
    const reply = await admin.call<{ peer: PeerIdentity; body: unknown; query: string }>('POST', '/v1/whoami?q=x', { hello: 'world' });
    assert.deepEqual(reply, { peer: { kind: 'tls', commonName: 'alice', role: 'admin', clusterName: 'alpha' }, body: { hello: 'world' }, query: 'x' });
    const items: unknown[] = [];
    for await (const item of client(cluster.node2).stream('GET', '/v1/count?n=4')) items.push(item);
    assert.deepEqual(items, [0, 1, 2, 3].map((i) => ({ i, who: 'n2' })));
  });

  it('serves 64 concurrent calls over one client', async () => {
    const c = client(cluster.node2);
    const replies = await Promise.all(Array.from({ length: 64 }, (_, i) => c.call<{ body: number }>('POST', '/v1/whoami', i)));
    assert.deepEqual(
      replies.map((r) => r.body),
      Array.from({ length: 64 }, (_, i) => i),
    );
  });

  it('a valid client gets the HTTP/2 server preface (the control for the probes below)', async () => {
    const result = await tlsProbe({ cert: cluster.admin.cert, key: cluster.admin.key });
    assert.ok(looksLikeHttp(result.received), 'a well-credentialed peer is answered with SETTINGS');
  });

  describe('peers that are not authenticated get a failed handshake and nothing else', () => {
    const hostile: [string, () => Promise<Awaited<ReturnType<typeof probe>>>][] = [
      ['no client certificate', () => tlsProbe({})],
      [
        "a certificate from another cluster's CA",
        () => {
          const other = makeCluster('beta').credentials('n1', 'node');
          return tlsProbe({ cert: other.cert, key: other.key });
        },
      ],
      [
        'an expired certificate',
        () => {
          const day = 86_400_000;
          const expired = cluster.credentials('old', 'node', { notBefore: new Date(Date.now() - 3 * day), notAfter: new Date(Date.now() - day) });
          return tlsProbe({ cert: expired.cert, key: expired.key });
        },
      ],
      ['a certificate not yet valid', () => {
        const future = new Date(Date.now() + 86_400_000);
        const early = cluster.credentials('early', 'node', { notBefore: future, notAfter: new Date(future.getTime() + 86_400_000) });
        return tlsProbe({ cert: early.cert, key: early.key });
      }],
      ['plain HTTP/1.1', () => probe(connectNet(port, HOST), Buffer.from(`GET /v1/count HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`), 'connect')],
      ['h2c with prior knowledge', () => probe(connectNet(port, HOST), H2_PREFACE, 'connect')],
      // The first byte is fixed: random bytes that start like a TLS or SSLv2 record header with a large
      // length make OpenSSL wait for the rest of the record (until the handshake timeout) instead of failing.
      ['random garbage', () => probe(connectNet(port, HOST), Buffer.concat([Buffer.from([0]), randomBytes(4095)]), 'connect')],
      ['TLS 1.2', () => tlsProbe({ cert: cluster.admin.cert, key: cluster.admin.key }, { maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' })],
      ['TLS without ALPN h2 (HTTP/1.1 over TLS)', () => tlsProbe({ cert: cluster.admin.cert, key: cluster.admin.key }, { ALPNProtocols: ['http/1.1'] })],
    ];
    for (const [name, attempt] of hostile) {
      it(`${name}: the connection is closed, nothing received parses as HTTP, no handler runs`, async () => {
        const before = invocations;
        const result = await attempt();
        assert.equal(result.closedByPeer, true, `the server closed the connection (error: ${result.error})`);
        assert.equal(looksLikeHttp(result.received), false, `received ${result.received.toString('hex').slice(0, 80)}`);
        // Over raw TCP all a peer may see is TLS handshake records or an alert; over TLS, no application data.
        assert.ok(result.received.length === 0 || result.received[0] === 0x15 || result.received[0] === 0x16, 'only TLS records');
        assert.equal(invocations, before);
      });
    }

    it('a real HTTP/2 client without a certificate cannot reach a route', async () => {
      const before = invocations;
      const session = connectH2(`https://${HOST}:${port}`, { ca: cluster.ca.certPem, checkServerIdentity: () => undefined });
      session.on('error', () => undefined);
      const outcome = await new Promise<string>((resolve) => {
        const req = session.request({ ':method': 'GET', ':path': '/v1/count' });
        req.on('response', () => resolve('answered'));
        req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
        req.on('close', () => resolve('closed'));
        req.end();
      });
      session.destroy();
      assert.notEqual(outcome, 'answered');
      assert.equal(invocations, before);
    });
  });

  it('keeps serving well-behaved clients after hostile ones', async () => {
    await Promise.all([probe(connectNet(port, HOST), randomBytes(1000), 'connect'), tlsProbe({})]);
    const reply = await client(cluster.admin).call<{ body: string }>('POST', '/v1/whoami', 'still here');
    assert.equal(reply.body, 'still here');
  });

  it('the client rejects a server whose certificate names another node', async () => {
    await assert.rejects(client(cluster.admin, 'n7').call('POST', '/v1/whoami', {}), (err: CorralError) => {
      assert.equal(err.code, 'TLS');
      assert.match(err.message, /n1.*expected node n7/);
      return true;
    });
  });

  it("the client rejects a server that does not chain to the cluster's CA", async () => {
    const other = makeCluster('beta').admin;
    await assert.rejects(client(other, 'n1').call('POST', '/v1/whoami', {}), (err: CorralError) => err.code === 'TLS');
  });

  it('the client reports a refused (expired) client certificate as a TLS error', async () => {
    const day = 86_400_000;
    const expired = cluster.credentials('old', 'node', { notBefore: new Date(Date.now() - 3 * day), notAfter: new Date(Date.now() - day) });
    await assert.rejects(client(expired).call('POST', '/v1/whoami', {}), (err: CorralError) => {
      assert.equal(err.code, 'TLS');
      assert.match(err.message, /https:\/\/127\.0\.0\.1:\d+/);
      return true;
    });
  });

  it('a node certificate with an invalid role is refused a session', async () => {
    // A certificate the CA signed but whose subject is not a corral peer (the CA's own OU).
    const before = invocations;
    const bogus: TlsCredentials = { ca: cluster.ca.certPem, cert: cluster.ca.certPem, key: cluster.ca.keyPem };
    const result = await tlsProbe({ cert: bogus.cert, key: bogus.key });
    assert.equal(looksLikeHttp(result.received), false);
    assert.equal(invocations, before);
  });

  it('maps a refused TCP connection to UNAVAILABLE naming the endpoint', async () => {
    const closed = new RpcServer();
    const freePort = await closed.listenTls({ host: HOST, port: 0, credentials: cluster.server });
    await closed.close();
    const c = new RpcClient({ kind: 'tls', host: HOST, port: freePort, credentials: cluster.admin });
    clients.push(c);
    await assert.rejects(c.call('POST', '/v1/whoami', {}), (err: CorralError) => {
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${freePort}.*ECONNREFUSED`));
      return true;
    });
  });

  it('unusable credentials are a TLS error on both sides', async () => {
    const broken: TlsCredentials = { ...cluster.admin, key: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' };
    const c = new RpcClient({ kind: 'tls', host: HOST, port, credentials: broken });
    clients.push(c);
    await assert.rejects(c.call('POST', '/v1/whoami', {}), (err: CorralError) => err.code === 'TLS');
    const s = new RpcServer();
    await assert.rejects(s.listenTls({ host: HOST, port: 0, credentials: broken }), (err: CorralError) => err.code === 'TLS');
    await s.close();
  });
});

describe('TLS listener robustness', { timeout: 30_000 }, () => {
  it('drops a peer stuck in the handshake, and close() does not wait for one', async () => {
    const cluster = makeCluster();
    const server = new RpcServer({ handshakeTimeoutMs: 300, closeGraceMs: 200 });
    server.route('GET', '/v1/ping', () => Promise.resolve('pong'));
    const port = await server.listenTls({ host: HOST, port: 0, credentials: cluster.server });
    const client = new RpcClient({ kind: 'tls', host: HOST, port, credentials: cluster.admin });
    try {
      const stuck = await probe(connectNet(port, HOST), Buffer.from([0x16, 0x03, 0x01]), 'connect', { waitMs: 3_000 });
      assert.equal(stuck.closedByPeer, true, 'the handshake timeout closed the silent peer');
      assert.equal(await client.call('GET', '/v1/ping'), 'pong');
      const lingering = connectNet(port, HOST);
      lingering.on('error', () => undefined);
      await new Promise((resolve) => lingering.once('connect', resolve));
      const started = performance.now();
      await server.close();
      assert.ok(performance.now() - started < 1_000, 'close() did not wait for the handshake timeout');
      lingering.destroy();
    } finally {
      await client.close();
      await server.close();
    }
  });
});
