// The Store contract suite, unchanged, against RemoteStore: the embedded store served by the
// agent's store routes over HTTP/2 + mutual TLS. It proves the wire codec (64-bit revisions as
// strings, transactions, leases) and watch streaming end to end.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addStoreRoutes } from '../agent/store-routes.js';
import { storeContract } from '../store/contract.js';
import { embeddedStoreTraits, openEmbeddedStore } from '../store/embedded/index.js';
import { RpcClient } from '../transport/client.js';
import { makeCluster } from '../transport/fixtures.js';
import { RpcServer } from '../transport/server.js';
import { RemoteStore } from './remote-store.js';

const cluster = makeCluster('contract');

storeContract('remote (embedded store over HTTP/2 + mutual TLS)', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'corral-remote-contract-'));
  const embedded = await openEmbeddedStore({ dataDir });
  const server = new RpcServer();
  addStoreRoutes(server, embedded);
  const port = await server.listenTls({ host: '127.0.0.1', port: 0, credentials: cluster.server });
  const rpc = new RpcClient({ kind: 'tls', host: '127.0.0.1', port, credentials: cluster.admin, serverName: 'n1' }, { requestTimeoutMs: 10_000 });
  const store = new RemoteStore(rpc, 'the test server', { ownsClient: true });
  return {
    store,
    // Expiry is the embedded store's; a watch or answer crosses one more hop.
    traits: { ...embeddedStoreTraits, leaseExpirySlackMs: embeddedStoreTraits.leaseExpirySlackMs + 250 },
    close: async () => {
      await store.close();
      await server.close();
      await embedded.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
});
