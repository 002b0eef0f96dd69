// A minimal DER (ASN.1 Distinguished Encoding Rules) encoder and reader: just enough to build
// X.509 v3 certificates by hand, because node:crypto can sign but cannot create certificates.

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

function encodeLength(len: number): Buffer {
  if (len < 0x80) return Buffer.from([len]);
  const bytes: number[] = [];
  for (let n = len; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One tag-length-value element. */
export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

export function sequence(...items: Buffer[]): Buffer {
  return tlv(Tag.SEQUENCE, Buffer.concat(items));
}

/** A SET OF; DER wants its elements sorted by their encodings. */
export function set(...items: Buffer[]): Buffer {
  return tlv(Tag.SET, Buffer.concat([...items].sort((a, b) => Buffer.compare(a, b))));
}

/** A non-negative INTEGER from big-endian magnitude bytes, in minimal two's complement form. */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  let body = magnitude.subarray(start);
  if (body.length === 0) body = Buffer.from([0]);
  if ((body[0] ?? 0) & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return tlv(Tag.INTEGER, body);
}

export function smallInteger(n: number): Buffer {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return unsignedInteger(Buffer.from(bytes));
}

export function boolean(value: boolean): Buffer {
  return tlv(Tag.BOOLEAN, Buffer.from([value ? 0xff : 0x00]));
}

export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const [first = 0, second = 0, ...rest] = parts;
  const out: number[] = [first * 40 + second];
  for (const arc of rest) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(Tag.OID, Buffer.from(out));
}

export function utf8String(s: string): Buffer {
  return tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8'));
}

export function ia5String(s: string): Buffer {
  return tlv(Tag.IA5_STRING, Buffer.from(s, 'ascii'));
}

export function octetString(content: Buffer): Buffer {
  return tlv(Tag.OCTET_STRING, content);
}

/** A BIT STRING whose last `unusedBits` bits are padding (0 for whole bytes such as keys and signatures). */
export function bitString(content: Buffer, unusedBits = 0): Buffer {
  return tlv(Tag.BIT_STRING, Buffer.concat([Buffer.from([unusedBits]), content]));
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; seconds, always Zulu. */
export function time(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-01-02T03:04:05.678Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z'; // 20260102030405Z
  const year = date.getUTCFullYear();
  if (year >= 1950 && year < 2050) return tlv(Tag.UTC_TIME, Buffer.from(digits.slice(2), 'ascii'));
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(digits, 'ascii'));
}

/** [n] EXPLICIT: a constructed context-specific tag wrapping a whole element. */
export function explicit(n: number, inner: Buffer): Buffer {
  return tlv(0xa0 | n, inner);
}

/** [n] IMPLICIT on a primitive type: the context tag replaces the universal one. */
export function implicitPrimitive(n: number, content: Buffer): Buffer {
  return tlv(0x80 | n, content);
}

// ---- Reading: only what pki.ts needs to take apart certificates and keys it trusts ----

export interface Element {
  tag: number;
  /** Offset of the first content byte. */
  start: number;
  /** Offset just past the last content byte. */
  end: number;
  /** Offset of the tag byte, so `der.subarray(offset, end)` is the whole encoding. */
  offset: number;
}

export function readElement(der: Buffer, offset: number): Element {
  const tag = der[offset];
  let lenByte = der[offset + 1];
  if (tag === undefined || lenByte === undefined) throw new RangeError('DER: truncated element');
  let pos = offset + 2;
  let len = lenByte;
  if (lenByte & 0x80) {
    const count = lenByte & 0x7f;
    if (count === 0 || count > 4) throw new RangeError('DER: unsupported length form');
    len = 0;
    for (let i = 0; i < count; i++) {
      lenByte = der[pos++];
      if (lenByte === undefined) throw new RangeError('DER: truncated length');
      len = len * 256 + lenByte;
    }
  }
  if (pos + len > der.length) throw new RangeError('DER: element overruns its container');
  return { tag, start: pos, end: pos + len, offset };
}

/** The direct children of a constructed element. */
export function children(der: Buffer, parent: Element): Element[] {
  const out: Element[] = [];
  for (let pos = parent.start; pos < parent.end; ) {
    const el = readElement(der, pos);
    if (el.end > parent.end) throw new RangeError('DER: child overruns its parent');
    out.push(el);
    pos = el.end;
  }
  return out;
}

export function contentOf(der: Buffer, el: Element): Buffer {
  return der.subarray(el.start, el.end);
}

export function wholeOf(der: Buffer, el: Element): Buffer {
  return der.subarray(el.offset, el.end);
}

/** Decodes an OID's content bytes back to dotted form. */
export function decodeOid(content: Buffer): string {
  const first = content[0] ?? 0;
  const arcs = [Math.floor(first / 40), first % 40];
  let value = 0;
  for (const byte of content.subarray(1)) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      arcs.push(value);
      value = 0;
    }
  }
  return arcs.join('.');
}
