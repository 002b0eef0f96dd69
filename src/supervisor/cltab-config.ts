// A parsed cltab as a supervisor configuration: groups in order of first appearance, entries in
// file order, each group's stop ladder and respawn throttle from `:::stop:` / `:::throttle:`
// (the group's own setting, else the file's, else Cluster::Init's 5 s / 15 s and 5 in 1 s / 60 s).

import type { Cltab } from '../config/cltab.js';
import type { SupervisorConfig } from './types.js';

export function cltabToConfig(cltab: Cltab | undefined): SupervisorConfig {
  if (!cltab) return { groups: [] };
  return {
    groups: cltab.groups.map((name) => {
      const stop = cltab.stop.get(name) ?? cltab.stop.get('');
      const throttle = cltab.throttle.get(name) ?? cltab.throttle.get('');
      return {
        name,
        entries: cltab.entries
          .filter((e) => e.group === name)
          .map((e) => ({ tag: e.tag, levels: e.levels, mode: e.mode, command: e.command, origin: `${cltab.file}:${e.line}` })),
        ...(stop ? { stop } : {}),
        ...(throttle ? { throttle } : {}),
      };
    }),
  };
}
