// The process machine: one cltab entry of one group, from CONFIGURED through its runmode to DONE,
// PASS or FAIL, and back to CONFIGURED through STOPPING. The edges are Cluster::Init's
// DFA/Process.pm (§3.4 of the reference) with its defects fixed: `off` settles at DONE instead
// of spinning, a command that cannot be started counts as a failed run instead of throwing or
// looping, and stop signals go to the whole process group, never after the leader was reaped.

import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { ChildRun } from './child.js';
import type { RotatingLog } from './logfile.js';
import { RespawnCounter } from './throttle.js';
import type { EntrySpec, ExitInfo, ProcessStatus, ProcState, RespawnThrottle, StopLadder } from './types.js';

type ProcEventType =
  | 'START'
  | 'STOP'
  | 'SPAWNED'
  | 'SPAWN_FAILED'
  | 'EXITED'
  | 'CONTINUE'
  | 'LADDER'
  | 'GONE'
  | 'WAIT'
  | 'TEST'
  | 'RESPAWN'
  | 'ONCE'
  | 'OFF'
  | 'RC_ZERO'
  | 'RC_NONZERO'
  | 'TOO_RAPID';

interface ProcEvent {
  type: ProcEventType;
  exit?: ExitInfo;
}

type Action = 'none' | 'checkMode' | 'exec' | 'recordExit' | 'afterExit' | 'checkRc' | 'checkFrequency' | 'cancelPause' | 'beginStop' | 'signalNext' | 'finishStop';

/** state → event → [next state, action]. An event with no edge is ignored, as in the original. */
const GRAPH: Record<ProcState, Partial<Record<ProcEventType, [ProcState, Action]>>> = {
  CONFIGURED: { START: ['SETUP', 'checkMode'], STOP: ['CONFIGURED', 'none'] },
  SETUP: {
    WAIT: ['RUNFG', 'exec'],
    TEST: ['RUNTEST', 'exec'],
    RESPAWN: ['RUNBG', 'exec'],
    ONCE: ['RUNBG', 'exec'],
    // 0.215 went back to CONFIGURED and was started again, forever; an `off` entry is satisfied.
    OFF: ['DONE', 'none'],
  },
  RUNFG: { SPAWNED: ['RUNNING', 'none'], EXITED: ['DONE', 'recordExit'], SPAWN_FAILED: ['DONE', 'recordExit'], STOP: ['STOPPING', 'beginStop'] },
  RUNNING: { EXITED: ['DONE', 'recordExit'], STOP: ['STOPPING', 'beginStop'] },
  RUNBG: { SPAWNED: ['DONE', 'none'], EXITED: ['DONE', 'afterExit'], SPAWN_FAILED: ['DONE', 'afterExit'], STOP: ['STOPPING', 'beginStop'] },
  RUNTEST: { EXITED: ['TESTING', 'checkRc'], SPAWN_FAILED: ['TESTING', 'checkRc'], STOP: ['STOPPING', 'beginStop'] },
  TESTING: { RC_ZERO: ['PASS', 'none'], RC_NONZERO: ['FAIL', 'none'] },
  PASS: { START: ['SETUP', 'checkMode'], STOP: ['CONFIGURED', 'none'] },
  FAIL: { START: ['SETUP', 'checkMode'], STOP: ['CONFIGURED', 'none'] },
  DONE: { EXITED: ['DONE', 'afterExit'], RESPAWN: ['PAUSING', 'checkFrequency'], STOP: ['STOPPING', 'beginStop'] },
  PAUSING: { CONTINUE: ['RUNBG', 'exec'], TOO_RAPID: ['PAUSING', 'none'], STOP: ['CONFIGURED', 'cancelPause'] },
  STOPPING: { LADDER: ['STOPPING', 'signalNext'], EXITED: ['CONFIGURED', 'finishStop'], GONE: ['CONFIGURED', 'finishStop'] },
};

const RAN: ReadonlySet<ProcState> = new Set(['DONE', 'PASS', 'FAIL']);
/** After SIGKILL, repeat it this often while the leader lives (a process in D state ignores it for a while). */
const KILL_REPEAT_MS = 5_000;

/** A stop in progress: which rung was last sent, counted from the first SIGINT. */
interface LadderRun {
  startedAt: number;
  step: number;
  times: StopLadder;
}

/** Who reads a process's pid before a crash of the supervisor (see guard-link.ts). */
export interface ProcessRegistry {
  adopt(pid: number, startTime: string, ladder: StopLadder): void;
  release(pid: number): void;
}

/** What a process needs from its group; read at the moment of use, so a reload applies live. */
export interface ProcContext {
  readonly group: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly shell: string;
  readonly registry: ProcessRegistry | undefined;
  ladder(): StopLadder;
  throttle(): RespawnThrottle;
  env(): NodeJS.ProcessEnv;
  cwd(): string | undefined;
  log(tag: string): RotatingLog;
  /** Every edge taken, self-loops included. */
  transition(proc: Proc, from: ProcState, to: ProcState, cause: string, exit?: ExitInfo): void;
  warn(proc: Proc, message: string): void;
}

export class Proc {
  state: ProcState = 'CONFIGURED';
  runs = 0;
  restarts = 0;
  lastExit: ExitInfo | null = null;
  private run: ChildRun | undefined;
  private readonly counter = new RespawnCounter();
  private pauseTimer: Timer | undefined;
  private ladderTimer: Timer | undefined;
  private ladder: LadderRun | undefined;
  private readonly queue: ProcEvent[] = [];
  private dispatching = false;

  constructor(
    readonly spec: EntrySpec,
    /** What the process was started as (mode, command, environment): a change makes it stale. */
    readonly signature: string,
    private readonly ctx: ProcContext,
  ) {}

  get tag(): string {
    return this.spec.tag;
  }

  /** DONE, PASS or FAIL: the group may move past it. */
  get ran(): boolean {
    return RAN.has(this.state);
  }

  get pid(): number | null {
    return this.run?.live ? (this.run.pid as number) : null;
  }

  start(): void {
    this.dispatch({ type: 'START' });
  }

  stop(): void {
    this.dispatch({ type: 'STOP' });
  }

  /** SIGKILL to the group now, for a supervisor that must exit at once. */
  killNow(): void {
    this.run?.signalGroup('SIGKILL');
  }

  /** Cancels timers; for a process the group forgets (it is CONFIGURED, nothing runs). */
  dispose(): void {
    this.pauseTimer?.cancel();
    this.ladderTimer?.cancel();
    this.pauseTimer = this.ladderTimer = undefined;
  }

  status(): ProcessStatus {
    return {
      tag: this.spec.tag,
      mode: this.spec.mode,
      levels: this.spec.levels,
      state: this.state,
      pid: this.pid,
      runs: this.runs,
      restarts: this.restarts,
      lastExit: this.lastExit,
      paused: this.state === 'PAUSING' && this.pauseTimer !== undefined,
      log: this.ctx.log(this.spec.tag).file,
    };
  }

  /** Events raised while an action runs (including by the group reacting) queue behind it. */
  private dispatch(event: ProcEvent): void {
    this.queue.push(event);
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      while (this.queue.length > 0) {
        let next: ProcEvent | undefined = this.queue.shift();
        while (next) next = this.step(next);
      }
    } finally {
      this.dispatching = false;
    }
  }

  private step(event: ProcEvent): ProcEvent | undefined {
    const from = this.state;
    const edge = GRAPH[from][event.type];
    if (!edge) return undefined;
    const [to, action] = edge;
    this.state = to;
    let follow: ProcEvent | undefined;
    try {
      follow = this.act(action, event, from);
    } catch (err) {
      // 0.215 died on any exception in an action; one process's trouble must not end the supervisor.
      this.ctx.logger.error({ group: this.ctx.group, tag: this.spec.tag, action, err: (err as Error).stack ?? String(err) }, 'process action failed');
    }
    this.ctx.transition(this, from, to, event.type, event.exit);
    return follow;
  }

  private act(action: Action, event: ProcEvent, from: ProcState): ProcEvent | undefined {
    switch (action) {
      case 'none':
        return undefined;
      case 'checkMode':
        return { type: modeEvent(this.spec.mode) };
      case 'exec':
        if (from === 'PAUSING') this.restarts++;
        this.exec();
        return undefined;
      case 'recordExit':
        this.lastExit = event.exit ?? this.lastExit;
        return undefined;
      case 'afterExit':
        this.lastExit = event.exit ?? this.lastExit;
        return this.spec.mode === 'respawn' ? { type: 'RESPAWN' } : undefined;
      case 'checkRc':
        this.lastExit = event.exit ?? this.lastExit;
        return { type: event.exit?.code === 0 ? 'RC_ZERO' : 'RC_NONZERO' };
      case 'checkFrequency':
        return this.checkFrequency();
      case 'cancelPause':
        this.pauseTimer?.cancel();
        this.pauseTimer = undefined;
        return undefined;
      case 'beginStop':
        return this.beginStop();
      case 'signalNext':
        return this.signalNext();
      case 'finishStop':
        this.ladderTimer?.cancel();
        this.ladderTimer = this.ladder = undefined;
        if (event.exit) this.lastExit = event.exit;
        return undefined;
    }
  }

  private exec(): void {
    this.runs++;
    const { ctx } = this;
    const run: ChildRun = new ChildRun(
      { shell: ctx.shell, command: this.spec.command, env: ctx.env(), cwd: ctx.cwd(), log: ctx.log(this.spec.tag) },
      {
        spawned: () => {
          if (this.run === run) this.dispatch({ type: 'SPAWNED' });
        },
        exited: (code, signal) => {
          if (this.run !== run) return;
          this.run = undefined;
          if (run.pid !== undefined) ctx.registry?.release(run.pid);
          this.dispatch({ type: 'EXITED', exit: { code, signal, at: ctx.clock.wallNow() } });
        },
        failed: (err) => {
          if (this.run !== run) return;
          this.run = undefined;
          ctx.logger.warn({ group: ctx.group, tag: this.spec.tag, err: err.message }, 'cannot start the command');
          this.dispatch({ type: 'SPAWN_FAILED', exit: { code: null, signal: null, error: err.message, at: ctx.clock.wallNow() } });
        },
      },
    );
    this.run = run;
    if (run.pid !== undefined && run.startTime !== undefined) ctx.registry?.adopt(run.pid, run.startTime, ctx.ladder());
  }

  private checkFrequency(): ProcEvent {
    const throttle = this.ctx.throttle();
    if (!this.counter.tooRapid(this.ctx.clock.now(), throttle)) return { type: 'CONTINUE' };
    const pause = throttle.pauseMs / 1000;
    this.ctx.warn(this, `${this.spec.tag} respawning too rapidly: sleeping ${pause} second${pause === 1 ? '' : 's'}`);
    this.pauseTimer = this.ctx.clock.setTimer(throttle.pauseMs, () => {
      this.pauseTimer = undefined;
      this.dispatch({ type: 'CONTINUE' });
    });
    return { type: 'TOO_RAPID' };
  }

  /** SIGINT now, SIGTERM and SIGKILL at the group's delays after it; GONE when nothing runs. */
  private beginStop(): ProcEvent | undefined {
    if (!this.run?.live) return { type: 'GONE' };
    this.ladder = { startedAt: this.ctx.clock.now(), step: 0, times: this.ctx.ladder() };
    this.sendLadderSignal();
    return undefined;
  }

  private signalNext(): ProcEvent | undefined {
    if (!this.ladder) return undefined;
    if (!this.run?.live) return { type: 'GONE' };
    this.ladder.step++;
    this.sendLadderSignal();
    return undefined;
  }

  private sendLadderSignal(): void {
    const { step, times, startedAt } = this.ladder as LadderRun;
    const signal: NodeJS.Signals = step === 0 ? 'SIGINT' : step === 1 ? 'SIGTERM' : 'SIGKILL';
    this.run?.signalGroup(signal);
    this.ctx.logger.debug({ group: this.ctx.group, tag: this.spec.tag, pid: this.pid, signal }, 'stop signal sent to the process group');
    const nextAt = step === 0 ? times.termAfterMs : step === 1 ? times.killAfterMs : times.killAfterMs + (step - 1) * KILL_REPEAT_MS;
    this.ladderTimer = this.ctx.clock.setTimer(startedAt + nextAt - this.ctx.clock.now(), () => {
      this.ladderTimer = undefined;
      this.dispatch({ type: 'LADDER' });
    });
  }
}

function modeEvent(mode: EntrySpec['mode']): ProcEventType {
  switch (mode) {
    case 'wait':
      return 'WAIT';
    case 'test':
      return 'TEST';
    case 'respawn':
      return 'RESPAWN';
    case 'once':
      return 'ONCE';
    case 'off':
      return 'OFF';
  }
}
