// The client's keepalive: a long stream to a peer that stops answering without closing its
// connection (here a loopback proxy that black-holes both directions, as a powered-off host or a
// broken network does) fails with UNAVAILABLE instead of waiting forever; a healthy but quiet
// stream is kept, with the PINGs going out meanwhile.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect as connectNet, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CorralError } from '../api/errors.js';
import { RpcClient } from './client.js';
import { makeCluster, type TestCluster } from './fixtures.js';
import { RpcServer } from './server.js';

const HOST = '127.0.0.1';

/** A TCP proxy to `target`; `blackhole()` stops forwarding both ways without closing anything. */
async function proxy(target: number): Promise<{ port: number; upBytes: () => number; blackhole: () => void; close: () => Promise<void> }> {
  const sockets: Socket[] = [];
  let up = 0;
  let holed = false;
  const server: Server = createServer((client) => {
    const upstream = connectNet(target, HOST);
    sockets.push(client, upstream);
    for (const s of [client, upstream]) s.on('error', () => undefined);
    client.on('data', (d: Buffer) => {
      if (holed) return;
      up += d.length;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!holed) client.write(d);
    });
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    port: address.port,
    upBytes: () => up,
    blackhole: () => (holed = true),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('client keepalive on long streams', { timeout: 30_000 }, () => {
  let cluster: TestCluster;
  let server: RpcServer;
  let port: number;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    cluster = makeCluster('alpha');
    server = new RpcServer();
    // One line at once, then a second one after `ms` (the stream is quiet meanwhile), then the end.
    server.route(
      'POST',
      '/v1/quiet',
      (req) =>
        (async function* () {
          yield { n: 1 };
          await sleep(Number((req.body as { ms: number }).ms), undefined, { signal: req.signal }).catch(() => undefined);
          if (!req.signal.aborted) yield { n: 2 };
        })(),
      { input: true },
    );
    port = await server.listenTls({ host: HOST, port: 0, credentials: cluster.server });
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    await server.close();
  });

  const clientVia = (p: number, keepaliveMs: number): RpcClient => {
    const c = new RpcClient({ kind: 'tls', host: HOST, port: p, credentials: cluster.node2, serverName: 'n1' }, { connectTimeoutMs: 3000, requestTimeoutMs: 3000, keepaliveMs, keepaliveTimeoutMs: 400 });
    cleanups.push(() => c.close());
    return c;
  };

  it('a stream whose peer goes silent fails with UNAVAILABLE after a keepalive PING goes unanswered', async () => {
    const p = await proxy(port);
    cleanups.push(p.close);
    const c = clientVia(p.port, 150);
    const res = await c.open('/v1/quiet', { ms: 20_000 });
    const lines = res.lines<{ n: number }>();
    assert.deepEqual((await lines.next()).value, { n: 1 });
    p.blackhole();
    const started = performance.now();
    await assert.rejects(lines.next(), (err: unknown) => {
      assert.ok(err instanceof CorralError, String(err));
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /did not answer a keepalive PING within 400 ms/);
      return true;
    });
    const waited = performance.now() - started;
    assert.ok(waited < 5000, `the dead stream was noticed after ${Math.round(waited)} ms`);
  });

  /** Opens a stream that is quiet for `ms` between its two lines; the bytes the client sent meanwhile. */
  const sentWhileQuiet = async (keepaliveMs: number, ms: number): Promise<number> => {
    const p = await proxy(port);
    cleanups.push(p.close);
    const res = await clientVia(p.port, keepaliveMs).open('/v1/quiet', { ms });
    const lines = res.lines<{ n: number }>();
    assert.deepEqual((await lines.next()).value, { n: 1 });
    const before = p.upBytes();
    assert.deepEqual((await lines.next()).value, { n: 2 }, 'the quiet stream was kept');
    assert.equal((await lines.next()).done, true);
    return p.upBytes() - before;
  };

  it('a quiet stream to a live peer is kept, PINGs going out meanwhile', async () => {
    // Ten PINGs of 17 bytes in TLS records: far more than the nothing a client without keepalive sends.
    const sent = await sentWhileQuiet(150, 1500);
    assert.ok(sent > 200, `only ${sent} bytes went up during the quiet second and a half`);
  });

  it('without keepalive the client sends nothing while the stream is quiet (the control)', async () => {
    const sent = await sentWhileQuiet(0, 1000);
    assert.ok(sent < 100, `${sent} bytes went up`);
  });
});
