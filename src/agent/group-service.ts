// Cluster-wide resource groups on one node (issue 5, point 6; docs/groups.md). The agent hosts a
// Supervisor (src/supervisor) for the groups that run here and keeps it at what the store says:
//
//   store /corral/groups/config ──┐ validated again here; a bad one is reported, never applied
//   store /corral/groups/target/* ┴─► reconcile() ─► Supervisor.reload / Supervisor.tell
//   Supervisor events ─► (coalesced) ─► store /corral/groups/status/<node>
//
// The store is the only source: nobody copies a cltab to every node, and an agent that restarts
// brings its groups back to their target levels by itself. While the store is unavailable the
// processes keep running at the level last applied, and the watch is retried.
//
// On an agent restart the processes of the previous incarnation were stopped by the supervisor's
// guard (it outlives a SIGKILLed agent and runs the stop ladder), so the new incarnation starts
// from CONFIGURED and re-applies the targets: no process is ever left running unsupervised.

import { statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { CorralError, isCorralError } from '../api/errors.js';
import {
  GROUP_KEYS,
  type GroupsConfigDoc,
  type GroupsStatusResponse,
  type LogLine,
  type NodeGroupReport,
  type NodeGroupsReport,
  type ReloadResponse,
  type TargetDoc,
  type TellNodeResult,
  type TellResponse,
} from '../api/groups-wire.js';
import { decodeGroups, nodesOf, runsOn, WORD, type ClusterGroupConfig } from '../config/groups.js';
import { KEYS as MEMBER_KEYS, parseJson, type MemberInfo } from '../coord/membership.js';
import type { KeyValue, Revision, Store } from '../store/store.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { GroupSpec, GroupState } from '../supervisor/types.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';

export interface GroupServiceOptions {
  store: Store;
  node: string;
  /** Every node of the cluster, in configuration order. */
  nodes: readonly string[];
  /** Supervised processes run here, and their logs go to LOGDIR/GROUP/TAG.log. */
  workDir: string;
  logDir: string;
  /** corral.yaml's groups: published at start if the store has none yet. */
  fileGroups: readonly ClusterGroupConfig[];
  source: string;
  clock: Clock;
  logger: Logger;
  /** Supervisor options for tests (guard, shell). */
  supervisor?: { guard?: boolean };
}

const SETTLED: readonly GroupState[] = ['DONE', 'PASSED', 'FAILED'];
const STATUS_COALESCE_MS = 20;

function parse<T>(kv: KeyValue | undefined): T | undefined {
  return kv ? parseJson<T>(kv.value) : undefined;
}

export class GroupService {
  private supervisor: Supervisor | undefined;
  private unsubscribe: (() => void) | undefined;
  private readonly stop = new AbortController();
  private loop: Promise<void> | undefined;
  private configRevision = 0n;
  private configError: string | undefined;
  /** A new valid configuration waits for reconcile() to hand it to the supervisor. */
  private configDirty = false;
  private groupsHere: ClusterGroupConfig[] = [];
  private readonly targets = new Map<string, { level: string; revision: Revision }>();
  private readonly applied = new Map<string, Revision>();
  private publishTimer: { cancel(): void } | undefined;
  private publishing = false;
  private publishAgain = false;
  private reconciling: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly o: GroupServiceOptions) {}

  start(): void {
    this.loop = this.run();
  }

  /** The supervisor of this node's groups, once one runs here. */
  get supervisorOf(): Supervisor | undefined {
    return this.supervisor;
  }

  /** Stops following the store and halts every group with its stop ladder. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop.abort(new CorralError('SHUTTING_DOWN', 'the agent is stopping'));
    this.publishTimer?.cancel();
    await this.loop?.catch(() => undefined);
    await this.reconciling.catch(() => undefined);
    this.unsubscribe?.();
    await this.supervisor?.close();
  }

  // ---- following the store ----

  private async run(): Promise<void> {
    const { logger, clock } = this.o;
    let backoff = 200;
    let bootstrapped = false;
    while (!this.stop.signal.aborted) {
      try {
        if (!bootstrapped) bootstrapped = await this.bootstrap();
        const snapshot = await this.o.store.range(GROUP_KEYS.root);
        const config = snapshot.kvs.find((kv) => kv.key === GROUP_KEYS.config);
        if (config) this.onConfig(config);
        for (const kv of snapshot.kvs) if (kv.key.startsWith(GROUP_KEYS.target)) this.onTarget(kv, 'put');
        this.schedule();
        this.schedulePublish();
        backoff = 200;
        // Two watches (config and targets) so that the status reports of every node do not wake every agent.
        const from = snapshot.revision + 1n;
        await Promise.all([this.follow(GROUP_KEYS.config, from), this.follow(GROUP_KEYS.target, from)]);
      } catch (err) {
        if (this.stop.signal.aborted) return;
        logger.warn({ err: (err as Error).message, retryMs: backoff }, 'cannot follow the group configuration in the store; processes keep their level; retrying');
        await clock.sleep(backoff, this.stop.signal).catch(() => undefined);
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  }

  private async follow(prefix: string, from: Revision): Promise<void> {
    const watch = this.o.store.watch(prefix, { fromRevision: from, signal: this.stop.signal });
    for await (const ev of watch) {
      if (ev.kv.key === GROUP_KEYS.config) {
        if (ev.type === 'put') this.onConfig(ev.kv);
      } else if (ev.kv.key.startsWith(GROUP_KEYS.target)) this.onTarget(ev.kv, ev.type);
      this.schedule();
    }
    if (!this.stop.signal.aborted) throw new CorralError('STORE_UNAVAILABLE', `the watch of ${prefix} ended`);
  }

  /** Publishes corral.yaml's groups when the store has no group configuration yet. */
  private async bootstrap(): Promise<boolean> {
    if (this.o.fileGroups.length === 0) return true;
    const doc: GroupsConfigDoc = { groups: [...this.o.fileGroups], source: `${this.o.source} (first agent start, ${this.o.node})`, publishedAt: new Date(this.o.clock.wallNow()).toISOString() };
    try {
      const r = await this.o.store.txn({
        compare: [{ key: GROUP_KEYS.config, target: 'createRevision', op: '=', value: 0n }],
        success: [{ type: 'put', key: GROUP_KEYS.config, value: JSON.stringify(doc) }],
        failure: [],
      });
      if (r.succeeded) this.o.logger.info({ groups: doc.groups.map((g) => g.name) }, "published corral.yaml's groups (the store had none)");
    } catch (err) {
      // A node certificate may not publish (only the coordinator, administrators and etcd clients may).
      if (!isCorralError(err, 'FORBIDDEN')) throw err;
    }
    return true;
  }

  private onConfig(kv: KeyValue): void {
    if (kv.modRevision <= this.configRevision) return;
    this.configRevision = kv.modRevision;
    const doc = parse<GroupsConfigDoc>(kv);
    try {
      if (!doc) throw new CorralError('CONFIG_INVALID', 'the group configuration in the store is not JSON');
      const groups = decodeGroups(doc.groups, this.o.nodes);
      this.groupsHere = groups.filter((g) => runsOn(g, this.o.node));
      this.configError = undefined;
      this.configDirty = true;
    } catch (err) {
      this.configError = (err as Error).message;
      this.o.logger.error({ err: this.configError, revision: String(kv.modRevision) }, 'the published group configuration is invalid here; the one in force stays');
    }
  }


  private onTarget(kv: KeyValue, type: 'put' | 'delete'): void {
    const group = kv.key.slice(GROUP_KEYS.target.length);
    if (type === 'delete') {
      this.targets.delete(group);
      return;
    }
    const doc = parse<TargetDoc>(kv);
    if (!doc || typeof doc.level !== 'string' || !WORD.test(doc.level)) {
      this.o.logger.warn({ group }, 'ignoring a malformed target level in the store');
      return;
    }
    this.targets.set(group, { level: doc.level, revision: kv.modRevision });
  }

  /** Reconciles after the current event (serialized: the supervisor's import is asynchronous). */
  private schedule(): void {
    this.reconciling = this.reconciling.then(() => this.reconcile()).catch((err: unknown) => {
      this.o.logger.error({ err: (err as Error).stack ?? String(err) }, 'applying the group configuration failed');
    });
  }

  private async reconcile(): Promise<void> {
    if (this.closed) return;
    if (this.configDirty) {
      this.configDirty = false;
      const specs: GroupSpec[] = this.groupsHere.map((g) => ({
        name: g.name,
        entries: g.entries.map((e) => ({ ...e, origin: `group ${g.name}, entry ${e.tag}` })),
        ...(g.stop ? { stop: g.stop } : {}),
        ...(g.throttle ? { throttle: g.throttle } : {}),
        env: { ...g.env, CORRAL_NODE: this.o.node, CORRAL_GROUP: g.name },
        cwd: this.o.workDir,
      }));
      const supervisor = specs.length > 0 || this.supervisor ? await this.ensureSupervisor() : undefined;
      if (supervisor && !this.closed) {
        try {
          const summary = supervisor.reload({ groups: specs });
          for (const name of summary.removed) this.applied.delete(name);
          // A changed group was told its level again by the supervisor; it keeps its applied revision.
        } catch (err) {
          this.configError = (err as Error).message;
          this.o.logger.error({ err: this.configError }, 'the group configuration was refused here; the one in force stays');
        }
      }
    }
    const supervisor = this.supervisor;
    if (supervisor && !this.closed) {
      for (const g of this.groupsHere) {
        const target = this.targets.get(g.name);
        if (!target || this.applied.get(g.name) === target.revision) continue;
        try {
          supervisor.tell(g.name, target.level);
          this.applied.set(g.name, target.revision);
        } catch (err) {
          this.o.logger.warn({ group: g.name, err: (err as Error).message }, 'cannot apply the target level');
        }
      }
    }
    this.schedulePublish();
  }

  private async ensureSupervisor(): Promise<Supervisor> {
    if (this.supervisor) return this.supervisor;
    const { Supervisor } = await import('../supervisor/supervisor.js');
    const supervisor = new Supervisor({
      config: { groups: [] },
      logDir: this.o.logDir,
      logger: this.o.logger.child({ component: 'supervisor' }),
      clock: this.o.clock,
      ...(this.o.supervisor?.guard === false ? { guard: false } : {}),
    }).start();
    this.unsubscribe = supervisor.subscribe((ev) => {
      if (ev.kind === 'group' || ev.kind === 'process' || ev.kind === 'removed') this.schedulePublish();
    });
    this.supervisor = supervisor;
    return supervisor;
  }

  // ---- reporting ----

  report(): NodeGroupsReport {
    const groups: NodeGroupReport[] = (this.supervisor?.status().groups ?? []).map((g) => ({ ...g, targetRevision: String(this.applied.get(g.name) ?? 0n) }));
    return {
      node: this.o.node,
      agentPid: process.pid,
      configRevision: String(this.configRevision),
      ...(this.configError ? { configError: this.configError } : {}),
      groups,
      at: new Date(this.o.clock.wallNow()).toISOString(),
    };
  }

  /** Writes this node's report soon, coalescing bursts; one write at a time. */
  private schedulePublish(): void {
    if (this.closed || this.publishTimer) return;
    this.publishTimer = this.o.clock.setTimer(STATUS_COALESCE_MS, () => {
      this.publishTimer = undefined;
      void this.publish();
    });
  }

  private async publish(): Promise<void> {
    if (this.publishing) {
      this.publishAgain = true;
      return;
    }
    this.publishing = true;
    try {
      await this.o.store.put(GROUP_KEYS.status + this.o.node, JSON.stringify(this.report()));
    } catch (err) {
      if (!this.closed) {
        this.o.logger.debug({ err: (err as Error).message }, 'cannot publish the group status yet; retrying');
        this.publishAgain = false;
        this.publishing = false;
        this.publishTimer ??= this.o.clock.setTimer(1_000, () => {
          this.publishTimer = undefined;
          void this.publish();
        });
        return;
      }
    }
    this.publishing = false;
    if (this.publishAgain) {
      this.publishAgain = false;
      this.schedulePublish();
    }
  }

  // ---- requests (src/agent/group-routes.ts) ----

  private async readConfig(): Promise<{ groups: ClusterGroupConfig[]; revision: Revision; source: string | null }> {
    const { kv } = await this.o.store.get(GROUP_KEYS.config);
    const doc = parse<GroupsConfigDoc>(kv);
    if (!kv || !doc) return { groups: [], revision: 0n, source: null };
    try {
      return { groups: decodeGroups(doc.groups, this.o.nodes), revision: kv.modRevision, source: doc.source };
    } catch (err) {
      throw new CorralError('CONFIG_INVALID', `the group configuration in the store is invalid (${(err as Error).message}); publish a valid one with corral reload`);
    }
  }

  /** `corral tell GROUP LEVEL`: records the target; with wait, until every UP node of the group settled. */
  async tell(body: unknown, by: string, signal: AbortSignal): Promise<TellResponse> {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b.group !== 'string' || !WORD.test(b.group)) throw new CorralError('BAD_REQUEST', 'a group name is one word without whitespace or ":"');
    if (typeof b.level !== 'string' || !WORD.test(b.level)) throw new CorralError('BAD_REQUEST', 'a level is one word without whitespace or ":"');
    const timeoutMs = typeof b.timeoutMs === 'number' && b.timeoutMs > 0 ? Math.min(b.timeoutMs, 3_600_000) : 60_000;
    const { groups } = await this.readConfig();
    const group = groups.find((g) => g.name === b.group);
    if (!group) throw new CorralError('NOT_FOUND', `no such group: ${b.group}`);
    const level = b.level;
    const doc: TargetDoc = { level, by, at: new Date(this.o.clock.wallNow()).toISOString() };
    const { revision } = await this.o.store.put(GROUP_KEYS.target + group.name, JSON.stringify(doc));
    const nodes = nodesOf(group, this.o.nodes);
    const response: TellResponse = { group: group.name, level, revision: String(revision), nodes };
    if (b.wait !== true) return response;
    const t0 = this.o.clock.now();
    const { settled, results } = await this.waitSettled(group.name, nodes, revision, timeoutMs, signal);
    return { ...response, settled, results, ms: Math.round(this.o.clock.now() - t0) };
  }

  private async waitSettled(group: string, nodes: string[], revision: Revision, timeoutMs: number, signal: AbortSignal): Promise<{ settled: boolean; results: TellNodeResult[] }> {
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs), this.stop.signal]);
    const reports = new Map<string, NodeGroupReport | undefined>();
    const up = new Map<string, number>();
    const read = await this.o.store.txn({
      compare: [],
      success: [
        { type: 'range', prefix: GROUP_KEYS.status },
        { type: 'range', prefix: MEMBER_KEYS.members },
      ],
      failure: [],
    });
    const [statusRange, memberRange] = read.results;
    if (memberRange?.type === 'range') for (const [node, pid] of livePids(memberRange.kvs)) up.set(node, pid);
    const take = (kv: KeyValue): void => {
      const r = parse<NodeGroupsReport>(kv);
      // A report of a previous incarnation of the node's agent says nothing about now.
      if (r && up.get(r.node) === r.agentPid) reports.set(kv.key.slice(GROUP_KEYS.status.length), r.groups.find((g) => g.name === group));
    };
    if (statusRange?.type === 'range') for (const kv of statusRange.kvs) take(kv);
    const results = (): TellNodeResult[] =>
      nodes.map((node) => {
        const r = reports.get(node);
        const current = r !== undefined && BigInt(r.targetRevision) >= revision;
        if (!up.has(node)) return { node, state: 'DOWN', level: current ? r.level : null };
        if (!current) return { node, state: 'PENDING', level: r?.level ?? null };
        return { node, state: r.state, level: r.level };
      });
    const done = (): boolean => results().every((x) => x.state === 'DOWN' || SETTLED.includes(x.state as GroupState));
    if (done()) return { settled: true, results: results() };
    const watch = this.o.store.watch(GROUP_KEYS.status, { fromRevision: read.revision + 1n, signal: deadline });
    try {
      for await (const ev of watch) {
        if (ev.type === 'put') take(ev.kv);
        if (done()) return { settled: true, results: results() };
      }
    } catch (err) {
      if (!deadline.aborted) throw err;
    } finally {
      watch.close();
    }
    if (signal.aborted || this.stop.signal.aborted) throw new CorralError('SHUTTING_DOWN', 'the wait was interrupted');
    return { settled: false, results: results() };
  }

  /** `corral reload`: validates and publishes a group configuration; targets of removed groups go. */
  async reload(body: unknown): Promise<ReloadResponse> {
    const b = (body ?? {}) as Record<string, unknown>;
    const groups = decodeGroups(b.groups, this.o.nodes);
    const source = typeof b.source === 'string' ? b.source.slice(0, 500) : 'corral reload';
    const { kv } = await this.o.store.get(GROUP_KEYS.config);
    const old = parse<GroupsConfigDoc>(kv)?.groups ?? [];
    const oldByName = new Map(old.map((g) => [g.name, JSON.stringify(g)]));
    const names = new Set(groups.map((g) => g.name));
    const summary: Omit<ReloadResponse, 'revision'> = { added: [], removed: [], changed: [], unchanged: [] };
    for (const g of groups) {
      const before = oldByName.get(g.name);
      if (before === undefined) summary.added.push(g.name);
      else if (before === JSON.stringify(g)) summary.unchanged.push(g.name);
      else summary.changed.push(g.name);
    }
    for (const g of old) if (!names.has(g.name)) summary.removed.push(g.name);
    const doc: GroupsConfigDoc = { groups, source, publishedAt: new Date(this.o.clock.wallNow()).toISOString() };
    const r = await this.o.store.txn({
      // Against a concurrent reload: apply only on top of the configuration the diff was made with.
      compare: [{ key: GROUP_KEYS.config, target: 'modRevision', op: '=', value: kv?.modRevision ?? 0n }],
      success: [
        { type: 'put', key: GROUP_KEYS.config, value: JSON.stringify(doc) },
        ...summary.removed.map((name) => ({ type: 'delete' as const, key: GROUP_KEYS.target + name })),
      ],
      failure: [],
    });
    if (!r.succeeded) throw new CorralError('CONFLICT', 'another reload changed the group configuration at the same time; run corral reload again');
    return { revision: String(r.revision), ...summary };
  }

  /** Every group with its target and each node's report. */
  async status(): Promise<GroupsStatusResponse> {
    const read = await this.o.store.txn({
      compare: [],
      success: [
        { type: 'range', prefix: GROUP_KEYS.root },
        { type: 'range', prefix: MEMBER_KEYS.members },
      ],
      failure: [],
    });
    const [all, members] = read.results;
    const kvs = all?.type === 'range' ? all.kvs : [];
    const live = livePids(members?.type === 'range' ? members.kvs : []);
    const up = new Set(live.keys());
    const configKv = kvs.find((kv) => kv.key === GROUP_KEYS.config);
    const doc = parse<GroupsConfigDoc>(configKv);
    let groups: ClusterGroupConfig[] = [];
    let configError: string | undefined;
    try {
      groups = doc ? decodeGroups(doc.groups, this.o.nodes) : [];
    } catch (err) {
      // Shown, not applied: names and node sets are enough to list what the nodes still run.
      configError = (err as Error).message;
      groups = lenientGroups(doc?.groups, this.o.nodes);
    }
    const reports = new Map<string, NodeGroupsReport>();
    const targets = new Map<string, { doc: TargetDoc; revision: Revision }>();
    for (const kv of kvs) {
      if (kv.key.startsWith(GROUP_KEYS.status)) {
        const r = parse<NodeGroupsReport>(kv);
        if (r && live.get(r.node) === r.agentPid) reports.set(kv.key.slice(GROUP_KEYS.status.length), r);
      } else if (kv.key.startsWith(GROUP_KEYS.target)) {
        const t = parse<TargetDoc>(kv);
        if (t) targets.set(kv.key.slice(GROUP_KEYS.target.length), { doc: t, revision: kv.modRevision });
      }
    }
    return {
      configRevision: String(configKv?.modRevision ?? 0n),
      source: doc?.source ?? null,
      ...(configError ? { configError } : {}),
      nodes: this.o.nodes.map((node) => {
        const r = reports.get(node);
        return { node, up: up.has(node), configRevision: r?.configRevision ?? null, ...(r?.configError ? { configError: r.configError } : {}) };
      }),
      groups: groups.map((g) => {
        const target = targets.get(g.name);
        return {
          name: g.name,
          nodes: nodesOf(g, this.o.nodes),
          target: target?.doc.level ?? null,
          targetRevision: String(target?.revision ?? 0n),
          perNode: nodesOf(g, this.o.nodes).map((node) => {
            const r = reports.get(node);
            return {
              node,
              up: up.has(node),
              report: r?.groups.find((x) => x.name === g.name) ?? null,
              configRevision: r?.configRevision ?? null,
              ...(r?.configError ? { configError: r.configError } : {}),
            };
          }),
        };
      }),
    };
  }

  /** This node's log lines of GROUP (every TAG, or one): the last `lines` of each, then new ones with follow. */
  async *logs(query: URLSearchParams, signal: AbortSignal): AsyncGenerator<LogLine> {
    const group = query.get('group') ?? '';
    const tag = query.get('tag');
    const lines = Math.min(Math.max(Number(query.get('lines') ?? '50') || 0, 0), 100_000);
    const follow = query.get('follow') === '1';
    const spec = this.groupsHere.find((g) => g.name === group);
    if (!spec) throw new CorralError('NOT_FOUND', `group ${group} does not run on node ${this.o.node}`);
    const tags = spec.entries.map((e) => e.tag).filter((t) => tag === null || t === tag);
    if (tags.length === 0) throw new CorralError('NOT_FOUND', `group ${group} has no entry ${String(tag)}`);
    const files = tags.map((t) => ({ tag: t, file: path.join(this.o.logDir, group, `${t}.log`) }));
    const offsets = new Map<string, { ino: number; pos: number; partial: string }>();
    for (const f of files) {
      const { text, ino, size } = await tail(f.file, lines);
      for (const line of text) yield { node: this.o.node, group, tag: f.tag, line };
      offsets.set(f.tag, { ino, pos: size, partial: '' });
    }
    if (!follow) return;
    while (!signal.aborted && !this.closed) {
      for (const f of files) {
        const at = offsets.get(f.tag) as { ino: number; pos: number; partial: string };
        let st;
        try {
          st = statSync(f.file);
        } catch {
          continue;
        }
        // Rotated (a new file) or truncated: read the new file from its start.
        if (st.ino !== at.ino || st.size < at.pos) Object.assign(at, { ino: st.ino, pos: 0, partial: '' });
        if (st.size === at.pos) continue;
        const chunk = await readRange(f.file, at.pos, Math.min(st.size, at.pos + 1024 * 1024));
        at.pos += chunk.length;
        const parts = (at.partial + chunk.toString('utf8')).split('\n');
        at.partial = parts.pop() ?? '';
        for (const line of parts) yield { node: this.o.node, group, tag: f.tag, line };
      }
      await this.o.clock.sleep(200, signal).catch(() => undefined);
    }
  }
}

/** Node → pid of its live agent, from the member keys (src/coord/membership.ts). */
function livePids(kvs: readonly KeyValue[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const kv of kvs) {
    const info = parse<MemberInfo>(kv);
    if (info && typeof info.pid === 'number') out.set(kv.key.slice(MEMBER_KEYS.members.length), info.pid);
  }
  return out;
}

/** Group names and node sets of a configuration that does not validate, for display only. */
function lenientGroups(raw: unknown, all: readonly string[]): ClusterGroupConfig[] {
  if (!Array.isArray(raw)) return [];
  return raw.flatMap((g: unknown) => {
    const o = (g ?? {}) as { name?: unknown; nodes?: unknown };
    if (typeof o.name !== 'string') return [];
    const nodes = Array.isArray(o.nodes) ? o.nodes.filter((n): n is string => typeof n === 'string' && all.includes(n)) : null;
    return [{ name: o.name, nodes, entries: [] }];
  });
}

/** The last `n` lines of a file (reading at most its last 4 MiB), its inode and size. */
async function tail(file: string, n: number): Promise<{ text: string[]; ino: number; size: number }> {
  let st;
  try {
    st = statSync(file);
  } catch {
    return { text: [], ino: 0, size: 0 };
  }
  if (n === 0) return { text: [], ino: st.ino, size: st.size };
  const start = Math.max(0, st.size - 4 * 1024 * 1024);
  const buf = await readRange(file, start, st.size);
  const all = buf.toString('utf8').split('\n');
  if (all[all.length - 1] === '') all.pop();
  if (start > 0) all.shift(); // a partial first line
  return { text: all.slice(-n), ino: st.ino, size: start + buf.length };
}

async function readRange(file: string, from: number, to: number): Promise<Buffer> {
  if (to <= from) return Buffer.alloc(0);
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(to - from);
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
