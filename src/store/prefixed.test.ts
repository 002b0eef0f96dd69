// The contract suite through a key prefix: another writer's keys outside the prefix must be
// invisible, and everything inside behaves exactly as the unprefixed store.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeContract } from './contract.js';
import { embeddedStoreTraits, openEmbeddedStore } from './embedded/index.js';
import { PrefixedStore } from './prefixed.js';

storeContract('embedded behind the prefix /clusters/c1', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'corral-prefixed-'));
  const inner = await openEmbeddedStore({ dataDir });
  // Keys of a neighbour sharing the store: a watch or range inside the prefix must never see them.
  await inner.put('/clusters/c2/x', 'neighbour');
  await inner.put('/other', 'neighbour');
  return {
    store: new PrefixedStore(inner, '/clusters/c1'),
    traits: embeddedStoreTraits,
    close: async () => {
      await inner.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
});
