// A sorted set of keys kept in chunks of bounded size, so adding or removing a key costs
// O(log n + chunk) instead of re-sorting or shifting the whole key list on every write.

import { compareKeys } from './key-order.js';

const MAX_CHUNK = 512;

export class SortedKeySet {
  private chunks: string[][] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds a key; returns false when it was already present. */
  add(key: string): boolean {
    if (this.chunks.length === 0) {
      this.chunks.push([key]);
      this.count = 1;
      return true;
    }
    const ci = Math.min(this.chunkFor(key), this.chunks.length - 1);
    const chunk = this.chunks[ci] as string[];
    const i = lowerBound(chunk, key);
    if (i < chunk.length && chunk[i] === key) return false;
    chunk.splice(i, 0, key);
    this.count++;
    if (chunk.length > MAX_CHUNK) this.chunks.splice(ci + 1, 0, chunk.splice(chunk.length >> 1));
    return true;
  }

  /** Removes a key; returns false when it was absent. */
  delete(key: string): boolean {
    const ci = this.chunkFor(key);
    const chunk = this.chunks[ci];
    if (chunk === undefined) return false;
    const i = lowerBound(chunk, key);
    if (chunk[i] !== key) return false;
    chunk.splice(i, 1);
    this.count--;
    if (chunk.length === 0) this.chunks.splice(ci, 1);
    return true;
  }

  /** Keys greater than or equal to `start`, in order. Do not modify the set while iterating. */
  *from(start: string): Generator<string, void, undefined> {
    let ci = this.chunkFor(start);
    let chunk = this.chunks[ci];
    if (chunk === undefined) return;
    let i = lowerBound(chunk, start);
    while (chunk !== undefined) {
      for (; i < chunk.length; i++) yield chunk[i] as string;
      chunk = this.chunks[++ci];
      i = 0;
    }
  }

  // The first chunk whose last key is >= key (chunks.length when key is above every key).
  private chunkFor(key: string): number {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const chunk = this.chunks[mid] as string[];
      if (compareKeys(chunk[chunk.length - 1] as string, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

function lowerBound(keys: string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareKeys(keys[mid] as string, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
