// Resource groups declared in corral.yaml (issue 5, point 6): Cluster::Init's groups with their
// entries, plus where each group runs (a node set), its stop ladder, respawn throttle and
// environment. The same shape travels through the store as JSON (`decodeGroups` re-validates it
// there: an agent never applies what it has not checked itself), so a cltab never has to be copied.
//
//   groups:
//     web:
//       nodes: n[1-2]                 # default: every node
//       stop: { termAfterMs: 5000, killAfterMs: 15000 }
//       throttle: { limit: 5, windowMs: 1000, pauseMs: 60000 }
//       env: { PORT: "8080" }
//       entries:
//         - { tag: setup, levels: "1", mode: wait, command: "mkdir -p /srv/web" }
//         - { tag: httpd, levels: [1, maint], mode: respawn, command: "exec httpd -f" }

import { isMap, isScalar, isSeq, type Node } from 'yaml';
import { CorralError } from '../api/errors.js';
import { RUN_MODES, type RunMode, type StopTimes, type ThrottleTimes } from './cltab.js';
import { expandNodeSet } from './nodeset.js';
import { MapField } from './yaml-view.js';

export interface GroupEntryConfig {
  tag: string;
  /** A cltab level field ("1", "12", "a,b") or an explicit list of level names. */
  levels: string | string[];
  mode: RunMode;
  command: string;
}

export interface ClusterGroupConfig {
  name: string;
  /** The nodes it runs on (expanded, in configuration order); null: every node. */
  nodes: string[] | null;
  entries: GroupEntryConfig[];
  stop?: StopTimes;
  throttle?: ThrottleTimes;
  env?: Record<string, string>;
}

/** A group name, tag or level: one word without whitespace or ':' (a cltab field). */
export const WORD = /^[^\s:]+$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_GROUPS = 1000;
const MAX_ENTRIES = 1000;

function levelsOf(map: MapField, key: string): string | string[] {
  const node = map.nodeOf(key);
  const where = `${map.path}.${key}`;
  if (node === undefined || (isScalar(node) && node.value === null)) map.view.fail(map.node, where, 'missing (a cltab level field such as "1", "12", "a,b", or a list of level names)');
  const one = (n: unknown, at: string): string => {
    if (!isScalar(n) || (typeof n.value !== 'string' && typeof n.value !== 'number') || !WORD.test(String(n.value))) {
      map.view.fail(n as Node, at, 'a level is one word without whitespace or ":"');
    }
    return String(n.value);
  };
  if (isSeq(node)) {
    if (node.items.length === 0) map.view.fail(node, where, 'list at least one level');
    return node.items.map((item, i) => one(item, `${where}[${i}]`));
  }
  return one(node, where);
}

function envOf(map: MapField): Record<string, string> | undefined {
  const env = map.map('env');
  if (!env) return undefined;
  const out: Record<string, string> = {};
  for (const { key, node } of env.keys()) {
    if (!ENV_NAME.test(key)) env.view.fail(node, `${env.path}.${key}`, 'an environment variable name is letters, digits and "_", not starting with a digit');
    const value = env.nodeOf(key);
    const v: unknown = isScalar(value) ? value.value : undefined;
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') return env.view.fail(value ?? node, `${env.path}.${key}`, 'expected a string value');
    out[key] = String(v);
  }
  return out;
}

/** Reads the `groups:` section of corral.yaml; node sets must name configured nodes. */
export function parseGroupsSection(root: MapField, nodeNames: readonly string[]): ClusterGroupConfig[] {
  const section = root.map('groups');
  if (!section) return [];
  const groups: ClusterGroupConfig[] = [];
  for (const { key: name, node } of section.keys()) {
    if (!WORD.test(name)) section.view.fail(node, `groups.${name}`, 'a group name is one word without whitespace or ":"');
    const g: MapField = section.map(name, { required: true }) as MapField;
    let nodes: string[] | null = null;
    const set = g.string('nodes', { hint: 'a node set such as n[1-3],db1' });
    if (set !== undefined) {
      let expanded: string[];
      try {
        expanded = expandNodeSet(set, { all: nodeNames });
      } catch (err) {
        return g.fail('nodes', (err as Error).message);
      }
      const unknown = expanded.filter((n) => !nodeNames.includes(n));
      if (unknown.length > 0) g.fail('nodes', `names nodes that are not in this cluster: ${unknown.join(', ')} (nodes: ${nodeNames.join(', ')})`);
      if (expanded.length === 0) g.fail('nodes', 'the node set is empty');
      nodes = expanded;
    }
    const entriesNode = g.nodeOf('entries');
    if (!isSeq(entriesNode) || entriesNode.items.length === 0) return g.fail('entries', 'expected a list of entries, each {tag, levels, mode, command}');
    const entries: GroupEntryConfig[] = [];
    entriesNode.items.forEach((item, i) => {
      if (!isMap(item)) g.view.fail(item as Node, `groups.${name}.entries[${i}]`, 'expected {tag, levels, mode, command}');
      const e = new MapField(g.view, item, `groups.${name}.entries[${i}]`);
      const tag = e.string('tag', { required: true, pattern: WORD, hint: 'one word without whitespace or ":"' });
      if (entries.some((x) => x.tag === tag)) e.fail('tag', `duplicate tag ${tag} in group ${name}`);
      const levels = levelsOf(e, 'levels');
      const mode = e.string('mode', { required: true, hint: RUN_MODES.join(', ') });
      if (!(RUN_MODES as readonly string[]).includes(mode)) e.fail('mode', `invalid mode '${mode}' (expected ${RUN_MODES.join(', ')})`);
      const command = mode === 'off' ? (e.string('command') ?? '') : e.string('command', { required: true, hint: 'run by /bin/sh -c' });
      e.rejectUnknown();
      entries.push({ tag, levels, mode: mode as RunMode, command });
    });
    const group: ClusterGroupConfig = { name, nodes, entries };
    const stop = g.map('stop');
    if (stop) {
      const termAfterMs = stop.integer('termAfterMs', { min: 0, max: 3_600_000, default: 5_000 });
      const killAfterMs = stop.integer('killAfterMs', { min: 0, max: 3_600_000, default: Math.max(15_000, termAfterMs) });
      if (killAfterMs < termAfterMs) stop.fail('killAfterMs', 'must be at least termAfterMs (SIGKILL comes after SIGTERM)');
      stop.rejectUnknown();
      group.stop = { termAfterMs, killAfterMs };
    }
    const throttle = g.map('throttle');
    if (throttle) {
      group.throttle = {
        limit: throttle.integer('limit', { min: 0, max: 1_000_000, default: 5 }),
        windowMs: throttle.integer('windowMs', { min: 1, max: 3_600_000, default: 1_000 }),
        pauseMs: throttle.integer('pauseMs', { min: 0, max: 86_400_000, default: 60_000 }),
      };
      throttle.rejectUnknown();
    }
    const env = envOf(g);
    if (env) group.env = env;
    g.rejectUnknown();
    groups.push(group);
  }
  return groups;
}

// ---- The JSON form, as it travels through the store ----

function invalid(problem: string): never {
  throw new CorralError('CONFIG_INVALID', `group configuration: ${problem}`);
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) invalid(`${what} must be an object`);
  return v as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, keys: readonly string[], what: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) invalid(`${what} has an unknown field '${k}'`);
}

function word(v: unknown, what: string): string {
  if (typeof v !== 'string' || !WORD.test(v)) invalid(`${what} must be one word without whitespace or ":"`);
  return v;
}

function whole(v: unknown, what: string, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) invalid(`${what} must be a whole number from 0 to ${max}`);
  return v;
}

/**
 * Validates group configuration received as JSON (from the store or a request) as strictly as
 * corral.yaml is read; throws CONFIG_INVALID naming the first problem. `nodeNames` are the
 * cluster's nodes: a group may only name those.
 */
export function decodeGroups(value: unknown, nodeNames: readonly string[]): ClusterGroupConfig[] {
  if (!Array.isArray(value)) invalid('expected a list of groups');
  if (value.length > MAX_GROUPS) invalid(`at most ${MAX_GROUPS} groups`);
  const names = new Set<string>();
  return value.map((raw, gi) => {
    const g = obj(raw, `group #${gi + 1}`);
    onlyKeys(g, ['name', 'nodes', 'entries', 'stop', 'throttle', 'env'], `group #${gi + 1}`);
    const name = word(g.name, `group #${gi + 1}'s name`);
    if (names.has(name)) invalid(`group ${name} is declared twice`);
    names.add(name);
    const where = `group ${name}`;
    let nodes: string[] | null = null;
    if (g.nodes !== null && g.nodes !== undefined) {
      if (!Array.isArray(g.nodes) || g.nodes.length === 0) invalid(`${where}: nodes must be a non-empty list or null`);
      nodes = g.nodes.map((n) => {
        if (typeof n !== 'string' || !nodeNames.includes(n)) invalid(`${where}: ${JSON.stringify(n)} is not a node of this cluster`);
        return n;
      });
    }
    if (!Array.isArray(g.entries) || g.entries.length === 0 || g.entries.length > MAX_ENTRIES) invalid(`${where}: entries must be a list of 1 to ${MAX_ENTRIES} entries`);
    const tags = new Set<string>();
    const entries = g.entries.map((rawEntry, i) => {
      const e = obj(rawEntry, `${where}, entry #${i + 1}`);
      onlyKeys(e, ['tag', 'levels', 'mode', 'command'], `${where}, entry #${i + 1}`);
      const tag = word(e.tag, `${where}, entry #${i + 1}'s tag`);
      if (tags.has(tag)) invalid(`${where}: duplicate tag ${tag}`);
      tags.add(tag);
      let levels: string | string[];
      if (Array.isArray(e.levels)) {
        if (e.levels.length === 0) invalid(`${where}/${tag}: levels must not be empty`);
        levels = e.levels.map((l) => word(l, `${where}/${tag}'s level`));
      } else levels = word(e.levels, `${where}/${tag}'s levels`);
      if (typeof e.mode !== 'string' || !(RUN_MODES as readonly string[]).includes(e.mode)) invalid(`${where}/${tag}: mode must be one of ${RUN_MODES.join(', ')}`);
      if (typeof e.command !== 'string' || (e.command.trim() === '' && e.mode !== 'off')) invalid(`${where}/${tag}: the command is empty`);
      return { tag, levels, mode: e.mode as RunMode, command: e.command };
    });
    const group: ClusterGroupConfig = { name, nodes, entries };
    if (g.stop !== undefined) {
      const s = obj(g.stop, `${where}: stop`);
      onlyKeys(s, ['termAfterMs', 'killAfterMs'], `${where}: stop`);
      const termAfterMs = whole(s.termAfterMs, `${where}: stop.termAfterMs`, 3_600_000);
      const killAfterMs = whole(s.killAfterMs, `${where}: stop.killAfterMs`, 3_600_000);
      if (killAfterMs < termAfterMs) invalid(`${where}: stop.killAfterMs must be at least termAfterMs`);
      group.stop = { termAfterMs, killAfterMs };
    }
    if (g.throttle !== undefined) {
      const t = obj(g.throttle, `${where}: throttle`);
      onlyKeys(t, ['limit', 'windowMs', 'pauseMs'], `${where}: throttle`);
      const windowMs = whole(t.windowMs, `${where}: throttle.windowMs`, 3_600_000);
      if (windowMs === 0) invalid(`${where}: throttle.windowMs must be at least 1`);
      group.throttle = { limit: whole(t.limit, `${where}: throttle.limit`, 1_000_000), windowMs, pauseMs: whole(t.pauseMs, `${where}: throttle.pauseMs`, 86_400_000) };
    }
    if (g.env !== undefined) {
      const env = obj(g.env, `${where}: env`);
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(env)) {
        if (!ENV_NAME.test(k) || typeof v !== 'string') invalid(`${where}: env ${JSON.stringify(k)} must be a variable name with a string value`);
        out[k] = v;
      }
      group.env = out;
    }
    return group;
  });
}

/** Whether `group` runs on `node`. */
export function runsOn(group: ClusterGroupConfig, node: string): boolean {
  return group.nodes === null || group.nodes.includes(node);
}

/** The nodes a group runs on, given every node of the cluster. */
export function nodesOf(group: ClusterGroupConfig, all: readonly string[]): string[] {
  return group.nodes ?? [...all];
}
