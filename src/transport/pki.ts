// The cluster's PKI without dependencies: node:crypto makes keys and signatures, der.ts lays out
// the X.509 v3 structure (RFC 5280). One CA per cluster; node and admin certificates carry the
// peer's name, cluster and role in the subject, which the server reads back as the peer identity.

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { CorralError } from '../api/errors.js';
import * as der from './der.js';
import type { Role } from './types.js';

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

const DAY_MS = 86_400_000;
/** Certificates start a little in the past so a peer whose clock lags still accepts them. */
const BACKDATE_MS = 5 * 60_000;
const CA_OU = 'ca';

export interface CertifiedKey {
  certPem: string;
  keyPem: string;
}

export interface PeerSubject {
  commonName: string;
  role: Role;
  clusterName: string;
}

export interface IssueOptions {
  ca: CertifiedKey;
  commonName: string;
  role: Role;
  clusterName: string;
  dnsNames?: string[];
  ipAddresses?: string[];
  /** Certify this key (a joining node's) instead of generating one; then no keyPem is returned. */
  publicKeyPem?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** Validity when notAfter is not given (default 365). */
  days?: number;
}

/** A fresh ECDSA P-256 key pair as PKCS#8 and SPKI PEM. */
export function generateKeyPair(): { keyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
  };
}

export function createCA(opts: { clusterName: string; days?: number; notBefore?: Date }): CertifiedKey {
  requireText('clusterName', opts.clusterName);
  const { keyPem } = generateKeyPair();
  const key = createPrivateKey(keyPem);
  const spki = spkiOf(createPublicKey(key));
  const subject = encodeName([
    [OID.organization, opts.clusterName],
    [OID.organizationalUnit, CA_OU],
    [OID.commonName, `corral CA ${opts.clusterName}`],
  ]);
  const { notBefore, notAfter } = validity(opts.notBefore, undefined, opts.days ?? 3650);
  const certPem = buildCertificate(
    {
      issuer: subject,
      subject,
      notBefore,
      notAfter,
      spki,
      extensions: [
        extension(OID.basicConstraints, true, der.sequence(der.boolean(true))),
        // keyCertSign (bit 5) and cRLSign (bit 6): 0b0000011x, one unused bit.
        extension(OID.keyUsage, true, der.bitString(Buffer.from([0x06]), 1)),
        extension(OID.subjectKeyIdentifier, false, der.octetString(keyIdentifier(spki))),
      ],
    },
    key,
  );
  return { certPem, keyPem };
}

export function issueCertificate(opts: IssueOptions): { certPem: string; keyPem?: string } {
  requireText('commonName', opts.commonName);
  requireText('clusterName', opts.clusterName);
  if (opts.role !== 'node' && opts.role !== 'admin') throw usage(`role must be 'node' or 'admin', not '${String(opts.role)}'`);
  const ca = loadCA(opts.ca);
  const generated = opts.publicKeyPem === undefined ? generateKeyPair() : undefined;
  const subjectKey = loadSubjectKey(generated?.publicKeyPem ?? opts.publicKeyPem ?? '');
  const spki = spkiOf(subjectKey);
  const { notBefore, notAfter } = validity(opts.notBefore, opts.notAfter, opts.days ?? 365);
  const certPem = buildCertificate(
    {
      issuer: ca.subject,
      subject: encodeName([
        [OID.organization, opts.clusterName],
        [OID.organizationalUnit, opts.role],
        [OID.commonName, opts.commonName],
      ]),
      notBefore,
      notAfter,
      spki,
      extensions: [
        extension(OID.basicConstraints, true, der.sequence()),
        // digitalSignature (bit 0): what a TLS 1.3 ECDSA end-entity key does.
        extension(OID.keyUsage, true, der.bitString(Buffer.from([0x80]), 7)),
        extension(OID.extKeyUsage, false, der.sequence(der.oid(OID.serverAuth), der.oid(OID.clientAuth))),
        ...subjectAltName(opts.dnsNames ?? [], opts.ipAddresses ?? []),
        extension(OID.subjectKeyIdentifier, false, der.octetString(keyIdentifier(spki))),
        extension(OID.authorityKeyIdentifier, false, der.sequence(der.implicitPrimitive(0, ca.keyId))),
      ],
    },
    ca.key,
  );
  return generated ? { certPem, keyPem: generated.keyPem } : { certPem };
}

/** 'sha256:<hex>' of the CA's SubjectPublicKeyInfo, as kubeadm's discovery-token-ca-cert-hash. */
export function caFingerprint(caCertPem: string): string {
  const spki = spkiOf(parseCertificate(caCertPem).publicKey);
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}

/** The peer's name, role and cluster, read from the subject of a certificate the CA vouched for. */
export function peerIdentity(cert: PeerCertificate | X509Certificate): PeerSubject {
  const attrs = subjectAttributes(cert.raw);
  const one = (oidName: string, label: string): string => {
    const values = attrs.filter(([o]) => o === oidName).map(([, v]) => v);
    const [value] = values;
    if (values.length !== 1 || !value) throw new CorralError('TLS', `peer certificate must have exactly one ${label} in its subject`);
    return value;
  };
  const role = one(OID.organizationalUnit, 'OU (role)');
  if (role !== 'node' && role !== 'admin') throw new CorralError('TLS', `peer certificate has role OU=${role}; expected node or admin`);
  return { commonName: one(OID.commonName, 'CN'), role, clusterName: one(OID.organization, 'O (cluster)') };
}

// ---- certificate assembly ----

interface TbsFields {
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: Buffer[];
}

function buildCertificate(fields: TbsFields, signer: KeyObject): string {
  const sigAlg = der.sequence(der.oid(OID.ecdsaWithSha256));
  const tbs = der.sequence(
    der.explicit(0, der.smallInteger(2)), // v3
    der.unsignedInteger(serialNumber()),
    sigAlg,
    fields.issuer,
    der.sequence(der.time(fields.notBefore), der.time(fields.notAfter)),
    fields.subject,
    fields.spki,
    der.explicit(3, der.sequence(...fields.extensions)),
  );
  // node:crypto's ECDSA signature is already the DER Ecdsa-Sig-Value X.509 wants.
  const signature = sign('sha256', tbs, signer);
  return toPem('CERTIFICATE', der.sequence(tbs, sigAlg, der.bitString(signature)));
}

/** 16 random bytes, top bit clear so the INTEGER is positive, next bit set so it stays 16 bytes. */
function serialNumber(): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  return serial;
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  const parts = [der.oid(id)];
  if (critical) parts.push(der.boolean(true)); // DER omits the FALSE default
  parts.push(der.octetString(value));
  return der.sequence(...parts);
}

function subjectAltName(dnsNames: string[], ipAddresses: string[]): Buffer[] {
  const names = [
    ...dnsNames.map((name) => {
      if (!/^[A-Za-z0-9*]([A-Za-z0-9.*-]*[A-Za-z0-9])?$/.test(name)) throw usage(`'${name}' is not a DNS name`);
      return der.implicitPrimitive(2, Buffer.from(name, 'ascii'));
    }),
    ...ipAddresses.map((ip) => der.implicitPrimitive(7, ipBytes(ip))),
  ];
  return names.length === 0 ? [] : [extension(OID.subjectAltName, false, der.sequence(...names))];
}

type Attribute = [oid: string, value: string];

function encodeName(attrs: Attribute[]): Buffer {
  return der.sequence(...attrs.map(([o, v]) => der.set(der.sequence(der.oid(o), der.utf8String(v)))));
}

function validity(notBefore: Date | undefined, notAfter: Date | undefined, days: number): { notBefore: Date; notAfter: Date } {
  const start = notBefore ?? new Date(Date.now() - BACKDATE_MS);
  const end = notAfter ?? new Date(start.getTime() + BACKDATE_MS + days * DAY_MS);
  if (!(end.getTime() > start.getTime())) throw usage('certificate notAfter must be later than notBefore');
  return { notBefore: start, notAfter: end };
}

function toPem(label: string, body: Buffer): string {
  const lines = body.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

// ---- keys and parsing ----

function spkiOf(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits (an identifier, not a security check). */
function keyIdentifier(spki: Buffer): Buffer {
  const [, bits] = der.children(spki, der.readElement(spki, 0));
  if (!bits || bits.tag !== der.Tag.BIT_STRING) throw new CorralError('INTERNAL', 'SubjectPublicKeyInfo without a key');
  return createHash('sha1').update(spki.subarray(bits.start + 1, bits.end)).digest();
}

function loadSubjectKey(publicKeyPem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(publicKeyPem);
  } catch (err) {
    throw new CorralError('TLS', 'the public key to certify is not a valid PEM public key', { cause: err });
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new CorralError('TLS', 'the public key to certify must be an ECDSA P-256 key');
  }
  return key;
}

interface LoadedCA {
  key: KeyObject;
  subject: Buffer;
  keyId: Buffer;
}

function loadCA(ca: CertifiedKey): LoadedCA {
  const cert = parseCertificate(ca.certPem);
  let key: KeyObject;
  try {
    key = createPrivateKey(ca.keyPem);
  } catch (err) {
    throw new CorralError('TLS', 'the CA key is not a valid PEM private key', { cause: err });
  }
  if (!cert.ca) throw new CorralError('TLS', 'the CA certificate is not a CA (basicConstraints CA:FALSE)');
  if (key.asymmetricKeyType !== 'ec') throw new CorralError('TLS', 'the CA key must be an ECDSA key');
  if (!cert.checkPrivateKey(key)) throw new CorralError('TLS', 'the CA key does not belong to the CA certificate');
  const fields = tbsFields(cert.raw);
  // Reuse the CA's own key identifier: OpenSSL rejects an issuer whose SKI differs from the AKI.
  const keyId = fields.subjectKeyId ?? keyIdentifier(spkiOf(cert.publicKey));
  return { key, subject: fields.subject, keyId };
}

function parseCertificate(pem: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new CorralError('TLS', 'not a valid PEM certificate', { cause: err });
  }
}

/** The subject Name and SubjectKeyIdentifier of a certificate's DER. */
function tbsFields(raw: Buffer): { subject: Buffer; subjectKeyId?: Buffer } {
  const [tbsEl] = der.children(raw, der.readElement(raw, 0));
  if (!tbsEl) throw new CorralError('TLS', 'certificate without a body');
  const kids = der.children(raw, tbsEl);
  const base = kids[0]?.tag === 0xa0 ? 1 : 0; // the [0] version is absent in v1 certificates
  const subjectEl = kids[base + 4];
  if (!subjectEl) throw new CorralError('TLS', 'certificate without a subject');
  const result: { subject: Buffer; subjectKeyId?: Buffer } = { subject: der.wholeOf(raw, subjectEl) };
  const extsWrapper = kids.find((k) => k.tag === 0xa3);
  const extsSeq = extsWrapper ? der.children(raw, extsWrapper)[0] : undefined;
  for (const ext of extsSeq ? der.children(raw, extsSeq) : []) {
    const parts = der.children(raw, ext);
    const [idEl] = parts;
    const valueEl = parts[parts.length - 1];
    if (!idEl || !valueEl || der.decodeOid(der.contentOf(raw, idEl)) !== OID.subjectKeyIdentifier) continue;
    const inner = der.readElement(raw, valueEl.start);
    result.subjectKeyId = Buffer.from(der.contentOf(raw, inner));
  }
  return result;
}

function subjectAttributes(raw: Buffer): Attribute[] {
  const { subject } = tbsFields(raw);
  const out: Attribute[] = [];
  for (const rdn of der.children(subject, der.readElement(subject, 0))) {
    for (const atv of der.children(subject, rdn)) {
      const [typeEl, valueEl] = der.children(subject, atv);
      if (!typeEl || !valueEl) continue;
      out.push([der.decodeOid(der.contentOf(subject, typeEl)), der.contentOf(subject, valueEl).toString('utf8')]);
    }
  }
  return out;
}

function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (isIPv6(ip) && !ip.includes('%')) return ipv6Bytes(ip);
  throw usage(`'${ip}' is not an IP address`);
}

/** Expands a (validated) IPv6 literal, with '::' and an optional trailing dotted IPv4, to 16 bytes. */
function ipv6Bytes(ip: string): Buffer {
  let text = ip;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const dotted = text.slice(lastColon + 1);
  if (isIPv4(dotted)) {
    const [a = 0, b = 0, c = 0, d = 0] = dotted.split('.').map(Number);
    tail.push((a << 8) | b, (c << 8) | d);
    text = text.slice(0, lastColon + 1);
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const [head = '', rest] = text.split('::');
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  const fill = rest === undefined ? 0 : 8 - tail.length - left.length - right.length;
  const groups = [...left, ...new Array<number>(fill).fill(0), ...right, ...tail];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

function requireText(field: string, value: string): void {
  if (typeof value !== 'string' || value.trim() === '' || /[\n\r\0]/.test(value)) {
    throw usage(`${field} must be a non-empty single-line string`);
  }
}

function usage(message: string): CorralError {
  return new CorralError('USAGE', message);
}
