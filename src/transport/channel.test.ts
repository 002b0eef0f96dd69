// Channels (channel.ts, client-channel.ts): NDJSON both ways over a raw UNIX connection and over an
// HTTP/2 stream under mutual TLS, with the same behaviour on both.

import assert from 'node:assert/strict';
import { connect as connectNet, createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CorralError, isCorralError } from '../api/errors.js';
import { RpcClient, type RpcChannel } from './client.js';
import { makeCluster, probe, tempDir } from './fixtures.js';
import { LineSplitter, RAW_CHANNEL_MAGIC, RAW_CHANNEL_READY } from './ndjson.js';
import { RpcServer } from './server.js';
import type { ChannelRequest } from './routes.js';

/** Collects a channel's messages and its end. */
function open(client: RpcClient, path: string): { channel: RpcChannel; messages: unknown[]; ended: Promise<CorralError>; next(count: number): Promise<unknown[]> } {
  const messages: unknown[] = [];
  let waiting: { count: number; resolve: (m: unknown[]) => void } | undefined;
  let onEnd!: (reason: CorralError) => void;
  const ended = new Promise<CorralError>((resolve) => (onEnd = resolve));
  const channel = client.channel(path, {
    onMessage: (value) => {
      messages.push(value);
      if (waiting && messages.length >= waiting.count) waiting.resolve(messages.slice(0, waiting.count));
    },
    onEnd: (reason) => onEnd(reason),
  });
  return {
    channel,
    messages,
    ended,
    next: (count) =>
      messages.length >= count
        ? Promise.resolve(messages.slice(0, count))
        : new Promise((resolve, reject) => {
            waiting = { count, resolve };
            void ended.then(reject);
          }),
  };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<never>((_r, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

describe('NDJSON lines from chunks of bytes', () => {
  it('cuts at newlines whatever the chunks, multi-byte characters included, and drops blank lines', () => {
    const text = '{"a":"€uro"}\n\n{"b":"日本"}\n{"c":1}';
    const bytes = Buffer.from(text);
    for (let cut = 1; cut < bytes.length; cut++) {
      const lines = new LineSplitter(100);
      const got = [...lines.push(bytes.subarray(0, cut)), ...lines.push(bytes.subarray(cut)), ...lines.push(Buffer.from('\n'))];
      assert.deepEqual(got, ['{"a":"€uro"}', '{"b":"日本"}', '{"c":1}'], `cut at byte ${cut}`);
    }
  });

  it('refuses a line longer than its limit, complete or not', () => {
    assert.throws(() => new LineSplitter(8).push(Buffer.from('0123456789\n')), (err) => isCorralError(err, 'TOO_LARGE'));
    assert.throws(() => new LineSplitter(8).push(Buffer.from('0123456789')), (err) => isCorralError(err, 'TOO_LARGE'));
  });
});

describe('channels', { timeout: 60_000 }, () => {
  const dir = tempDir();
  const socketPath = join(dir.dir, 'ch.sock');
  const cluster = makeCluster('alpha');
  let server: RpcServer;
  let port: number;
  const aborted: string[] = [];
  const clients: RpcClient[] = [];

  /**
   * Echoes each message with the peer's kind; {"fail": code} throws that error; {"end": true}
   * ends; {"hang": true} stops reading and waits for the signal.
   */
  async function* echo(req: ChannelRequest): AsyncGenerator<unknown> {
    req.signal.addEventListener('abort', () => aborted.push((req.signal.reason as CorralError).code), { once: true });
    for await (const m of req.messages) {
      const msg = m as { fail?: string; end?: boolean; hang?: boolean };
      if (msg.fail) throw new CorralError('LOCK_BUSY', `asked to fail: ${msg.fail}`);
      if (msg.end) return;
      if (msg.hang) {
        yield 'hanging';
        await new Promise((resolve) => req.signal.addEventListener('abort', resolve, { once: true }));
        return;
      }
      yield { echo: m, peer: req.peer.kind };
    }
  }

  before(async () => {
    server = new RpcServer({ prefaceTimeoutMs: 300, maxBodyBytes: 1024 });
    server.channel('/v1/echo', (req) => echo(req));
    server.route('GET', '/v1/ping', () => Promise.resolve('pong'));
    await server.listenUnix(socketPath);
    port = await server.listenTls({ host: '127.0.0.1', port: 0, credentials: cluster.server });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
    dir.cleanup();
  });

  const unix = (): RpcClient => {
    const c = new RpcClient({ kind: 'unix', path: socketPath }, { connectTimeoutMs: 2000 });
    clients.push(c);
    return c;
  };
  const tls = (): RpcClient => {
    const c = new RpcClient({ kind: 'tls', host: '127.0.0.1', port, credentials: cluster.admin, serverName: 'n1' }, { connectTimeoutMs: 3000 });
    clients.push(c);
    return c;
  };

  for (const [name, make, peer] of [
    ['a raw UNIX connection', unix, 'local'],
    ['an HTTP/2 stream under mutual TLS', tls, 'tls'],
  ] as const) {
    describe(`over ${name}`, () => {
      it('carries messages both ways, in order, sent before and after the connection is up', async () => {
        const c = open(make(), '/v1/echo');
        for (let i = 0; i < 50; i++) c.channel.send({ i });
        const first = await within(c.next(50), 5000, 'fifty echoes');
        assert.deepEqual(first, Array.from({ length: 50 }, (_, i) => ({ echo: { i }, peer })));
        c.channel.send({ i: 50 });
        assert.deepEqual((await within(c.next(51), 5000, 'one more echo'))[50], { echo: { i: 50 }, peer });
        c.channel.send({ end: true });
        const reason = await within(c.ended, 5000, 'the end');
        assert.ok(isCorralError(reason, 'UNAVAILABLE') && /closed channel/.test(reason.message), String(reason));
      });

      it("a handler's error ends the channel with that error, after the messages before it", async () => {
        const c = open(make(), '/v1/echo');
        c.channel.send({ i: 1 });
        c.channel.send({ fail: 'now' });
        const reason = await within(c.ended, 5000, 'the end');
        assert.ok(isCorralError(reason, 'LOCK_BUSY'), String(reason));
        assert.deepEqual(c.messages, [{ echo: { i: 1 }, peer }]);
      });

      it('a line over the size limit ends the channel with TOO_LARGE', async () => {
        const c = open(make(), '/v1/echo');
        c.channel.send({ big: 'x'.repeat(2000) });
        const reason = await within(c.ended, 5000, 'the end');
        assert.ok(isCorralError(reason, 'TOO_LARGE'), String(reason));
      });

      it('an unknown channel path ends at once with NOT_FOUND', async () => {
        const c = open(make(), '/v1/nothing');
        c.channel.send({ i: 1 });
        const reason = await within(c.ended, 5000, 'the end');
        assert.ok(isCorralError(reason, 'NOT_FOUND'), String(reason));
      });

      it("closing it aborts the handler's signal (the client went away)", async () => {
        const c = open(make(), '/v1/echo');
        c.channel.send({ hang: true });
        await within(c.next(1), 5000, 'the handler hanging');
        const before = aborted.length;
        c.channel.close();
        await within(c.ended, 5000, 'the end');
        const t0 = performance.now();
        while (aborted.length === before && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
        assert.equal(aborted.at(-1), 'UNAVAILABLE');
      });
    });
  }

  it('the UNIX socket still speaks HTTP/2, and a raw channel counts as an open session', async () => {
    assert.equal(await unix().call('GET', '/v1/ping'), 'pong');
    const before = server.sessionCount;
    const c = open(unix(), '/v1/echo');
    c.channel.send({ i: 1 });
    await within(c.next(1), 5000, 'an echo');
    assert.equal(server.sessionCount, before + 1);
    c.channel.close();
    await c.ended;
  });

  it('a raw connection that sends a malformed line is told BAD_REQUEST and closed', async () => {
    const result = await probe(connectNet(socketPath), Buffer.from(`${RAW_CHANNEL_MAGIC}/v1/echo\n{"i":1}\nnot json\n`), 'connect', { waitMs: 3000 });
    assert.equal(result.closedByPeer, true);
    const [ready, ...rest] = result.received.toString('utf8').split('\n').filter(Boolean);
    assert.equal(ready, RAW_CHANNEL_READY);
    const lines = rest.map((l) => JSON.parse(l) as unknown);
    assert.deepEqual(lines[0], { echo: { i: 1 }, peer: 'local' });
    assert.equal((lines[1] as { error: { code: string } }).error.code, 'BAD_REQUEST');
  });

  it('a raw connection with an unknown first line, or silent, is dropped', async () => {
    const [garbage, silent] = await Promise.all([
      probe(connectNet(socketPath), Buffer.from('GET / HTTP/1.1\r\n\r\n'), 'connect', { waitMs: 3000 }),
      probe(connectNet(socketPath), Buffer.alloc(0), 'connect', { waitMs: 3000 }),
    ]);
    assert.deepEqual([garbage.closedByPeer, garbage.received.length], [true, 0]);
    assert.deepEqual([silent.closedByPeer, silent.received.length], [true, 0]);
  });

  it('a client whose socket does not exist gets UNAVAILABLE with the errno as cause', async () => {
    const c = new RpcClient({ kind: 'unix', path: join(dir.dir, 'nobody.sock') });
    const reason = await within(open(c, '/v1/echo').ended, 5000, 'the end');
    assert.ok(isCorralError(reason, 'UNAVAILABLE'), String(reason));
    assert.equal((reason.cause as NodeJS.ErrnoException).code, 'ENOENT');
    await c.close();
  });

  it('a server that accepts the connection but never answers fails the channel with TIMEOUT', async () => {
    const path = join(dir.dir, 'frozen.sock');
    const accepted: Socket[] = [];
    const frozen = createNetServer((socket) => accepted.push(socket));
    await new Promise<void>((resolve) => frozen.listen(path, resolve));
    const c = new RpcClient({ kind: 'unix', path }, { connectTimeoutMs: 200, requestTimeoutMs: 300 });
    const t0 = performance.now();
    const reason = await within(open(c, '/v1/echo').ended, 5000, 'the end');
    assert.ok(isCorralError(reason, 'TIMEOUT'), String(reason));
    assert.ok(performance.now() - t0 >= 250, 'not before its deadline');
    await c.close();
    for (const socket of accepted) socket.destroy();
    await new Promise((resolve) => frozen.close(resolve));
  });

  it('an agent that only speaks HTTP/2 (older than channels) is reported as such', async () => {
    const path = join(dir.dir, 'old.sock');
    // As node:http2 does with a connection that does not start with its preface: hang up.
    const old = createNetServer((socket) => socket.once('data', () => socket.destroy()));
    await new Promise<void>((resolve) => old.listen(path, resolve));
    const c = new RpcClient({ kind: 'unix', path });
    const reason = await within(open(c, '/v1/echo').ended, 5000, 'the end');
    assert.ok(isCorralError(reason, 'UNAVAILABLE') && /older agent/.test(reason.message), String(reason));
    await c.close();
    await new Promise((resolve) => old.close(resolve));
  });

  it('closing the server ends open channels with SHUTTING_DOWN', async () => {
    const path = join(dir.dir, 'closing.sock');
    const other = new RpcServer();
    other.channel('/v1/echo', (req) => echo(req));
    await other.listenUnix(path);
    const c = new RpcClient({ kind: 'unix', path });
    const ch = open(c, '/v1/echo');
    ch.channel.send({ i: 1 });
    await within(ch.next(1), 5000, 'an echo');
    await other.close();
    const reason = await within(ch.ended, 5000, 'the end');
    assert.ok(isCorralError(reason, 'SHUTTING_DOWN'), String(reason));
    await c.close();
  });
});
