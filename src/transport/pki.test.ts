import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CorralError } from '../api/errors.js';
import { tempDir } from './fixtures.js';
import { caFingerprint, createCA, generateKeyPair, issueCertificate, peerIdentity, type CertifiedKey } from './pki.js';

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

describe('PKI', { timeout: 30_000 }, () => {
  let ca: CertifiedKey;
  let dir: ReturnType<typeof tempDir>;
  const file = (name: string, text: string): string => {
    const path = join(dir.dir, name);
    writeFileSync(path, text);
    return path;
  };

  before(() => {
    dir = tempDir();
    ca = createCA({ clusterName: 'alpha' });
  });
  after(() => dir.cleanup());

  it('creates a self-signed CA certificate that node parses as a CA', () => {
    const cert = new X509Certificate(ca.certPem);
    assert.equal(cert.ca, true);
    assert.ok(cert.verify(cert.publicKey), 'self-signed');
    assert.match(cert.subject, /O=alpha/);
    assert.equal(cert.issuer, cert.subject);
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(cert.checkPrivateKey(createPrivateKey(ca.keyPem)));
  });

  it('issues a node certificate: subject, SANs (IPv4 and IPv6), serial, validity, chain', () => {
    const issued = issueCertificate({
      ca,
      commonName: 'n1',
      role: 'node',
      clusterName: 'alpha',
      dnsNames: ['n1.example.org'],
      ipAddresses: ['10.0.0.7', '::1', 'fe80::1', '2001:db8::8a2e:370:7334', '::ffff:192.0.2.1'],
      days: 30,
    });
    assert.ok(issued.keyPem);
    const cert = new X509Certificate(issued.certPem);
    const caCert = new X509Certificate(ca.certPem);
    assert.ok(cert.verify(caCert.publicKey), 'signed by the CA');
    assert.ok(cert.checkIssued(caCert));
    assert.equal(cert.ca, false);
    assert.deepEqual(peerIdentity(cert), { commonName: 'n1', role: 'node', clusterName: 'alpha' });
    assert.equal(
      cert.subjectAltName,
      'DNS:n1.example.org, IP Address:10.0.0.7, IP Address:0:0:0:0:0:0:0:1, IP Address:FE80:0:0:0:0:0:0:1, ' +
        'IP Address:2001:DB8:0:0:0:8A2E:370:7334, IP Address:0:0:0:0:0:FFFF:C000:201',
    );
    assert.equal(cert.serialNumber.length, 32, '16 bytes');
    assert.ok(parseInt(cert.serialNumber[0] ?? 'f', 16) < 8, 'positive');
    const lifetime = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
    assert.ok(Math.abs(lifetime - 30 * 86_400_000) < 10 * 60_000);
    assert.ok(cert.checkPrivateKey(createPrivateKey(issued.keyPem)));
  });

  it('serials differ between certificates', () => {
    const a = new X509Certificate(issueCertificate({ ca, commonName: 'a', role: 'node', clusterName: 'alpha' }).certPem);
    const b = new X509Certificate(issueCertificate({ ca, commonName: 'a', role: 'node', clusterName: 'alpha' }).certPem);
    assert.notEqual(a.serialNumber, b.serialNumber);
  });

  it('certifies a given public key (the join flow) without returning a private key', () => {
    const { publicKeyPem } = generateKeyPair();
    const issued = issueCertificate({ ca, commonName: 'n5', role: 'node', clusterName: 'alpha', publicKeyPem });
    assert.equal(issued.keyPem, undefined);
    const cert = new X509Certificate(issued.certPem);
    assert.ok(cert.publicKey.equals(createPublicKey(publicKeyPem)));
  });

  it('honours explicit validity dates, including after 2049 (GeneralizedTime)', () => {
    const notBefore = new Date('2030-01-02T03:04:05Z');
    const notAfter = new Date('2061-06-07T08:09:10Z');
    const cert = new X509Certificate(issueCertificate({ ca, commonName: 'x', role: 'admin', clusterName: 'alpha', notBefore, notAfter }).certPem);
    assert.equal(new Date(cert.validFrom).toISOString(), notBefore.toISOString());
    assert.equal(new Date(cert.validTo).toISOString(), notAfter.toISOString());
  });

  it('refuses bad input with a clear code', () => {
    const other = createCA({ clusterName: 'beta' });
    const mixed = { certPem: ca.certPem, keyPem: other.keyPem };
    assert.throws(() => issueCertificate({ ca: mixed, commonName: 'n', role: 'node', clusterName: 'alpha' }), (e: CorralError) => e.code === 'TLS');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    assert.throws(() => issueCertificate({ ca, commonName: 'n', role: 'node', clusterName: 'alpha', publicKeyPem: rsa }), (e: CorralError) => e.code === 'TLS');
    assert.throws(() => issueCertificate({ ca, commonName: 'n', role: 'node', clusterName: 'alpha', ipAddresses: ['300.1.1.1'] }), (e: CorralError) => e.code === 'USAGE');
    assert.throws(() => issueCertificate({ ca, commonName: '', role: 'node', clusterName: 'alpha' }), (e: CorralError) => e.code === 'USAGE');
    assert.throws(() => issueCertificate({ ca, commonName: 'n', role: 'root' as 'node', clusterName: 'alpha' }), (e: CorralError) => e.code === 'USAGE');
    const leaf = issueCertificate({ ca, commonName: 'n', role: 'node', clusterName: 'alpha' });
    assert.throws(() => issueCertificate({ ca: { certPem: leaf.certPem, keyPem: leaf.keyPem ?? '' }, commonName: 'n', role: 'node', clusterName: 'alpha' }), (e: CorralError) => e.code === 'TLS');
  });

  it('peerIdentity refuses a certificate whose role is not node or admin', () => {
    assert.throws(() => peerIdentity(new X509Certificate(ca.certPem)), (e: CorralError) => e.code === 'TLS');
  });

  it('fingerprints the CA as sha256 of its SubjectPublicKeyInfo', () => {
    const spki = new X509Certificate(ca.certPem).publicKey.export({ type: 'spki', format: 'der' });
    assert.equal(caFingerprint(ca.certPem), `sha256:${createHash('sha256').update(spki).digest('hex')}`);
    assert.notEqual(caFingerprint(ca.certPem), caFingerprint(createCA({ clusterName: 'alpha' }).certPem));
  });

  describe('with the openssl command', { skip: !hasOpenssl && 'openssl is not installed' }, () => {
    it('openssl verifies node and admin certificates for TLS server and client use', () => {
      const caFile = file('ca.pem', ca.certPem);
      for (const role of ['node', 'admin'] as const) {
        const leaf = file(`${role}.pem`, issueCertificate({ ca, commonName: role, role, clusterName: 'alpha', ipAddresses: ['127.0.0.1'] }).certPem);
        for (const purpose of ['sslserver', 'sslclient']) {
          const out = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', caFile, leaf], { encoding: 'utf8' });
          assert.match(out, /: OK/);
        }
      }
    });

    it('openssl reads the extensions we meant to write', () => {
      const caText = execFileSync('openssl', ['x509', '-noout', '-text', '-in', file('ca2.pem', ca.certPem)], { encoding: 'utf8' });
      assert.match(caText, /Basic Constraints: critical\s+CA:TRUE/);
      assert.match(caText, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
      assert.match(caText, /Subject Key Identifier/);
      assert.match(caText, /Signature Algorithm: ecdsa-with-SHA256/);
      const leafPem = issueCertificate({ ca, commonName: 'n1', role: 'node', clusterName: 'alpha', ipAddresses: ['::1'] }).certPem;
      const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', file('leaf.pem', leafPem)], { encoding: 'utf8' });
      assert.match(text, /Version: 3 \(0x2\)/);
      assert.match(text, /Subject: O = alpha, OU = node, CN = n1/);
      assert.match(text, /Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, /Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
      assert.match(text, /IP Address:0:0:0:0:0:0:0:1/);
      assert.match(text, /Authority Key Identifier/);
    });

    it('the fingerprint matches the kubeadm recipe (openssl pkey | sha256)', () => {
      const pub = execFileSync('openssl', ['x509', '-pubkey', '-noout', '-in', file('ca3.pem', ca.certPem)]);
      const spki = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub });
      assert.equal(caFingerprint(ca.certPem), `sha256:${createHash('sha256').update(spki).digest('hex')}`);
    });
  });
});
