// The etcd codec, endpoint parsing and error mapping, without an etcd.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { isCorralError } from '../../api/errors.js';
import { big, decodeEvent, decodeKv, decodeOpResult, encodeCompare, encodeOp, prefixEnd, prefixRange } from './codec.js';
import { parseEndpoints } from './endpoints.js';
import { translate } from './errors.js';
import { etcdRpcs } from './proto.js';

const hex = (b: Buffer): string => b.toString('hex');

describe('etcd codec', () => {
  it('prefix ranges end at the prefix plus one on its last byte below 0xff', () => {
    assert.equal(hex(prefixEnd(Buffer.from('a/'))), hex(Buffer.from('a0')));
    assert.equal(hex(prefixEnd(Buffer.from([0x61, 0xff]))), '62', 'a trailing 0xff is dropped and the byte before it incremented');
    assert.equal(hex(prefixEnd(Buffer.from([0x61, 0xff, 0xff]))), '62');
    assert.equal(hex(prefixEnd(Buffer.from([0xff, 0xff]))), '00', 'all 0xff: every key from the prefix on');
    // é is c3 a9 in UTF-8: the range ends at c3 aa.
    assert.equal(hex(prefixRange('é').range_end), 'c3aa');
    assert.deepEqual(prefixRange(''), { key: Buffer.from([0]), range_end: Buffer.from([0]) }, 'the empty prefix is every key');
  });

  it('keeps 64-bit integers exact through the wire encoding, as bigint', () => {
    const big64 = 2n ** 63n - 1n;
    // Field 3 (lease), varint: 0x18, then 2^63 - 1 in nine bytes. A JS number would have rounded it.
    const wire = etcdRpcs().put.serialize({ key: Buffer.from('k'), value: Buffer.from('v'), lease: big64.toString() });
    assert.ok(hex(wire).includes('18ffffffffffffffff7f'), hex(wire));
    const kv = decodeKv({
      key: Buffer.from('k'),
      value: Buffer.from('v'),
      create_revision: '9007199254740993',
      mod_revision: big64.toString(),
      version: '1',
      lease: '7587869351040929793',
    });
    assert.equal(kv.createRevision, 9_007_199_254_740_993n);
    assert.equal(kv.modRevision, big64);
    assert.equal(kv.lease, 7_587_869_351_040_929_793n);
    assert.equal(big('18446744073709551615'), 2n ** 64n - 1n, 'uint64 too');
  });

  it('encodes every compare target and operator as etcd’s', () => {
    assert.deepEqual(encodeCompare({ key: 'k', target: 'value', op: '<', value: 'x' }), { result: 'LESS', key: Buffer.from('k'), target: 'VALUE', value: Buffer.from('x') });
    assert.deepEqual(encodeCompare({ key: 'k', target: 'version', op: '=', value: 2n }), { result: 'EQUAL', key: Buffer.from('k'), target: 'VERSION', version: '2' });
    assert.deepEqual(encodeCompare({ key: 'k', target: 'createRevision', op: '!=', value: 3n }), { result: 'NOT_EQUAL', key: Buffer.from('k'), target: 'CREATE', create_revision: '3' });
    assert.deepEqual(encodeCompare({ key: 'k', target: 'modRevision', op: '>', value: 4n }), { result: 'GREATER', key: Buffer.from('k'), target: 'MOD', mod_revision: '4' });
    assert.deepEqual(encodeCompare({ key: 'k', target: 'lease', op: '=', value: 2n ** 62n }), { result: 'EQUAL', key: Buffer.from('k'), target: 'LEASE', lease: (2n ** 62n).toString() });
  });

  it('maps txn ops to etcd request ops and answers back by the op that asked', () => {
    assert.deepEqual(encodeOp({ type: 'put', key: 'k', value: 'v', lease: 5n }), { request_put: { key: Buffer.from('k'), value: Buffer.from('v'), lease: '5', prev_kv: true } });
    assert.deepEqual(encodeOp({ type: 'delete', key: 'p/', prefix: true }), { request_delete_range: { key: Buffer.from('p/'), range_end: Buffer.from('p0') } });
    assert.deepEqual(encodeOp({ type: 'get', key: 'k' }), { request_range: { key: Buffer.from('k') } });
    assert.deepEqual(encodeOp({ type: 'range', prefix: 'p/', limit: 2 }), { request_range: { key: Buffer.from('p/'), range_end: Buffer.from('p0'), limit: '2' } });
    const header = { cluster_id: '1', member_id: '2', revision: '3', raft_term: '4' };
    const range = { header, kvs: [], more: false, count: '0' };
    assert.deepEqual(decodeOpResult({ type: 'get', key: 'k' }, { response: 'response_range', response_range: range }), { type: 'get', kv: undefined });
    assert.deepEqual(decodeOpResult({ type: 'range', prefix: 'p' }, { response: 'response_range', response_range: range }), { type: 'range', kvs: [], more: false });
    assert.throws(() => decodeOpResult({ type: 'put', key: 'k', value: 'v' }, { response: 'response_range', response_range: range }), /answered a txn put/);
  });

  it('reports a delete event with only its key and deleting revision', () => {
    const ev = decodeEvent({
      type: 'DELETE',
      kv: { key: Buffer.from('k'), value: Buffer.from('stale'), create_revision: '5', mod_revision: '9', version: '3', lease: '7' },
    });
    assert.deepEqual(ev, { type: 'delete', revision: 9n, kv: { key: 'k', value: '', createRevision: 0n, modRevision: 9n, version: 0n, lease: 0n } });
  });
});

describe('etcd endpoints', () => {
  it('accepts host:port, http:// and https:// endpoints, and IPv6 in brackets', () => {
    assert.deepEqual(
      parseEndpoints(['10.0.0.1:2379', 'http://etcd-2.example:2379', '[::1]:2379'], undefined).map((e) => [e.target, e.secure]),
      [
        ['10.0.0.1:2379', false],
        ['etcd-2.example:2379', false],
        ['[::1]:2379', false],
      ],
    );
    assert.deepEqual(
      parseEndpoints(['https://a:2379', 'b:2379'], { ca: 'x' }).map((e) => e.secure),
      [true, true],
      'TLS settings make every endpoint TLS',
    );
  });

  it('refuses malformed, empty, mixed and contradictory endpoint lists with CONFIG_INVALID', () => {
    for (const [list, tls] of [
      [[], undefined],
      [['a'], undefined],
      [['a:0'], undefined],
      [['a:99999'], undefined],
      [['ftp://a:1'], undefined],
      [['https://a:1', 'b:2'], undefined],
      [['http://a:1'], { ca: 'x' }],
    ] as [string[], { ca: string } | undefined][]) {
      assert.throws(
        () => parseEndpoints(list, tls),
        (err: unknown) => isCorralError(err, 'CONFIG_INVALID'),
        JSON.stringify(list),
      );
    }
  });
});

describe('etcd errors', () => {
  const site = { rpc: 'Put', endpoint: '127.0.0.1:2379', cluster: 'etcd at 127.0.0.1:2379' };
  const grpcError = (code: status, details: string): ServiceError =>
    Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata: new Metadata() });

  it('maps etcd’s failures to the contract’s codes', () => {
    const cases: [status, string, string][] = [
      [status.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:2379', 'STORE_UNAVAILABLE'],
      [status.UNAVAILABLE, 'etcdserver: no leader', 'STORE_UNAVAILABLE'],
      [status.UNAVAILABLE, 'etcdserver: request timed out', 'STORE_UNAVAILABLE'],
      [status.DEADLINE_EXCEEDED, 'Deadline exceeded', 'STORE_UNAVAILABLE'],
      [status.FAILED_PRECONDITION, 'etcdserver: not leader', 'STORE_UNAVAILABLE'],
      [status.RESOURCE_EXHAUSTED, 'etcdserver: mvcc: database space exceeded', 'STORE_UNAVAILABLE'],
      [status.NOT_FOUND, 'etcdserver: requested lease not found', 'LEASE_NOT_FOUND'],
      [status.INVALID_ARGUMENT, 'etcdserver: duplicate key given in txn request', 'BAD_REQUEST'],
      [status.INVALID_ARGUMENT, 'etcdserver: request is too large', 'TOO_LARGE'],
      [status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision has been compacted', 'COMPACTED'],
      [status.PERMISSION_DENIED, 'etcdserver: permission denied', 'FORBIDDEN'],
      [status.UNIMPLEMENTED, 'unknown service etcdserverpb.KV', 'INTERNAL'],
    ];
    for (const [code, details, expected] of cases) {
      const err = translate(grpcError(code, details), site);
      assert.equal(err.code, expected, details);
      assert.ok(!err.message.includes('\n'), 'one line');
    }
  });

  it('says where and how to fix an unavailable etcd, in one line', () => {
    const err = translate(grpcError(status.UNAVAILABLE, 'No connection established.\n Last error: ECONNREFUSED'), site);
    assert.match(err.message, /^etcd at 127\.0\.0\.1:2379 is unavailable \(Put on 127\.0\.0\.1:2379: No connection established\. Last error: ECONNREFUSED\); check that a majority/);
    const tls = translate(grpcError(status.UNAVAILABLE, 'Last error: unable to verify the first certificate'), site);
    assert.match(tls.message, /check store\.tls/);
  });
});
