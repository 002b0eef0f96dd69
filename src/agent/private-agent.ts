// The private lock daemon: what `corral lock` starts on a per-user socket when no daemon answers
// there, as flom starts its own. It is an ordinary agent in a mode of its own: one node, the
// embedded store in a per-user data directory, a UNIX socket and no TCP listener at all, no
// credentials. Its membership is the usual loop on one node (so its status and ping work), and
// its locks live on the lock service's session like any agent's.
//
// It exits by itself once idle (no lock held or waited for, no client connected) for its lifespan,
// exactly as flom's daemon does with -d; a negative lifespan never exits. -x makes the lifespan
// 100 ms (flom's quiesce); -X exits at once.
//
// Two first callers racing to start it never get two daemons: the store's data directory lock and
// the socket's bind are both exclusive, and the loser exits quietly (status 0) for its caller to
// use the winner.

import { hostname } from 'node:os';
import path from 'node:path';
import { NODE_NAME, type ClusterConfig, type Timings } from '../config/cluster-config.js';
import type { Clock, Timer } from '../util/clock.js';

export interface PrivateAgentOptions {
  /** The daemon's socket; created with `socketMode`. */
  socket: string;
  socketMode: number;
  /** Idle milliseconds before it exits; negative: never. */
  lifespanMs: number;
}

/**
 * Lock session TTL 5 s, renewed every second: a crashed daemon's holders have that long (less the
 * margin) to stop their commands before the keys they held can expire after a restart.
 */
export const PRIVATE_TIMINGS: Timings = { sessionTtlSeconds: 5, keepaliveIntervalMs: 1000, requestTimeoutMs: 2000, shutdownGraceMs: 2000 };

/** flom's quiesce: the daemon exits once idle for this long. */
export const QUIESCE_LIFESPAN_MS = 100;

/** This machine's name as a node name, for `corral locks` (owner's node). */
export function privateNodeName(): string {
  const name = hostname()
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '')
    .slice(0, 63);
  return NODE_NAME.test(name) ? name : 'local';
}

/** The one-node configuration a private daemon runs with. */
export function privateAgentConfig(o: { socket: string; dataDir: string; node: string }): ClusterConfig {
  const dataDir = path.resolve(o.dataDir);
  return {
    file: '',
    cluster: 'private',
    coordinator: o.node,
    pkiDir: '',
    store: { backend: 'embedded', snapshotEveryRecords: 10_000 },
    nodes: [{ name: o.node, address: { host: '127.0.0.1', port: 0 }, socket: path.resolve(o.socket), dataDir, workDir: path.join(dataDir, 'work') }],
    join: undefined,
    timings: { ...PRIVATE_TIMINGS },
    groups: [],
  };
}

/** The idle timer: armed while nothing is going on, disarmed by any activity. */
export class IdleExit {
  private timer: Timer | undefined;
  private busy = true;
  private closed = false;

  constructor(
    private readonly clock: Clock,
    private lifespanMs: number,
    private readonly onIdle: (idleMs: number) => void,
  ) {}

  get lifespan(): number {
    return this.lifespanMs;
  }

  /** Reports whether anything is going on now. */
  update(busy: boolean): void {
    if (this.closed) return;
    this.busy = busy;
    if (busy) {
      this.timer?.cancel();
      this.timer = undefined;
    } else if (this.timer === undefined && this.lifespanMs >= 0) {
      const ms = this.lifespanMs;
      this.timer = this.clock.setTimer(ms, () => {
        this.timer = undefined;
        if (!this.busy && !this.closed) this.onIdle(ms);
      });
    }
  }

  /** -x: exit as soon as idle. */
  quiesce(): void {
    this.lifespanMs = QUIESCE_LIFESPAN_MS;
    this.timer?.cancel();
    this.timer = undefined;
    this.update(this.busy);
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
  }
}
