import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CorralError } from '../api/errors.js';
import { joinPsk, makeJoinToken, newJoinSecret, parseJoinToken } from './join-token.js';
import { caFingerprint, createCA } from './pki.js';

describe('join tokens', () => {
  const ca = createCA({ clusterName: 'alpha' });

  it('carries the CA fingerprint and the secret, and parses back', () => {
    const secret = newJoinSecret();
    const token = makeJoinToken(ca.certPem, secret);
    assert.match(token, /^corral1\.[0-9a-f]{64}\.[A-Za-z0-9_-]+$/);
    const parsed = parseJoinToken(`  ${token}\n`);
    assert.equal(parsed.caFingerprint, caFingerprint(ca.certPem));
    assert.ok(parsed.secret.equals(secret));
  });

  it('refuses malformed tokens with USAGE and a message saying what a token looks like', () => {
    const good = makeJoinToken(ca.certPem, newJoinSecret());
    const bad = [
      '',
      'corral1',
      good.replace('corral1', 'corral2'),
      good.slice(0, 20),
      good.replace(/\.[0-9a-f]{64}\./, '.abcd.'),
      `${good.split('.').slice(0, 2).join('.')}.${Buffer.alloc(8).toString('base64url')}`,
      `${good}.extra`,
      good.toUpperCase(),
    ];
    for (const token of bad) {
      assert.throws(
        () => parseJoinToken(token),
        (err: CorralError) => err.code === 'USAGE' && /malformed join token: expected corral1\./.test(err.message),
        token,
      );
    }
  });

  it('derives a PSK identity and key that are stable per secret and reveal nothing of it', () => {
    const secret = newJoinSecret();
    const a = joinPsk(secret);
    const b = joinPsk(Buffer.from(secret));
    assert.deepEqual(a, b);
    assert.equal(a.key.length, 32);
    assert.ok(!a.key.equals(secret));
    assert.ok(!a.identity.includes(secret.toString('hex')) && !a.identity.includes(secret.toString('base64url')));
    assert.ok(Buffer.byteLength(a.identity) <= 128);
    const other = joinPsk(newJoinSecret());
    assert.notEqual(other.identity, a.identity);
    assert.ok(!other.key.equals(a.key));
  });
});
