// The embedded store's public surface.
export { EmbeddedStore, embeddedStoreTraits, openEmbeddedStore } from './embedded-store.js';
export type { EmbeddedStoreOptions, EmbeddedStoreStats } from './embedded-store.js';
