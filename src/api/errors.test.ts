import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CorralError, ErrorCodes } from './errors.js';

describe('the error catalogue', () => {
  it('is documented in docs/errors.md, code by code, with its status and exit code', () => {
    const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
    for (const [code, spec] of Object.entries(ErrorCodes)) {
      assert.match(doc, new RegExp(`^\\| \`${code}\` \\| ${spec.status} \\| ${spec.exit} \\|`, 'm'), `${code} is missing or stale in docs/errors.md`);
    }
    const documented = [...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    assert.deepEqual(documented.sort(), Object.keys(ErrorCodes).sort(), 'docs/errors.md lists a code the catalogue does not have');
  });

  it('round-trips through the wire form and rejects unknown codes', () => {
    const err = new CorralError('LEASE_NOT_FOUND', 'lease 7 is gone');
    assert.deepEqual(CorralError.fromWire(err.toWire()), err);
    assert.equal(CorralError.fromWire({ code: 'NOPE', message: 'x' }, 502).code, 'INTERNAL');
    assert.equal(CorralError.fromWire('garbage').code, 'INTERNAL');
  });
});
