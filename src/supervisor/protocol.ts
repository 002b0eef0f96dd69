// What `corral clinit` and its daemon say to each other: one JSON line each way per connection on
// the daemon's UNIX socket (mode 0600). The reply texts are Cluster::Init's.

import type { WireError } from '../api/errors.js';

export type ClinitRequest = { op: 'tell'; group: string; level: string } | { op: 'reread' } | { op: 'shutdown' } | { op: 'status' };

export type ClinitResponse<T = unknown> = { ok: true; result: T } | { ok: false; error: WireError };

export const REPLIES = {
  told: 'level transition started',
  halting: 'all groups halting',
  reread: 'cltab re-read',
} as const;

export interface Reply {
  msg: string;
}
