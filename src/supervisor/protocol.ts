// What `corral clinit` and its daemon say to each other: JSON over HTTP/2 on the daemon's UNIX
// socket (mode 0600), one small request per command. The reply texts are Cluster::Init's.

export const CLINIT_PATHS = {
  tell: '/v1/clinit/tell',
  reread: '/v1/clinit/reread',
  shutdown: '/v1/clinit/shutdown',
  status: '/v1/clinit/status',
} as const;

export const REPLIES = {
  told: 'level transition started',
  halting: 'all groups halting',
  reread: 'cltab re-read',
} as const;

export interface TellRequest {
  group: string;
  level: string;
}

export interface Reply {
  msg: string;
}
