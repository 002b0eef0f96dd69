// Cluster::Init's respawn throttle (Process::ckfreq), kept exactly: every respawn compares the time
// since the previous one with the window; a quick one adds a hit, a slow one removes one, and more
// than `limit` hits pause the entry. A command that exits at once thus runs 7 times, then pauses;
// after the pause it settles at about two runs per pause.

import type { RespawnThrottle } from './types.js';

export class RespawnCounter {
  private hits = 0;
  private last = -Infinity;

  /** Records a respawn at monotonic `now`; true when it came too rapidly and the entry must pause. */
  tooRapid(now: number, throttle: RespawnThrottle): boolean {
    const elapsed = now - this.last;
    if (elapsed < throttle.windowMs) this.hits++;
    else if (elapsed > throttle.windowMs) this.hits--;
    this.hits = Math.max(this.hits, 0);
    this.last = now;
    return this.hits > throttle.limit;
  }
}
