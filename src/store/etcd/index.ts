// The etcd backend's public surface.
export { EtcdStore, etcdStoreTraits, openEtcdStore } from './etcd-store.js';
export type { EtcdStoreOptions } from './etcd-store.js';
export type { EtcdTlsOptions } from './endpoints.js';
