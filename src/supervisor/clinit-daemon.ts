// `corral clinit -d`: one node's supervisor for one cltab, answering clinit on a UNIX socket and
// keeping the clstat file. What differs from Cluster::Init 0.215, deliberately: an invalid cltab
// stops the start with FILE:LINE (0.215 idled without a socket) and is refused on a re-read
// without touching the configuration in force; a live daemon's socket is never taken over; each
// request is served on its own, with deadlines, so no client can hold the others up; a shutdown
// runs the whole stop ladder and exits when the last process has stopped.

import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { CorralError } from '../api/errors.js';
import { CLTAB_DEFAULTS, parseCltab, type Cltab } from '../config/cltab.js';
import { systemClock, type Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { ClstatWriter } from './clstat.js';
import { cltabToConfig } from './cltab-config.js';
import { ClinitSocketServer } from './clinit-socket.js';
import { REPLIES, type ClinitRequest, type Reply } from './protocol.js';
import { Supervisor, type ReloadSummary } from './supervisor.js';

export interface ClinitDaemonOptions {
  cltab: string;
  /** `-s`: used when the cltab has no `:::socket:` (the cltab's settings win, as in Cluster::Init). */
  socket?: string;
  logger: Logger;
  clock?: Clock;
  /** The shutdown deadline (default: the longest stop ladder plus 10 s); the guard finishes after it. */
  shutdownTimeoutMs?: number;
}

/** Where the daemon puts things: the cltab's settings, else the option, else Cluster::Init's defaults. */
export interface ClinitPaths {
  cltab: string;
  socket: string;
  clstat: string;
  logDir: string;
}

export function resolvePaths(cltabFile: string, cltab: Cltab | undefined, socketOption?: string): ClinitPaths {
  return {
    cltab: path.resolve(cltabFile),
    socket: path.resolve(cltab?.socket ?? socketOption ?? CLTAB_DEFAULTS.socket),
    clstat: path.resolve(cltab?.clstat ?? CLTAB_DEFAULTS.clstat),
    logDir: path.resolve(cltab?.log ?? CLTAB_DEFAULTS.log),
  };
}

/** The cltab's text, or null when there is none (Cluster::Init then runs with no entries). */
function readText(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new CorralError('CONFIG_INVALID', `${file}: cannot be read (${code ?? String(err)}); check the path and its permissions`, { cause: err });
  }
}

export class ClinitDaemon {
  private cltabText: string | null;
  private stopping: Promise<void> | undefined;
  private readonly server: ClinitSocketServer;
  private readonly clstat: ClstatWriter;
  private resolveDone: () => void = () => undefined;
  private readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  private constructor(
    readonly paths: ClinitPaths,
    private readonly supervisor: Supervisor,
    text: string | null,
    private readonly options: ClinitDaemonOptions,
  ) {
    this.cltabText = text;
    const { logger } = options;
    this.server = new ClinitSocketServer((req) => this.handle(req), { logger });
    this.clstat = new ClstatWriter(paths.clstat, () => supervisor.groupLines(), options.clock ?? systemClock, logger);
  }

  /** Reads the cltab, binds the socket (refusing one a live daemon answers on), starts the supervisor. */
  static async start(options: ClinitDaemonOptions): Promise<ClinitDaemon> {
    const { logger } = options;
    const text = readText(options.cltab);
    if (text === null) logger.warn({ cltab: options.cltab }, `file not found: ${options.cltab}`);
    const cltab = text === null ? undefined : parseCltab(text, options.cltab);
    const paths = resolvePaths(options.cltab, cltab, options.socket);
    try {
      mkdirSync(path.dirname(paths.socket), { recursive: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new CorralError('CONFIG_INVALID', `cannot create ${path.dirname(paths.socket)} for the socket (${code}); set :::socket: in the cltab or -s`, { cause: err });
    }
    const supervisor = new Supervisor({
      config: cltabToConfig(cltab),
      logDir: paths.logDir,
      ...(cltab?.logRotation ? { logRotation: cltab.logRotation } : {}),
      logger,
      ...(options.clock ? { clock: options.clock } : {}),
    });
    const daemon = new ClinitDaemon(paths, supervisor, text, options);
    await daemon.server.listen(paths.socket);
    supervisor.start();
    supervisor.subscribe((event) => {
      if (event.kind === 'group' || event.kind === 'removed') daemon.clstat.write();
    });
    daemon.clstat.write();
    logger.info({ ...paths, groups: cltab?.groups.length ?? 0 }, `clinit daemon listening on ${paths.socket}`);
    return daemon;
  }

  /**
   * Re-reads the cltab if its text changed and applies the differences. An invalid file throws
   * CONFIG_INVALID and the configuration in force stays; a missing one empties it (as 0.215).
   */
  reread(): ReloadSummary {
    const file = this.options.cltab;
    const text = readText(file);
    const none: ReloadSummary = { added: [], removed: [], changed: [] };
    if (text === this.cltabText) return none;
    if (text === null) this.options.logger.warn({ cltab: file }, `file not found: ${file}`);
    const cltab = text === null ? undefined : parseCltab(text, file);
    const next = resolvePaths(file, cltab, this.options.socket);
    for (const key of ['socket', 'clstat'] as const) {
      if (next[key] !== this.paths[key]) this.options.logger.warn({ [key]: next[key] }, `the ${key} setting changed; it applies when the daemon restarts`);
    }
    const summary = this.supervisor.reload(cltabToConfig(cltab), cltab?.logRotation);
    this.cltabText = text;
    return summary;
  }

  /** Stops every group with the ladder, removes clstat and the socket; idempotent. */
  shutdown(reason: string): Promise<void> {
    this.stopping ??= this.stop(reason);
    return this.stopping;
  }

  /** For a second signal: SIGKILL to every process group now. */
  killNow(): void {
    this.supervisor.killAll();
  }

  /** Resolves when a shutdown has finished. */
  stopped(): Promise<void> {
    return this.done;
  }

  private handle(req: ClinitRequest): unknown {
    switch (req.op) {
      case 'tell':
        return this.tell(req.group, req.level);
      case 'reread':
        return { msg: REPLIES.reread, ...this.reread() };
      case 'shutdown':
        return this.requestShutdown();
      case 'status':
        return this.supervisor.status();
    }
  }

  private tell(group: string, level: string): Reply {
    if (this.stopping) throw new CorralError('SHUTTING_DOWN', 'the clinit daemon is shutting down');
    this.reread();
    this.supervisor.tell(group, level);
    return { msg: REPLIES.told };
  }

  private requestShutdown(): Reply {
    // The halt begins now (so the status file shows it before the client reads it); the daemon
    // exits once every process has stopped, long after this reply.
    void this.shutdown('clinit -k');
    return { msg: REPLIES.halting };
  }

  private async stop(reason: string): Promise<void> {
    this.options.logger.info({ reason }, 'all groups halting');
    await this.supervisor.close(this.options.shutdownTimeoutMs !== undefined ? { timeoutMs: this.options.shutdownTimeoutMs } : {});
    this.clstat.close();
    await this.server.close();
    this.options.logger.info('clinit daemon stopped');
    this.resolveDone();
  }
}
