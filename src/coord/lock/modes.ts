// Lock modes and their compatibility: the VMS distributed lock manager's six modes, as FLoM has
// them (flom.md §4). Parsed exactly (case-insensitively, as FLoM), never by substring: FLoM's
// substring search once read "ProtectedWrite" as PR (its bug #13).

import { CorralError } from '../../api/errors.js';

/** In FLoM's order, which is also its numbering (NL=0 ... EX=5, the `-V` output). */
export const LOCK_MODES = ['NL', 'CR', 'CW', 'PR', 'PW', 'EX'] as const;
export type LockMode = (typeof LOCK_MODES)[number];

export const LOCK_MODE_LONG_NAMES: Readonly<Record<LockMode, string>> = {
  NL: 'NullLock',
  CR: 'ConcurrentRead',
  CW: 'ConcurrentWrite',
  PR: 'ProtectedRead',
  PW: 'ProtectedWrite',
  EX: 'Exclusive',
};

const BY_SPELLING = new Map<string, LockMode>();
for (const mode of LOCK_MODES) {
  BY_SPELLING.set(mode.toLowerCase(), mode);
  BY_SPELLING.set(LOCK_MODE_LONG_NAMES[mode].toLowerCase(), mode);
}

/** FLoM's number for a mode (0..5). */
export function lockModeNumber(mode: LockMode): number {
  return LOCK_MODES.indexOf(mode);
}

export function isLockMode(value: unknown): value is LockMode {
  return typeof value === 'string' && (LOCK_MODES as readonly string[]).includes(value);
}

/** `NL`...`EX` or `NullLock`...`Exclusive`, any case; anything else is BAD_LOCK_MODE. */
export function parseLockMode(text: string): LockMode {
  const mode = BY_SPELLING.get(text.toLowerCase());
  if (mode === undefined) {
    const spellings = LOCK_MODES.map((m) => `${m} (${LOCK_MODE_LONG_NAMES[m]})`).join(', ');
    throw new CorralError('BAD_LOCK_MODE', `'${text}' is not a lock mode; use one of ${spellings}`);
  }
  return mode;
}

// Row = held, column = requested, one bit per requested mode in LOCK_MODES order. Symmetric.
//            NL CR CW PR PW EX
// NL          1  1  1  1  1  1
// CR          1  1  1  1  1  0
// CW          1  1  1  0  0  0
// PR          1  1  0  1  0  0
// PW          1  1  0  0  0  0
// EX          1  0  0  0  0  0
const COMPATIBLE_WITH: Readonly<Record<LockMode, number>> = {
  NL: 0b111111,
  CR: 0b011111,
  CW: 0b000111,
  PR: 0b001011,
  PW: 0b000011,
  EX: 0b000001,
};
const BIT: Readonly<Record<LockMode, number>> = { NL: 1, CR: 2, CW: 4, PR: 8, PW: 16, EX: 32 };

/** Whether a lock in `requested` mode may be held together with one in `held` mode. */
export function compatible(held: LockMode, requested: LockMode): boolean {
  return (COMPATIBLE_WITH[held] & BIT[requested]) !== 0;
}
