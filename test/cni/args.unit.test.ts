import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatCniArgs, parseCniArgs, withIgnoreUnknown } from '../../src/cni/args.js';
import { CniError } from '../../src/cni/errors.js';

describe('CNI_ARGS', () => {
  it('parses K=V pairs in order', () => {
    assert.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=p1'), [
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAME', 'p1'],
    ]);
    assert.deepEqual(parseCniArgs(''), []);
  });

  it('a value may hold "=" (split at the first), as Multus accepts', () => {
    assert.deepEqual(parseCniArgs('SEL=app=web;TOKEN=YWJj=='), [
      ['SEL', 'app=web'],
      ['TOKEN', 'YWJj=='],
    ]);
    assert.equal(formatCniArgs(parseCniArgs('SEL=app=web')), 'SEL=app=web');
  });

  for (const bad of ['A=1;', 'novalue', '=x', 'A=1;;B=2']) {
    it(`refuses "${bad}" with code 4 naming the pair`, () => {
      assert.throws(
        () => parseCniArgs(bad),
        (e: unknown) => e instanceof CniError && e.code === 4 && /invalid pair/.test(e.details ?? ''),
      );
    });
  }

  it('adds IgnoreUnknown=1 only when absent (any case)', () => {
    assert.equal(formatCniArgs(withIgnoreUnknown([['K8S_POD_NAME', 'p']])), 'IgnoreUnknown=1;K8S_POD_NAME=p');
    assert.equal(
      formatCniArgs(
        withIgnoreUnknown([
          ['ignoreunknown', 'true'],
          ['A', 'b'],
        ]),
      ),
      'ignoreunknown=true;A=b',
    );
    assert.equal(formatCniArgs(withIgnoreUnknown([])), '');
  });

  it('deduplicates keys (last value wins) and never writes an empty pair', () => {
    assert.equal(
      formatCniArgs([
        ['A', '1'],
        ['B', '2'],
        ['A', '3'],
      ]),
      'A=3;B=2',
    );
  });

  it('property: format then parse is the identity on valid pairs', () => {
    const token = fc.stringMatching(/^[A-Za-z0-9_.:-]{1,12}$/);
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(token, fc.stringMatching(/^[A-Za-z0-9_.:/=-]{0,12}$/)), { selector: (p) => p[0] }), (pairs) => {
        assert.deepEqual(parseCniArgs(formatCniArgs(pairs)), pairs);
      }),
    );
  });

  it('property: any string parses or fails with code 4', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        try {
          parseCniArgs(s);
        } catch (err) {
          assert.ok(err instanceof CniError && err.code === 4);
        }
      }),
    );
  });
});
