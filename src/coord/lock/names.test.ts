// Lock modes, resource names and timestamp formats: parsing, exactly as FLoM's names and regexes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../../api/errors.js';
import { compatible, LOCK_MODES, lockModeNumber, parseLockMode, type LockMode } from './modes.js';
import { allowedModes, effectiveMode, parseResourceName, pathsRelated } from './resource.js';
import { formatTimestamp, intervalOf, parseTimestampFormat } from './timestamp-format.js';

process.env.TZ = 'UTC';

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return isCorralError(err) ? err.code : 'not a CorralError';
  }
};

describe('lock modes', () => {
  it('accept the short and long names of FLoM, in any case, and nothing else', () => {
    const spellings: [string, LockMode][] = [
      ['NL', 'NL'], ['nl', 'NL'], ['NullLock', 'NL'], ['nulllock', 'NL'],
      ['CR', 'CR'], ['ConcurrentRead', 'CR'], ['CW', 'CW'], ['ConcurrentWrite', 'CW'],
      ['PR', 'PR'], ['ProtectedRead', 'PR'], ['PW', 'PW'], ['ProtectedWrite', 'PW'], ['PROTECTEDWRITE', 'PW'],
      ['EX', 'EX'], ['ex', 'EX'], ['Exclusive', 'EX'],
    ];
    for (const [text, mode] of spellings) assert.equal(parseLockMode(text), mode, text);
    // FLoM's substring search accepted these (and read ProtectedWrite as PR, its bug #13).
    for (const text of ['', 'E', 'EXX', 'xEX', 'ProtectedWriter', 'Protected Write', 'null', 'exclusive lock', 'PR,EX']) {
      assert.equal(code(() => parseLockMode(text)), 'BAD_LOCK_MODE', text);
    }
  });

  it('are numbered as FLoM numbers them (NL=0 ... EX=5)', () => {
    assert.deepEqual(LOCK_MODES.map(lockModeNumber), [0, 1, 2, 3, 4, 5]);
  });

  it('follow the VMS compatibility matrix, which is symmetric', () => {
    const table: Record<LockMode, string> = { NL: 'yyyyyy', CR: 'yyyyyn', CW: 'yyynnn', PR: 'yynynn', PW: 'yynnnn', EX: 'ynnnnn' };
    for (const held of LOCK_MODES) {
      LOCK_MODES.forEach((requested, i) => {
        assert.equal(compatible(held, requested), table[held][i] === 'y', `${held} held, ${requested} requested`);
        assert.equal(compatible(held, requested), compatible(requested, held));
      });
    }
  });
});

describe('resource names', () => {
  it('infer each kind with FLoM regexes, in FLoM order', () => {
    const kinds: [string, string][] = [
      ['_RESOURCE', 'simple'], ['foo', 'simple'], ['R1', 'simple'], ['fOoBaR123', 'simple'],
      ['foo[2]', 'numeric'], ['ping[12]', 'numeric'], ['foo[0]', 'numeric'],
      ['red.green.blue', 'set'], ['red.green.green.blue', 'set'], ['a.b', 'set'],
      ['/foo', 'hierarchical'], ['/foo/bar', 'hierarchical'], ['/tmp/foo.txt', 'hierarchical'], ['/a b/c[1]/%x', 'hierarchical'],
      ['_s_foo[1]', 'sequence'], ['_S_bar[3]', 'sequence'],
      ['_t_foo.%D.%T[4]', 'timestamp'], ['_t_bar:%S#fff[1]', 'timestamp'],
    ];
    for (const [name, kind] of kinds) assert.equal(parseResourceName(name).kind, kind, name);
  });

  it('reject names that match no kind', () => {
    for (const name of ['', '1foo', 'foo_bar', 'foo-bar', 'foo[]', 'foo[-1]', 'foo[2', 'a..b', '.a', 'a.', '/', '/foo/', '//foo', 'foo/bar', '_s_foo', '_x_foo[1]', '_t_[1]', '_t_%S', 'foo[1x]', 'foo[99999999999999999999]']) {
      assert.equal(code(() => parseResourceName(name)), 'BAD_RESOURCE', JSON.stringify(name));
    }
  });

  it('carry what each kind needs: units, elements, root, slots, transactional flag', () => {
    assert.deepEqual(parseResourceName('foo[2]'), { kind: 'numeric', name: 'foo[2]', total: 2 });
    assert.deepEqual(parseResourceName('red.green.green'), { kind: 'set', name: 'red.green.green', elements: ['red', 'green', 'green'] });
    assert.deepEqual(parseResourceName('/foo/bar'), { kind: 'hierarchical', name: '/foo/bar', root: 'foo' });
    assert.deepEqual(parseResourceName('_S_bar[3]'), { kind: 'sequence', name: '_S_bar[3]', slots: 3, transactional: true });
    assert.deepEqual(parseResourceName('_s_bar[1]'), { kind: 'sequence', name: '_s_bar[1]', slots: 1, transactional: false });
    const ts = parseResourceName('_t_%H%M%S#fff[4]');
    assert.equal(ts.kind === 'timestamp' && ts.slots, 4);
  });

  it('honour all six modes for simple and hierarchical resources, EX only for the others', () => {
    assert.deepEqual(allowedModes('simple'), LOCK_MODES);
    assert.deepEqual(allowedModes('hierarchical'), LOCK_MODES);
    for (const kind of ['numeric', 'set', 'sequence', 'timestamp'] as const) {
      assert.deepEqual(allowedModes(kind), ['EX']);
      assert.equal(effectiveMode(kind, 'PR'), 'EX');
    }
    assert.equal(effectiveMode('simple', 'PR'), 'PR');
  });

  it('relate hierarchical paths to their ancestors and descendants, not to siblings', () => {
    assert.ok(pathsRelated('/foo', '/foo'));
    assert.ok(pathsRelated('/foo', '/foo/bar'));
    assert.ok(pathsRelated('/foo/bar/apple', '/foo'));
    assert.ok(!pathsRelated('/foo/bar', '/foo/blue/apple'));
    assert.ok(!pathsRelated('/foo/bar', '/foo/bar2'));
    assert.ok(!pathsRelated('/foo', '/foobar'));
  });
});

describe('timestamp formats', () => {
  const at = Date.UTC(2024, 2, 2, 13, 4, 5) + 123.456; // Sat 2 Mar 2024 13:04:05.123456 UTC

  it('format strftime specifiers and #f fractions as FLoM does', () => {
    const f = (format: string): string => formatTimestamp(parseTimestampFormat(format), at);
    assert.equal(f('%S#fff'), '05.123');
    assert.equal(f('bar:%S#f'), 'bar:05.1');
    assert.equal(f('%T#ffffff'), '13:04:05.123456');
    assert.equal(f('foo.%D.%T'), 'foo.03/02/24.13:04:05');
    assert.equal(f('%Y%m%d%H%M%S'), '20240302130405');
    assert.equal(f('%F%H'), '2024-03-0213');
    assert.equal(f('%a%A%b%B%j%p%I%y'), 'SatSaturdayMarMarch062PM0124');
    assert.equal(f('%c'), 'Sat Mar  2 13:04:05 2024');
    assert.equal(f('%s%%'), `${Math.floor(at / 1000)}%`);
    assert.equal(f('%R'), '13:04');
    assert.equal(f('%V%G%u%w%U%W%H'), '09202466080913');
    assert.equal(f('%z%Z%S'), '+0000UTC05');
  });

  it('derive the resolution from the finest specifier', () => {
    const res = (format: string): number => parseTimestampFormat(format).resolutionMicros;
    assert.equal(res('%S#ffffff'), 1);
    assert.equal(res('%S#fff'), 1000);
    assert.equal(res('%H#f'), 100_000);
    for (const f of ['%S', '%T', '%c', '%r', '%s', '%X']) assert.equal(res(f), 1_000_000, f);
    for (const f of ['%M', '%R', '%H%M']) assert.equal(res(f), 60_000_000, f);
    for (const f of ['%H', '%I', 'x%d%H']) assert.equal(res(f), 3_600_000_000, f);
  });

  it('refuse a format with no specifier that changes at least hourly, or an unknown one', () => {
    for (const name of ['_t_x%d[1]', '_t_%Y%m%d[1]', '_t_abc[1]', '_t_%%S[1]', '_t_%Q%S[1]', '_t_%S%[1]']) {
      assert.equal(code(() => parseResourceName(name)), 'BAD_RESOURCE', name);
    }
  });

  it('count intervals at the resolution', () => {
    const ms = parseTimestampFormat('%S#fff');
    assert.equal(intervalOf(ms, 1000.2), intervalOf(ms, 1000.9));
    assert.equal(intervalOf(ms, 1001) - intervalOf(ms, 1000.9), 1);
    const sec = parseTimestampFormat('%S');
    assert.equal(intervalOf(sec, 5999), 5);
  });
});
