// Key order is UTF-8 byte order, as etcd's. JavaScript's `<` compares UTF-16 code units, which
// disagrees with byte order when a character above U+FFFF (a surrogate pair) meets one in
// U+E000–U+FFFF; backends must agree on range order, so we compare code points instead.

/** Negative, zero or positive as `a` sorts before, equal to or after `b` in UTF-8 byte order. */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = codePointRank(x);
      y = codePointRank(y);
    }
    return x < y ? -1 : 1;
  }
  return a.length < b.length ? -1 : 1;
}

// Moves surrogates (D800–DFFF) above E000–FFFF, which makes code-unit order equal code-point order.
function codePointRank(unit: number): number {
  return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}
