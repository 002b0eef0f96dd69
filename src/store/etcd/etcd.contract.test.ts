// The Store contract suite, unchanged, against EtcdStore on a real single-member etcd (started
// once for this file; every test uses its own key prefix, and opens and closes its own client).

import { after } from 'node:test';
import { startEtcd, type EtcdCluster } from '../../testkit/etcd.js';
import { storeContract } from '../contract.js';
import { etcdStoreTraits, openEtcdStore } from './index.js';

let etcd: Promise<EtcdCluster> | undefined;
const cluster = (): Promise<EtcdCluster> => (etcd ??= startEtcd({ members: 1 }));

after(async () => {
  if (etcd) await (await etcd).stop();
});

storeContract('etcd (one member)', async () => {
  const c = await cluster();
  const store = await openEtcdStore({ endpoints: c.endpoints });
  return {
    store,
    traits: etcdStoreTraits({ heartbeatIntervalMs: c.heartbeatIntervalMs, electionTimeoutMs: c.electionTimeoutMs }),
    close: () => store.close(),
  };
});
