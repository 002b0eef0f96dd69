import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { connect as connectH2 } from 'node:http2';
import { connect as connectNet } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CorralError } from '../api/errors.js';
import { memoryLogger } from '../util/log.js';
import { RpcClient } from './client.js';
import { H2_PREFACE, probe, tempDir } from './fixtures.js';
import { RpcServer } from './server.js';

/** A raw HTTP/2 request over the UNIX socket, to check statuses and headers on the wire. */
async function rawRequest(path: string, method: string, urlPath: string, body?: Buffer | string): Promise<{ status: number; type: string; body: unknown }> {
  const session = connectH2('http://localhost', { createConnection: () => connectNet(path) });
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({ ':method': method, ':path': urlPath }, { endStream: body === undefined });
      let status = 0;
      let type = '';
      const chunks: Buffer[] = [];
      req.on('response', (h) => {
        status = Number(h[':status']);
        type = String(h['content-type']);
      });
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve({ status, type, body: JSON.parse(Buffer.concat(chunks).toString()) as unknown }));
      req.on('error', reject);
      if (body !== undefined) req.end(body);
    });
  } finally {
    session.destroy();
  }
}

describe('RPC over a UNIX socket', { timeout: 60_000 }, () => {
  let dir: ReturnType<typeof tempDir>;
  let socketPath: string;
  let server: RpcServer;
  let client: RpcClient;
  const logger = memoryLogger();
  const streamAborts: string[] = [];

  before(async () => {
    dir = tempDir();
    socketPath = join(dir.dir, 'agent.sock');
    server = new RpcServer({ logger, maxBodyBytes: 64 * 1024, prefaceTimeoutMs: 300 });
    server.route('POST', '/v1/echo', (req) => Promise.resolve({ body: req.body, peer: req.peer }));
    server.route('GET', '/v1/bigint', () => Promise.resolve({ n: 1n }));
    server.route('GET', '/v1/bug', () => Promise.reject(new Error('secret internals at /etc/corral/ca.key')));
    server.route('GET', '/v1/refuse', () => Promise.reject(new CorralError('LEASE_NOT_FOUND', 'lease 7 is gone')));
    server.route('GET', '/v1/forbidden', () => Promise.resolve('no'), { allow: () => false });
    server.route('GET', '/v1/slow', (req) => new Promise((resolve) => req.signal.addEventListener('abort', () => resolve('late'))));
    server.route('GET', '/v1/items', (req) =>
      (async function* () {
        const fail = req.query.get('fail');
        yield { n: 1 };
        yield await Promise.resolve({ n: 2 });
        if (fail === 'corral') throw new CorralError('COMPACTED', 'revision 3 was compacted');
        if (fail === 'bug') throw new Error('kaboom');
        yield { n: 3 };
      })(),
    );
    server.route('GET', '/v1/forever', (req) =>
      (async function* () {
        try {
          for (let i = 0; ; i++) {
            yield { i };
            await sleep(20, undefined, { signal: req.signal }).catch(() => undefined);
            if (req.signal.aborted) return;
          }
        } finally {
          streamAborts.push(req.signal.aborted ? 'aborted' : 'not aborted');
        }
      })(),
    );
    await server.listenUnix(socketPath);
    client = new RpcClient({ kind: 'unix', path: socketPath }, { requestTimeoutMs: 5_000 });
  });

  after(async () => {
    await client.close();
    await server.close();
    dir.cleanup();
  });

  it('creates the socket with mode 0600 and serves local peers', async () => {
    assert.equal(statSync(socketPath).mode & 0o777, 0o600);
    assert.deepEqual(await client.call('POST', '/v1/echo', { a: [1, 'x'] }), { body: { a: [1, 'x'] }, peer: { kind: 'local' } });
  });

  it('answers JSON with content-type application/json', async () => {
    const r = await rawRequest(socketPath, 'POST', '/v1/echo', '{"x":1}');
    assert.deepEqual(r, { status: 200, type: 'application/json', body: { body: { x: 1 }, peer: { kind: 'local' } } });
  });

  describe('error shapes', () => {
    const cases: [string, string, string, Buffer | string | undefined, number, string][] = [
      ['unknown path', 'GET', '/v1/nope', undefined, 404, 'NOT_FOUND'],
      ['wrong method', 'GET', '/v1/echo', undefined, 405, 'BAD_REQUEST'],
      ['invalid JSON', 'POST', '/v1/echo', '{"x":', 400, 'BAD_REQUEST'],
      ['body over the limit', 'POST', '/v1/echo', Buffer.alloc(100 * 1024, 0x20), 413, 'TOO_LARGE'],
      ['a CorralError from the handler', 'GET', '/v1/refuse', undefined, 404, 'LEASE_NOT_FOUND'],
      ['a route that does not admit the peer', 'GET', '/v1/forbidden', undefined, 403, 'FORBIDDEN'],
    ];
    for (const [name, method, path, body, status, code] of cases) {
      it(`${name} → ${status} {code: ${code}}`, async () => {
        const r = await rawRequest(socketPath, method, path, body);
        assert.equal(r.status, status);
        assert.equal(r.type, 'application/json');
        const wire = r.body as { code: string; message: string };
        assert.equal(wire.code, code);
        assert.equal(typeof wire.message, 'string');
        assert.deepEqual(Object.keys(wire).sort(), ['code', 'message']);
        if (name === 'invalid JSON') return; // the client always sends valid JSON
        const clientBody = status === 413 ? 'x'.repeat(100 * 1024) : undefined;
        await assert.rejects(client.call(method as 'GET' | 'POST', path, clientBody), (err: CorralError) => err.code === code);
      });
    }

    it('a non-Corral error → 500 INTERNAL without leaking its message, logged instead', async () => {
      const r = await rawRequest(socketPath, 'GET', '/v1/bug');
      assert.equal(r.status, 500);
      assert.equal((r.body as { code: string }).code, 'INTERNAL');
      assert.doesNotMatch(JSON.stringify(r.body), /secret internals|\.ts:|at /);
      assert.ok(logger.entries.some((e) => e.level === 'error'));
    });

    it('an unserialisable result (bigint) → 500 INTERNAL, and the server lives on', async () => {
      await assert.rejects(client.call('GET', '/v1/bigint'), (err: CorralError) => err.code === 'INTERNAL');
      assert.deepEqual(await client.call('POST', '/v1/echo', 1), { body: 1, peer: { kind: 'local' } });
    });
  });

  describe('NDJSON streams', () => {
    it('delivers every item of a stream that ends', async () => {
      const items: unknown[] = [];
      for await (const item of client.stream('GET', '/v1/items')) items.push(item);
      assert.deepEqual(items, [{ n: 1 }, { n: 2 }, { n: 3 }]);
    });

    it('a CorralError mid-stream reaches the client as that error, after the items before it', async () => {
      const items: unknown[] = [];
      await assert.rejects(
        (async () => {
          for await (const item of client.stream('GET', '/v1/items?fail=corral')) items.push(item);
        })(),
        (err: CorralError) => err.code === 'COMPACTED' && err.message === 'revision 3 was compacted',
      );
      assert.deepEqual(items, [{ n: 1 }, { n: 2 }]);
    });

    it('any other error mid-stream becomes a final INTERNAL line', async () => {
      await assert.rejects(
        (async () => {
          for await (const _ of client.stream('GET', '/v1/items?fail=bug'));
        })(),
        (err: CorralError) => err.code === 'INTERNAL' && !err.message.includes('kaboom'),
      );
    });

    it('the wire form is one JSON object per line with content-type application/x-ndjson', async () => {
      const session = connectH2('http://localhost', { createConnection: () => connectNet(socketPath) });
      const { type, text } = await new Promise<{ type: string; text: string }>((resolve, reject) => {
        const req = session.request({ ':method': 'GET', ':path': '/v1/items?fail=corral' });
        let t = '';
        let type = '';
        req.setEncoding('utf8');
        req.on('response', (h) => (type = String(h['content-type'])));
        req.on('data', (c: string) => (t += c));
        req.on('end', () => resolve({ type, text: t }));
        req.on('error', reject);
      });
      session.destroy();
      assert.equal(type, 'application/x-ndjson');
      assert.deepEqual(
        text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as unknown),
        [{ n: 1 }, { n: 2 }, { error: { code: 'COMPACTED', message: 'revision 3 was compacted' } }],
      );
      assert.ok(text.endsWith('\n'));
    });

    it("a client closing the stream aborts the handler's signal", async () => {
      streamAborts.length = 0;
      const stream = client.stream<{ i: number }>('GET', '/v1/forever');
      let seen = 0;
      for await (const item of stream) {
        seen = item.i;
        if (item.i === 2) stream.close();
      }
      assert.equal(seen, 2);
      for (let i = 0; i < 50 && streamAborts.length === 0; i++) await sleep(20);
      assert.deepEqual(streamAborts, ['aborted']);
    });
  });

  it("a caller's signal ends a stream quietly and aborts the handler", async () => {
    streamAborts.length = 0;
    const controller = new AbortController();
    const seen: number[] = [];
    for await (const item of client.stream<{ i: number }>('GET', '/v1/forever', undefined, { signal: controller.signal })) {
      seen.push(item.i);
      if (item.i === 1) controller.abort();
    }
    assert.deepEqual(seen, [0, 1]);
    for (let i = 0; i < 50 && streamAborts.length === 0; i++) await sleep(20);
    assert.deepEqual(streamAborts, ['aborted']);
  });

  it('a call past its deadline fails with TIMEOUT, and the handler sees its signal abort', async () => {
    await assert.rejects(client.call('GET', '/v1/slow', undefined, { timeoutMs: 100 }), (err: CorralError) => {
      assert.equal(err.code, 'TIMEOUT');
      assert.match(err.message, /unix:.*GET \/v1\/slow within 100 ms/);
      return true;
    });
  });

  it('a caller-aborted call rejects with the abort reason', async () => {
    const controller = new AbortController();
    const pending = client.call('GET', '/v1/slow', undefined, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('user pressed ^C')), 50);
    await assert.rejects(pending, /user pressed \^C/);
  });

  it('clients sending garbage or nothing do not disturb a concurrent well-behaved client', async () => {
    const silent = probe(connectNet(socketPath), Buffer.alloc(0), 'connect', { waitMs: 3_000 });
    const garbage = probe(connectNet(socketPath), randomBytes(8192), 'connect', { waitMs: 3_000 });
    const halfPreface = probe(connectNet(socketPath), H2_PREFACE.subarray(0, 10), 'connect', { waitMs: 3_000 });
    const calls = await Promise.all(Array.from({ length: 20 }, (_, i) => client.call<{ body: number }>('POST', '/v1/echo', i)));
    assert.deepEqual(
      calls.map((c) => c.body),
      Array.from({ length: 20 }, (_, i) => i),
    );
    // The server drops the silent and the half-speaking peers after its preface timeout (300 ms here).
    for (const result of await Promise.all([silent, garbage, halfPreface])) assert.equal(result.closedByPeer, true);
  });

  it('caps the concurrent streams of a session', async () => {
    const session = connectH2('http://localhost', { createConnection: () => connectNet(socketPath) });
    const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once('remoteSettings', resolve));
    session.destroy();
    assert.equal(settings.maxConcurrentStreams, 128);
  });

  it('reconnects lazily after the session dies', async () => {
    const other = new RpcServer();
    const path = join(dir.dir, 'restart.sock');
    other.route('GET', '/v1/ping', () => Promise.resolve('pong'));
    await other.listenUnix(path);
    const c = new RpcClient({ kind: 'unix', path });
    try {
      assert.equal(await c.call('GET', '/v1/ping'), 'pong');
      await other.close();
      await assert.rejects(c.call('GET', '/v1/ping'), (err: CorralError) => err.code === 'UNAVAILABLE');
      const again = new RpcServer();
      again.route('GET', '/v1/ping', () => Promise.resolve('pong again'));
      await again.listenUnix(path);
      assert.equal(await c.call('GET', '/v1/ping'), 'pong again');
      await again.close();
    } finally {
      await c.close();
    }
  });
});

describe('UNIX socket lifecycle', { timeout: 30_000 }, () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir.cleanup());

  it('the client maps a missing socket (ENOENT) and a dead one (ECONNREFUSED) to UNAVAILABLE', async () => {
    const missing = new RpcClient({ kind: 'unix', path: join(dir.dir, 'none.sock') });
    await assert.rejects(missing.call('GET', '/v1/x'), (err: CorralError) => {
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /none\.sock \(ENOENT\).*start the agent/);
      return true;
    });
    const stale = staleSocket(join(dir.dir, 'stale.sock'));
    const dead = new RpcClient({ kind: 'unix', path: stale });
    await assert.rejects(dead.call('GET', '/v1/x'), (err: CorralError) => err.code === 'UNAVAILABLE' && /ECONNREFUSED/.test(err.message));
    await Promise.all([missing.close(), dead.close()]);
  });

  it('replaces a stale socket file, refuses to steal a live one, and removes its own on close', async () => {
    const path = staleSocket(join(dir.dir, 'agent.sock'));
    const first = new RpcServer();
    await first.listenUnix(path);
    const second = new RpcServer();
    await assert.rejects(second.listenUnix(path), (err: CorralError) => err.code === 'ALREADY_RUNNING');
    await second.close();
    assert.ok(existsSync(path), 'the live socket survives the refused second server');
    await first.close();
    assert.equal(existsSync(path), false);
  });

  it('refuses a path that is a regular file', async () => {
    const path = join(dir.dir, 'file');
    writeFileSync(path, 'not a socket');
    const server = new RpcServer();
    await assert.rejects(server.listenUnix(path), (err: CorralError) => err.code === 'CONFIG_INVALID');
    await server.close();
    assert.ok(existsSync(path));
  });

  it('close() ends open streams with SHUTTING_DOWN, aborts their handlers and finishes promptly', async () => {
    const path = join(dir.dir, 'agent.sock');
    const server = new RpcServer({ closeGraceMs: 500 });
    let aborted = false;
    server.route('GET', '/v1/watch', (req) =>
      (async function* () {
        yield { ready: true };
        // A handler that waits forever for an event, as a watch does.
        await new Promise((resolve) => req.signal.addEventListener('abort', resolve));
        aborted = true;
      })(),
    );
    server.route('GET', '/v1/hang', () => new Promise(() => undefined));
    await server.listenUnix(path);
    const client = new RpcClient({ kind: 'unix', path });
    const silent = connectNet(path);
    silent.on('error', () => undefined);
    const stream = client.stream('GET', '/v1/watch');
    const iterator = stream[Symbol.asyncIterator]();
    assert.deepEqual((await iterator.next()).value, { ready: true });
    const hanging = client.call('GET', '/v1/hang').catch((err: unknown) => err);
    await sleep(50);
    const started = performance.now();
    // The consumer is waiting for the next event, as a watcher does.
    const ended = assert.rejects(iterator.next(), (err: CorralError) => err.code === 'SHUTTING_DOWN');
    await server.close();
    const took = performance.now() - started;
    await ended;
    assert.equal(aborted, true);
    const hangError = (await hanging) as CorralError;
    assert.equal(hangError.code, 'UNAVAILABLE', `a call the server never answered fails once the session is destroyed: ${String(hangError)}`);
    assert.ok(took < 2_000, `close took ${took} ms`);
    assert.equal(existsSync(path), false);
    silent.destroy();
    await client.close();
  });
});

/** A socket file nobody listens on: its process was killed before it could clean up. */
function staleSocket(path: string): string {
  const script = `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
  spawnSync(process.execPath, ['-e', script], { timeout: 10_000 });
  assert.ok(statSync(path).isSocket(), 'the stale socket exists');
  return path;
}
