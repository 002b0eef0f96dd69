// The group machine: one resource group moved between runlevels. The edges are Cluster::Init's
// DFA/Group.pm (§3.3 of the reference); the actions follow Group.pm (§1.7–1.9) with its defects
// fixed: processes of an entry that was edited or deleted are stopped with the signal ladder in
// STOPPING, like any process leaving the level (0.215 SIGKILLed them in DUMPING), a HALT stops a
// PASSED or FAILED group's processes too, and every process change is an event, not a 1 s poll.

import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { entryHasLevel } from './levels.js';
import { processLogPath, RotatingLog } from './logfile.js';
import { Proc, type ProcContext, type ProcessRegistry } from './proc.js';
import {
  DEFAULT_STOP,
  DEFAULT_THROTTLE,
  type EntrySpec,
  type ExitInfo,
  type GroupSpec,
  type GroupState,
  type GroupStatus,
  type LogRotation,
  type ProcState,
  type SupervisorEvent,
} from './types.js';

type GroupEventType = 'TELL' | 'HALT' | 'PROC' | 'ALL_STARTED' | 'ALL_DONE' | 'ALL_PASSED' | 'ANY_FAILED' | 'OLD_STOPPED' | 'CLEAN' | 'ALL_HALTED';

interface GroupEvent {
  type: GroupEventType;
  level?: string;
}

type Action = 'none' | 'startNext' | 'checkVerdict' | 'stopOld' | 'checkStopped' | 'collect' | 'haltAll' | 'checkHalted' | 'forget';

const TOLD = { TELL: ['STOPPING', 'stopOld'], HALT: ['HALTING', 'haltAll'] } as const satisfies Partial<Record<GroupEventType, [GroupState, Action]>>;

/** state → event → [next state, action]. An event with no edge is ignored, as in the original. */
const GRAPH: Record<GroupState, Partial<Record<GroupEventType, readonly [GroupState, Action]>>> = {
  CONFIGURED: { TELL: ['STARTING', 'startNext'], HALT: ['CONFIGURED', 'none'] },
  STARTING: { ...TOLD, PROC: ['STARTING', 'startNext'], ALL_STARTED: ['CHECKING', 'checkVerdict'] },
  CHECKING: { ...TOLD, PROC: ['CHECKING', 'checkVerdict'], ALL_DONE: ['DONE', 'none'], ALL_PASSED: ['PASSED', 'none'], ANY_FAILED: ['FAILED', 'none'] },
  DONE: { ...TOLD },
  PASSED: { ...TOLD },
  FAILED: { ...TOLD },
  STOPPING: { ...TOLD, PROC: ['STOPPING', 'checkStopped'], OLD_STOPPED: ['DUMPING', 'collect'] },
  DUMPING: { ...TOLD, CLEAN: ['STARTING', 'startNext'] },
  HALTING: { TELL: ['STOPPING', 'stopOld'], PROC: ['HALTING', 'checkHalted'], ALL_HALTED: ['CONFIGURED', 'forget'] },
};

/** What the supervisor lends its groups. */
export interface GroupHost {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly shell: string;
  readonly logDir: string;
  readonly registry: ProcessRegistry | undefined;
  rotation(): LogRotation;
  emit(event: SupervisorEvent): void;
}

export class Group {
  state: GroupState = 'CONFIGURED';
  /** The level last told; null until the first tell. */
  level: string | null = null;
  /** Removed from the configuration: halting, then forgotten by the supervisor. */
  deleted = false;
  private readonly procs = new Map<string, Proc>();
  private readonly logs = new Map<string, RotatingLog>();
  private readonly queue: GroupEvent[] = [];
  private dispatching = false;
  private readonly ctx: ProcContext;

  constructor(
    private specValue: GroupSpec,
    private readonly host: GroupHost,
  ) {
    this.ctx = {
      group: specValue.name,
      clock: host.clock,
      logger: host.logger,
      shell: host.shell,
      registry: host.registry,
      ladder: () => this.specValue.stop ?? DEFAULT_STOP,
      throttle: () => this.specValue.throttle ?? DEFAULT_THROTTLE,
      env: () => ({ ...process.env, ...this.specValue.env }),
      cwd: () => this.specValue.cwd,
      log: (tag) => this.logFor(tag),
      transition: (proc, from, to, cause, exit) => this.onProcTransition(proc, from, to, cause, exit),
      warn: (proc, message) => {
        host.logger.warn({ group: this.name, tag: proc.tag }, message);
        host.emit({ kind: 'warning', group: this.name, tag: proc.tag, message, at: host.clock.wallNow(), mono: host.clock.now() });
      },
    };
  }

  get name(): string {
    return this.specValue.name;
  }

  get spec(): GroupSpec {
    return this.specValue;
  }

  /** CONFIGURED with nothing left running. */
  get idle(): boolean {
    return this.state === 'CONFIGURED' && this.procs.size === 0;
  }

  tell(level: string): void {
    this.post({ type: 'TELL', level });
  }

  halt(): void {
    this.post({ type: 'HALT' });
  }

  /**
   * Takes a new specification; true when its processes differ (entries added, removed or edited,
   * or the environment changed), i.e. a re-tell of the current level would change something.
   */
  update(spec: GroupSpec): boolean {
    const changed = groupShape(this.specValue) !== groupShape(spec);
    this.specValue = spec;
    return changed;
  }

  setRotation(rotation: LogRotation): void {
    for (const log of this.logs.values()) log.setRotation(rotation);
  }

  killNow(): void {
    for (const proc of this.procs.values()) proc.killNow();
  }

  /** Cancels timers and closes logs; for a group the supervisor forgets. */
  dispose(): void {
    for (const proc of this.procs.values()) proc.dispose();
    for (const log of this.logs.values()) log.close();
    this.logs.clear();
  }

  logPath(tag: string): string {
    return processLogPath(this.host.logDir, this.name, tag);
  }

  status(): GroupStatus {
    const order = this.specValue.entries.map((e) => e.tag);
    const procs = [...this.procs.values()].sort((a, b) => rank(order, a.tag) - rank(order, b.tag));
    return { name: this.name, level: this.level, state: this.state, processes: procs.map((p) => p.status()) };
  }

  private post(event: GroupEvent): void {
    this.queue.push(event);
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      while (this.queue.length > 0) {
        let next: GroupEvent | undefined = this.queue.shift();
        while (next) next = this.step(next);
      }
    } finally {
      this.dispatching = false;
    }
  }

  private step(event: GroupEvent): GroupEvent | undefined {
    const from = this.state;
    const fromLevel = this.level;
    const edge = GRAPH[from][event.type];
    if (!edge) return undefined;
    const [to, action] = edge;
    if (event.type === 'TELL' && event.level !== undefined) this.level = event.level;
    this.state = to;
    if (to !== from || this.level !== fromLevel) {
      const level = this.level;
      this.host.logger.debug({ group: this.name, runlevel: level, from, to, cause: event.type }, 'group transition');
      if (to === 'DONE' || to === 'PASSED' || to === 'FAILED') this.host.logger.info({ group: this.name, runlevel: level }, `group ${this.name} is ${to} at level ${String(level)}`);
      this.host.emit({ kind: 'group', group: this.name, level, from, to, cause: event.type, at: this.host.clock.wallNow(), mono: this.host.clock.now() });
    }
    try {
      return this.act(action);
    } catch (err) {
      // 0.215 died on any exception in an action; one group's bug must not end the supervisor.
      this.host.logger.error({ group: this.name, action, err: (err as Error).stack ?? String(err) }, 'group action failed');
      return undefined;
    }
  }

  private act(action: Action): GroupEvent | undefined {
    switch (action) {
      case 'none':
        return undefined;
      case 'startNext':
        return this.startNext();
      case 'checkVerdict':
        return this.checkVerdict();
      case 'stopOld':
        for (const proc of this.procs.values()) if (this.isOld(proc) && proc.state !== 'CONFIGURED') proc.stop();
        return this.checkStopped();
      case 'checkStopped':
        return this.checkStopped();
      case 'collect':
        for (const proc of [...this.procs.values()]) {
          if (this.isOld(proc) && proc.state === 'CONFIGURED') this.forgetProc(proc);
        }
        return { type: 'CLEAN' };
      case 'haltAll':
        for (const proc of this.procs.values()) if (proc.state !== 'CONFIGURED') proc.stop();
        return this.checkHalted();
      case 'checkHalted':
        return this.checkHalted();
      case 'forget':
        for (const proc of [...this.procs.values()]) this.forgetProc(proc);
        return undefined;
    }
  }

  /**
   * Walks the level's entries in file order: finished ones are skipped (a re-tell does not re-run
   * them), a stopped one is started, and anything still running holds the walk, so a `wait` or
   * `test` entry blocks the entries after it until it exits.
   */
  private startNext(): GroupEvent | undefined {
    const level = this.level as string;
    for (const entry of this.specValue.entries) {
      if (!entryHasLevel(entry.levels, level)) continue;
      let proc = this.procs.get(entry.tag);
      if (proc && proc.signature !== this.signatureOf(entry)) {
        // Edited while STOPPING was retargeted: wait for the old run to end, then start anew.
        if (proc.state !== 'CONFIGURED') return undefined;
        this.forgetProc(proc);
        proc = undefined;
      }
      if (!proc) {
        proc = new Proc(entry, this.signatureOf(entry), this.ctx);
        this.procs.set(entry.tag, proc);
      }
      if (proc.ran) continue;
      if (proc.state !== 'CONFIGURED') return undefined;
      proc.start();
      if (!proc.ran) return undefined;
    }
    return { type: 'ALL_STARTED' };
  }

  /** Cluster::Init's ckproc, in its order: running, any FAIL, nothing, all PASS, else DONE. */
  private checkVerdict(): GroupEvent | undefined {
    const procs = [...this.procs.values()].filter((p) => this.inLevel(p));
    if (procs.some((p) => !p.ran)) return undefined;
    if (procs.some((p) => p.state === 'FAIL')) return { type: 'ANY_FAILED' };
    if (procs.length > 0 && procs.every((p) => p.state === 'PASS')) return { type: 'ALL_PASSED' };
    return { type: 'ALL_DONE' };
  }

  private checkStopped(): GroupEvent | undefined {
    for (const proc of this.procs.values()) if (this.isOld(proc) && proc.state !== 'CONFIGURED') return undefined;
    return { type: 'OLD_STOPPED' };
  }

  private checkHalted(): GroupEvent | undefined {
    for (const proc of this.procs.values()) if (proc.state !== 'CONFIGURED') return undefined;
    return { type: 'ALL_HALTED' };
  }

  private onProcTransition(proc: Proc, from: ProcState, to: ProcState, cause: string, exit: ExitInfo | undefined): void {
    const { host } = this;
    host.logger.debug({ group: this.name, tag: proc.tag, from, to, cause, pid: proc.pid }, 'process transition');
    if (exit && from !== 'STOPPING' && proc.spec.mode !== 'wait' && proc.spec.mode !== 'test') {
      host.logger.info({ group: this.name, tag: proc.tag, code: exit.code, signal: exit.signal }, `${proc.tag} exited`);
    }
    host.emit({
      kind: 'process',
      group: this.name,
      tag: proc.tag,
      from,
      to,
      cause,
      pid: proc.pid,
      ...(exit ? { exit } : {}),
      at: host.clock.wallNow(),
      mono: host.clock.now(),
    });
    if (from !== to) this.post({ type: 'PROC' });
  }

  private entryFor(tag: string): EntrySpec | undefined {
    return this.specValue.entries.find((e) => e.tag === tag);
  }

  private inLevel(proc: Proc): boolean {
    const entry = this.entryFor(proc.tag);
    return entry !== undefined && this.level !== null && entryHasLevel(entry.levels, this.level);
  }

  /** Leaving: not in the level told, or its entry was deleted or edited since it started. */
  private isOld(proc: Proc): boolean {
    const entry = this.entryFor(proc.tag);
    return !entry || proc.signature !== this.signatureOf(entry) || !this.inLevel(proc);
  }

  private signatureOf(entry: EntrySpec): string {
    return JSON.stringify([entry.mode, entry.command, sortedEnv(this.specValue.env), this.specValue.cwd ?? null]);
  }

  private forgetProc(proc: Proc): void {
    proc.dispose();
    this.procs.delete(proc.tag);
  }

  private logFor(tag: string): RotatingLog {
    let log = this.logs.get(tag);
    if (!log) {
      log = new RotatingLog(this.logPath(tag), this.host.rotation(), this.host.logger);
      this.logs.set(tag, log);
    }
    return log;
  }
}

function sortedEnv(env: Readonly<Record<string, string>> | undefined): [string, string][] {
  return Object.entries(env ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** What decides which processes run: entries in order with levels, modes and commands, and the environment. */
function groupShape(spec: GroupSpec): string {
  return JSON.stringify([spec.entries.map((e) => [e.tag, e.levels, e.mode, e.command]), sortedEnv(spec.env), spec.cwd ?? null]);
}

function rank(order: string[], tag: string): number {
  const i = order.indexOf(tag);
  return i < 0 ? order.length : i;
}
