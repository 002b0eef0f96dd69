// Runs the Store contract suite on the embedded store: once with default settings, and once with a
// snapshot every few records so that segment rotation happens in the middle of every test.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeContract } from '../contract.js';
import { embeddedStoreTraits, openEmbeddedStore } from './index.js';

function embedded(options: { snapshotEveryRecords?: number }) {
  return async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'corral-store-contract-'));
    const store = await openEmbeddedStore({ dataDir, ...options });
    return {
      store,
      traits: embeddedStoreTraits,
      close: async () => {
        await store.close();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  };
}

storeContract('embedded', embedded({}));
storeContract('embedded, snapshot every 5 records', embedded({ snapshotEveryRecords: 5 }));
