// The node-level supervisor: resource groups of processes moved between runlevels with
// Cluster::Init's semantics, as a library that `corral clinit -d` runs today and the agent will
// host. It owns the groups (group.ts), which own their processes (proc.ts); it validates and
// applies configurations, reports a status snapshot and a stream of every transition, and keeps a
// guard process (guard.ts) that stops everything should this process die without doing so.

import { CorralError } from '../api/errors.js';
import { RUN_MODES } from '../config/cltab.js';
import { systemClock, type Clock } from '../util/clock.js';
import { nullLogger, type Logger } from '../util/log.js';
import { EventHub, type Dropped, type EventStream } from './events.js';
import { Group, type GroupHost } from './group.js';
import { GuardLink } from './guard-link.js';
import {
  DEFAULT_LOG_ROTATION,
  type GroupSpec,
  type GroupState,
  type GroupStatus,
  type LogRotation,
  type SupervisorConfig,
  type SupervisorEvent,
  type SupervisorStatus,
} from './types.js';

export interface SupervisorOptions {
  config: SupervisorConfig;
  /** Per-process logs go to LOGDIR/GROUP/TAG.log. */
  logDir: string;
  logRotation?: LogRotation;
  clock?: Clock;
  logger?: Logger;
  /** The shell that runs each command with -c (default /bin/sh, as Perl's exec). */
  shell?: string;
  /** Run the guard that stops every process if this process dies first (default true). */
  guard?: boolean;
}

export interface ReloadSummary {
  added: string[];
  removed: string[];
  /** Groups whose processes differ; those already told were told their level again. */
  changed: string[];
}

export interface GroupLine {
  group: string;
  level: string;
  state: GroupState;
}

const WORD = /^[^\s]+$/;

export class Supervisor {
  private readonly groups = new Map<string, Group>();
  private order: string[] = [];
  private readonly hub = new EventHub<SupervisorEvent>();
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly guard: GuardLink | undefined;
  private readonly host: GroupHost;
  private rotation: LogRotation;
  private idleWaiters: (() => void)[] = [];
  private checkScheduled = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: SupervisorOptions) {
    validateConfig(options.config);
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? nullLogger;
    this.rotation = options.logRotation ?? DEFAULT_LOG_ROTATION;
    this.guard = options.guard === false ? undefined : new GuardLink(this.clock, this.logger);
    this.host = {
      clock: this.clock,
      logger: this.logger,
      shell: options.shell ?? '/bin/sh',
      logDir: options.logDir,
      registry: this.guard,
      rotation: () => this.rotation,
      emit: (event) => this.emit(event),
    };
    for (const spec of options.config.groups) this.addGroup(spec);
  }

  /** Starts the guard (the constructor starts nothing); call once, before the first tell. */
  start(): this {
    this.guard?.start();
    return this;
  }

  get logDir(): string {
    return this.options.logDir;
  }

  /** Moves a group to a level; returns at once (the transition is reported by events and status). */
  tell(group: string, level: string): void {
    if (this.closing) throw new CorralError('SHUTTING_DOWN', 'the supervisor is shutting down');
    if (!WORD.test(level)) throw new CorralError('BAD_REQUEST', `a level must be one word without whitespace, not '${level}'`);
    const target = this.groups.get(group);
    if (!target || target.deleted) throw new CorralError('NOT_FOUND', `no such group: ${group}`);
    this.logger.info({ group, runlevel: level }, `tell ${group} ${level}`);
    target.tell(level);
  }

  /**
   * Applies a new configuration: new groups are added (CONFIGURED), removed groups are halted
   * with the stop ladder and then forgotten, and a told group whose processes changed is told its
   * level again, which stops edited and deleted entries gracefully, starts new ones and leaves
   * unchanged ones running. Throws CONFIG_INVALID, changing nothing, when the configuration is invalid.
   */
  reload(config: SupervisorConfig, logRotation?: LogRotation): ReloadSummary {
    if (this.closing) throw new CorralError('SHUTTING_DOWN', 'the supervisor is shutting down');
    validateConfig(config);
    const summary: ReloadSummary = { added: [], removed: [], changed: [] };
    const names = new Set(config.groups.map((g) => g.name));
    if (logRotation) {
      this.rotation = logRotation;
      for (const group of this.groups.values()) group.setRotation(logRotation);
    }
    for (const spec of config.groups) {
      const group = this.groups.get(spec.name);
      if (!group) {
        this.addGroup(spec);
        summary.added.push(spec.name);
        continue;
      }
      group.deleted = false;
      if (!group.update(spec)) continue;
      summary.changed.push(spec.name);
      if (group.level !== null && group.state !== 'CONFIGURED' && group.state !== 'HALTING') group.tell(group.level);
    }
    for (const group of this.groups.values()) {
      if (names.has(group.name) || group.deleted) continue;
      group.deleted = true;
      summary.removed.push(group.name);
      group.halt();
    }
    this.order = [...config.groups.map((g) => g.name), ...this.order.filter((n) => !names.has(n) && this.groups.has(n))];
    this.scheduleCheck();
    if (summary.added.length + summary.removed.length + summary.changed.length > 0) this.logger.info(summary, 'configuration applied');
    return summary;
  }

  /** Halts every group (the stop ladder for every process); resolves when nothing runs. */
  halt(): Promise<void> {
    for (const group of this.groups.values()) group.halt();
    return this.whenIdle();
  }

  /** Resolves once every group is CONFIGURED with no process left. */
  whenIdle(): Promise<void> {
    if (this.allIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** SIGKILL to every running process group now (a second signal to a stopping daemon). */
  killAll(): void {
    for (const group of this.groups.values()) group.killNow();
  }

  status(): SupervisorStatus {
    return { groups: this.order.flatMap((n) => this.groups.get(n)?.status() ?? []), logDir: this.options.logDir };
  }

  groupStatus(name: string): GroupStatus | undefined {
    return this.groups.get(name)?.status();
  }

  /** One line per group told at least once: what the clstat file shows. */
  groupLines(): GroupLine[] {
    const lines: GroupLine[] = [];
    for (const name of this.order) {
      const group = this.groups.get(name);
      if (group && group.level !== null) lines.push({ group: name, level: group.level, state: group.state });
    }
    return lines;
  }

  /** Where a process's stdout and stderr go (rotated copies: .1, .2, ...). */
  logPath(group: string, tag: string): string {
    const g = this.groups.get(group);
    if (!g) throw new CorralError('NOT_FOUND', `no such group: ${group}`);
    return g.logPath(tag);
  }

  /** Synchronous listener for every event; returns the unsubscribe function. */
  subscribe(listener: (event: SupervisorEvent) => void): () => void {
    return this.hub.subscribe(listener);
  }

  /** Every event from now on, at the reader's pace (a reader more than `limit` behind loses the oldest). */
  events(limit?: number): EventStream<SupervisorEvent | Dropped> {
    return this.hub.stream(limit);
  }

  /**
   * Halts every group and waits up to `timeoutMs` (default: the longest stop ladder plus 10 s)
   * for the processes to end; any still stopping then are left to the guard. Idempotent.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closing ??= this.shutdown(options.timeoutMs);
    return this.closing;
  }

  private async shutdown(timeoutMs: number | undefined): Promise<void> {
    const limit = timeoutMs ?? Math.max(0, ...[...this.groups.values()].map((g) => g.spec.stop?.killAfterMs ?? 15_000)) + 10_000;
    let timer: { cancel(): void } | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = this.clock.setTimer(limit, () => resolve(true))));
    const stopped = await Promise.race([this.halt().then(() => false), timedOut]);
    timer?.cancel();
    if (stopped) this.logger.warn({ timeoutMs: limit }, 'processes still stopping at the shutdown deadline; the guard finishes their stop');
    for (const group of this.groups.values()) group.dispose();
    await this.guard?.close();
    this.hub.close();
  }

  private addGroup(spec: GroupSpec): void {
    this.groups.set(spec.name, new Group(spec, this.host));
    if (!this.order.includes(spec.name)) this.order.push(spec.name);
  }

  private emit(event: SupervisorEvent): void {
    try {
      this.hub.emit(event);
    } catch (err) {
      this.logger.error({ err: (err as Error).stack ?? String(err) }, 'an event listener failed');
    }
    if (event.kind === 'group' || event.kind === 'process') this.scheduleCheck();
  }

  /** After the current transition settles: forget deleted groups that finished halting, wake idle waiters. */
  private scheduleCheck(): void {
    if (this.checkScheduled) return;
    this.checkScheduled = true;
    queueMicrotask(() => {
      this.checkScheduled = false;
      for (const group of [...this.groups.values()]) {
        if (!group.deleted || !group.idle) continue;
        group.dispose();
        this.groups.delete(group.name);
        this.order = this.order.filter((n) => n !== group.name);
        this.logger.info({ group: group.name }, `group ${group.name} removed`);
        this.emit({ kind: 'removed', group: group.name, at: this.clock.wallNow(), mono: this.clock.now() });
      }
      if (this.allIdle()) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const wake of waiters) wake();
      }
    });
  }

  private allIdle(): boolean {
    for (const group of this.groups.values()) if (!group.idle) return false;
    return true;
  }
}

/** Throws CONFIG_INVALID naming the first problem of a configuration. */
export function validateConfig(config: SupervisorConfig): void {
  const groups = new Set<string>();
  for (const group of config.groups) {
    const where = `group '${group.name}'`;
    if (!WORD.test(group.name)) bad(`a group name must be one word without whitespace, not '${group.name}'`);
    if (groups.has(group.name)) bad(`${where} is declared twice`);
    groups.add(group.name);
    const tags = new Set<string>();
    for (const entry of group.entries) {
      const at = entry.origin ? `${entry.origin}: ` : `${where}, entry '${entry.tag}': `;
      if (!WORD.test(entry.tag)) bad(`${at}a tag must be one word without whitespace`);
      if (tags.has(entry.tag)) bad(`${at}duplicate tag ${entry.tag}`);
      tags.add(entry.tag);
      if (!(RUN_MODES as readonly string[]).includes(entry.mode)) bad(`${at}invalid mode '${String(entry.mode)}' (expected ${RUN_MODES.join(', ')})`);
      if (entry.levels.length === 0) bad(`${at}no levels, so it would never run`);
      if (typeof entry.command !== 'string' || (entry.command.trim() === '' && entry.mode !== 'off')) bad(`${at}the command is empty`);
    }
    const { stop, throttle } = group;
    if (stop && !(stop.termAfterMs >= 0 && stop.killAfterMs >= stop.termAfterMs && Number.isFinite(stop.killAfterMs))) {
      bad(`${where}: the stop delays must satisfy 0 <= SIGTERM delay <= SIGKILL delay`);
    }
    if (throttle && !(Number.isInteger(throttle.limit) && throttle.limit >= 0 && throttle.windowMs > 0 && throttle.pauseMs >= 0 && Number.isFinite(throttle.pauseMs))) {
      bad(`${where}: the respawn throttle needs a whole count >= 0, a window > 0 and a pause >= 0`);
    }
  }
}

function bad(message: string): never {
  throw new CorralError('CONFIG_INVALID', message);
}
