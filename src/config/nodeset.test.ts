import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCorralError } from '../api/errors.js';
import { expandNodeSet, foldNodeSet } from './nodeset.js';

const ctx = { groups: { web: ['web1', 'web2'], db: ['db1', 'n3'] }, all: ['n1', 'n2', 'n3', 'n4', 'web1', 'web2', 'db1'] };

function usage(expr: string): string {
  try {
    expandNodeSet(expr, ctx);
  } catch (err) {
    assert.ok(isCorralError(err, 'USAGE'));
    return err.message;
  }
  assert.fail(`${expr} was accepted`);
}

describe('node sets', () => {
  it('expands ranges, lists, padding and steps', () => {
    assert.deepEqual(expandNodeSet('n[1-4,7],web1'), ['n1', 'n2', 'n3', 'n4', 'n7', 'web1']);
    assert.deepEqual(expandNodeSet('node[08-11]'), ['node08', 'node09', 'node10', 'node11']);
    assert.deepEqual(expandNodeSet('n[1-9/4]'), ['n1', 'n5', 'n9']);
    assert.deepEqual(expandNodeSet('n[3]x'), ['n3x']);
  });

  it('expands several bracket groups as a cartesian product, in order', () => {
    assert.deepEqual(expandNodeSet('rack[1-2]-n[01-02]'), ['rack1-n01', 'rack1-n02', 'rack2-n01', 'rack2-n02']);
  });

  it('applies union, difference, intersection and xor left to right, without duplicates', () => {
    assert.deepEqual(expandNodeSet('n[1-4]!n[2-3]', ctx), ['n1', 'n4']);
    assert.deepEqual(expandNodeSet('n[1-4]&n[3-9]', ctx), ['n3', 'n4']);
    assert.deepEqual(expandNodeSet('n[1-3]^n[3-4]', ctx), ['n1', 'n2', 'n4']);
    assert.deepEqual(expandNodeSet('n1,n1,n2', ctx), ['n1', 'n2']);
    assert.deepEqual(expandNodeSet('@*!@web', ctx), ['n1', 'n2', 'n3', 'n4', 'db1']);
    assert.deepEqual(expandNodeSet('@web,@db', ctx), ['web1', 'web2', 'db1', 'n3']);
  });

  it('names what is wrong', () => {
    assert.match(usage('n[1-'), /a '\[' without its '\]'/);
    assert.match(usage('n1]'), /a '\]' without its '\['/);
    assert.match(usage('n[5-2]'), /runs backwards/);
    assert.match(usage('n[a-b]'), /not a number or a range/);
    assert.match(usage('@nope'), /no group @nope \(groups: @web, @db\)/);
    assert.match(usage('n1,,n2'), /an empty term/);
    assert.match(usage('n[1-1000000]'), /too large|more than/);
    assert.match(usage('bad/name'), /is not a node name/);
  });

  it('folds back into the compact form, and folding then expanding is the identity on sets', () => {
    assert.equal(foldNodeSet(['n1', 'n2', 'n3', 'n7', 'web1']), 'n[1-3,7],web1');
    assert.equal(foldNodeSet(['node08', 'node09', 'node10']), 'node[08-10]');
    assert.equal(foldNodeSet(['alpha', 'n2', 'n1']), 'n[1-2],alpha');
    for (const names of [['a1', 'a2', 'a10', 'b1'], ['x01', 'x02', 'x1'], ['rack1-n1', 'rack1-n2', 'rack2-n1'], ['solo']]) {
      assert.deepEqual(new Set(expandNodeSet(foldNodeSet(names))), new Set(names), `fold of ${names.join(',')}`);
    }
  });
});
