import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isCorralError } from '../api/errors.js';
import { PATHS, type PingResponse } from '../api/types.js';
import { CorralClient } from '../client/client.js';
import { RemoteStore } from '../client/remote-store.js';
import { findNode, loadClusterConfig } from '../config/cluster-config.js';
import { loadAdminCredentials, loadNodeCredentials } from '../config/pki-files.js';
import { KEYS } from '../coord/membership.js';
import { RpcClient } from '../transport/client.js';
import { adminStore, LocalClusterFixture, waitUntil } from '../testkit/local.js';

async function rejects(what: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(what, (err) => isCorralError(err) && err.code === code, `expected ${code}`);
}

describe('who may do what, and agents that defend their keys', { timeout: 120_000 }, () => {
  const lc = new LocalClusterFixture(3);
  let admin: RemoteStore;
  let asN2: RemoteStore;
  const clients: RpcClient[] = [];

  function tlsTo(target: string, credentials: ReturnType<typeof loadAdminCredentials>): RpcClient {
    const config = loadClusterConfig(lc.config);
    const node = findNode(config, target);
    const client = new RpcClient({ kind: 'tls', host: node.address.host, port: node.address.port, credentials, serverName: node.name }, { requestTimeoutMs: 5000 });
    clients.push(client);
    return client;
  }

  before(async () => {
    await lc.up();
    admin = await adminStore(lc.config);
    const config = loadClusterConfig(lc.config);
    asN2 = new RemoteStore(tlsTo(config.coordinator, loadNodeCredentials(config.pkiDir, 'n2')), 'coordinator as n2');
  });
  after(async () => {
    await admin.close();
    await Promise.all(clients.map((c) => c.close()));
    await lc.destroy();
  });

  it("a node's certificate cannot write other nodes' keys, wipe the store, or touch their leases", async () => {
    const n1Member = (await admin.get(KEYS.members + 'n1')).kv;
    assert.ok(n1Member && n1Member.lease !== 0n);
    await rejects(asN2.delete('/', { prefix: true }), 'FORBIDDEN');
    await rejects(asN2.put(KEYS.members + 'n1', 'forged'), 'FORBIDDEN');
    await rejects(asN2.put(KEYS.registry + 'n3', JSON.stringify({ address: '10.9.9.9:1' })), 'FORBIDDEN');
    await rejects(asN2.revokeLease(n1Member.lease), 'FORBIDDEN');
    await rejects(asN2.keepAlive(n1Member.lease), 'FORBIDDEN');
    await rejects(asN2.put('/anything', 'x'), 'FORBIDDEN');
    await rejects(asN2.txn({ compare: [], success: [{ type: 'delete', key: KEYS.members + 'n3' }] }), 'FORBIDDEN');
    const n1Campaign = (await admin.range(KEYS.masterElection)).kvs.find((kv) => kv.lease === n1Member.lease);
    if (n1Campaign) await rejects(asN2.delete(n1Campaign.key), 'FORBIDDEN');
    // Nothing changed, and reads are allowed.
    assert.equal((await asN2.get(KEYS.members + 'n1')).kv?.value, n1Member.value);
  });

  it('a node may use its own leases and the keys they own', async () => {
    const grant = await asN2.grantLease(5);
    await asN2.keepAlive(grant.id);
    const mine = `/corral/election/authority-test/${grant.id.toString(16)}`;
    await asN2.put(mine, 'n2', { lease: grant.id });
    await rejects(asN2.put(mine, 'n2'), 'FORBIDDEN'); // a session-owned key must carry its lease
    await asN2.delete(mine);
    await asN2.revokeLease(grant.id);
    await rejects(asN2.keepAlive(grant.id), 'LEASE_NOT_FOUND'); // gone, not forbidden: sessions rely on it
  });

  it('only an operator may make the master step down', async () => {
    const config = loadClusterConfig(lc.config);
    const { status } = await lc.status();
    const master = status.master as string;
    const asNode = tlsTo(master, loadNodeCredentials(config.pkiDir, master === 'n2' ? 'n3' : 'n2'));
    await rejects(asNode.call('POST', PATHS.masterStepDown, {}), 'FORBIDDEN');
    assert.equal((await lc.status()).status.master, master);
  });

  it('a master whose campaign key is deleted stops believing it leads', async () => {
    const { status } = await lc.status();
    const old = status.master as string;
    const oldTerm = BigInt(status.term as string);
    const key = (await admin.range(KEYS.masterElection)).kvs.find((kv) => kv.value === old)?.key as string;
    await admin.delete(key);
    const { value: next } = await waitUntil('a new term', async () => {
      const s = (await lc.status()).status;
      return s.term !== null && BigInt(s.term) > oldTerm ? s : undefined;
    }, 5000);
    // Exactly one agent believes it is master, and it is the one status names.
    const config = loadClusterConfig(lc.config);
    const phases = await Promise.all(
      config.nodes.map(async (n) => {
        const c = new CorralClient(config, { socket: n.socket });
        try {
          return [n.name, (await c.call<PingResponse>('GET', PATHS.ping)).phase] as const;
        } finally {
          await c.close();
        }
      }),
    );
    assert.deepEqual(phases.filter(([, p]) => p === 'master').map(([n]) => n), [next.master]);
    assert.match(await lc.log(old), /the campaign key was deleted: no longer master/);
  });

  it('a member key deleted while its node is up is published again', async () => {
    await admin.delete(KEYS.members + 'n3');
    const { ms } = await waitUntil('n3 to be up again', async () => {
      const s = (await lc.status()).status;
      return s.nodes.find((n) => n.name === 'n3')?.state === 'up' ? true : undefined;
    }, 5000);
    assert.ok(ms < 5000);
    assert.match(await lc.log('n3'), /the member key was deleted while this node is up; publishing it again/);
  });
});
