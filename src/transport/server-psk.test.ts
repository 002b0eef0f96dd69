import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { connect as connectTls } from 'node:tls';
import type { CorralError } from '../api/errors.js';
import { RpcClient } from './client.js';
import { H2_PREFACE, looksLikeHttp, makeCluster, probe } from './fixtures.js';
import { joinPsk, newJoinSecret } from './join-token.js';
import { RpcServer } from './server.js';
import type { PeerIdentity } from './types.js';

const HOST = '127.0.0.1';

describe('the PSK join listener', { timeout: 30_000 }, () => {
  const psk = joinPsk(newJoinSecret());
  let server: RpcServer;
  let port: number;
  let invocations = 0;
  const clients: RpcClient[] = [];
  const client = (identity: string, key: Buffer): RpcClient => {
    const c = new RpcClient({ kind: 'psk', host: HOST, port, identity, key }, { connectTimeoutMs: 3_000 });
    clients.push(c);
    return c;
  };

  before(async () => {
    server = new RpcServer();
    server.route(
      'POST',
      '/v1/join',
      (req) => {
        invocations++;
        return Promise.resolve({ peer: req.peer, body: req.body });
      },
      { allow: (peer) => peer.kind === 'psk' },
    );
    server.route('POST', '/v1/store/get', () => {
      invocations++;
      return Promise.resolve('secret data');
    });
    port = await server.listenPsk({ host: HOST, port: 0, ...psk });
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
  });

  it('answers a joiner that holds the key, as a psk peer', async () => {
    const reply = await client(psk.identity, psk.key).call<{ peer: PeerIdentity; body: unknown }>('POST', '/v1/join', { name: 'n9' });
    assert.deepEqual(reply, { peer: { kind: 'psk', identity: psk.identity }, body: { name: 'n9' } });
  });

  it('a PSK peer reaches only routes that admit it explicitly', async () => {
    const before = invocations;
    await assert.rejects(client(psk.identity, psk.key).call('POST', '/v1/store/get', {}), (err: CorralError) => err.code === 'FORBIDDEN');
    assert.equal(invocations, before);
  });

  it('a wrong key fails the handshake; no handler runs', async () => {
    const before = invocations;
    await assert.rejects(client(psk.identity, randomBytes(32)).call('POST', '/v1/join', {}), (err: CorralError) => {
      assert.equal(err.code, 'TLS');
      assert.match(err.message, /join token/);
      return true;
    });
    const raw = await probe(
      connectTls({
        host: HOST,
        port,
        ALPNProtocols: ['h2'],
        ciphers: 'TLS_AES_128_GCM_SHA256',
        pskCallback: () => ({ psk: randomBytes(32), identity: psk.identity }),
        checkServerIdentity: () => undefined,
      }),
      H2_PREFACE,
      'secureConnect',
    );
    assert.equal(looksLikeHttp(raw.received), false);
    assert.equal(invocations, before);
  });

  it('an unknown identity fails the handshake', async () => {
    await assert.rejects(client('corral-join-000000', psk.key).call('POST', '/v1/join', {}), (err: CorralError) => err.code === 'TLS');
  });

  it('a certificate-only client cannot connect', async () => {
    const cluster = makeCluster();
    const c = new RpcClient({ kind: 'tls', host: HOST, port, credentials: cluster.admin }, { connectTimeoutMs: 3_000 });
    clients.push(c);
    await assert.rejects(c.call('POST', '/v1/join', {}), (err: CorralError) => err.code === 'TLS');
  });
});
