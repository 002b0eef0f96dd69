// Level membership: a cltab field follows Cluster::Init's rules, an explicit list (corral.yaml)
// is matched exactly.

import { cltabHasLevel } from '../config/cltab.js';

export function entryHasLevel(levels: string | readonly string[], level: string): boolean {
  return typeof levels === 'string' ? cltabHasLevel(levels, level) : levels.includes(level);
}
