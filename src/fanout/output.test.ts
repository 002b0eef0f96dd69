import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exitStatus, gatherBlocks, LineSplitter, prefixLine, renderSummary, summarize, type NodeResult } from './output.js';

describe('fan-out output', () => {
  it('emits whole lines only, per source, and flushes the unterminated end', () => {
    const s = new LineSplitter();
    assert.deepEqual(s.push('n1/out', 'hel'), []);
    assert.deepEqual(s.push('n2/out', 'other\npart'), ['other']);
    assert.deepEqual(s.push('n1/out', 'lo\nwor'), ['hello']);
    assert.deepEqual(s.end('n1/out'), ['wor']);
    assert.deepEqual(s.end('n2/out'), ['part']);
    assert.deepEqual(s.end('n3/out'), []);
    assert.equal(prefixLine('n1', 'x', 4), 'n1:   x\n');
  });

  const results: NodeResult[] = [
    { node: 'n1', stdout: 'same\n', stderr: '', outcome: { kind: 'exited', code: 0 } },
    { node: 'n2', stdout: 'same\n', stderr: 'noise', outcome: { kind: 'exited', code: 0 } },
    { node: 'n3', stdout: 'same\n', stderr: '', outcome: { kind: 'exited', code: 2 } },
    { node: 'n4', stdout: 'different', stderr: '', outcome: { kind: 'exited', code: 0 } },
    { node: 'n5', stdout: '', stderr: '', outcome: { kind: 'timeout' } },
    { node: 'n6', stdout: '', stderr: '', outcome: { kind: 'unreachable', error: 'ECONNREFUSED' } },
  ];

  it('gathers nodes with identical output and identical exit status only', () => {
    const text = gatherBlocks(results);
    assert.match(text, /n\[1-2\] \(2 nodes, exit 0\)\n-+\nsame\n/);
    assert.match(text, /n3 \(1 node, exit 2\)\n-+\nsame\n/);
    assert.match(text, /n4 \(1 node, exit 0\)\n-+\ndifferent\n/);
    assert.match(gatherBlocks(results, { withStderr: true }), /n1 \(1 node, exit 0\)/);
  });

  it('summarizes by category and picks the exit status of the worst one', () => {
    const s = summarize(results);
    assert.deepEqual(s.ok, ['n1', 'n2', 'n4']);
    assert.match(renderSummary(s), /^ok: 3 \(n\[1-2,4\]\)\nfailed: 1 \(n3: exit 2\)\ntimed out: 1 \(n5\)\nunreachable: 1 \(n6: ECONNREFUSED\)\n$/);
    assert.equal(exitStatus(s), 4);
    assert.equal(exitStatus(summarize(results.slice(0, 5))), 3);
    assert.equal(exitStatus(summarize(results.slice(0, 4))), 1);
    assert.equal(exitStatus(summarize(results.slice(0, 2))), 0);
    assert.equal(exitStatus(summarize(results.slice(0, 4)), { largestCode: true }), 2);
  });
});
