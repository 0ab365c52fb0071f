import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CniError } from '../../src/cni/errors.js';
import { parseNad, parsePod } from '../../src/k8s/types.js';

const code7 = (pattern: RegExp) => (err: unknown) => err instanceof CniError && err.code === 7 && pattern.test(`${err.message}: ${err.details ?? ''}`);

describe('API objects are parsed, not cast', () => {
  it('a pod and a NAD with the fields Plexus reads pass through unchanged, other fields kept', () => {
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'ns', uid: 'u', annotations: { a: 'b' } }, spec: { nodeName: 'n', containers: [] }, status: { phase: 'Pending' } };
    assert.equal(parsePod(pod, 'pod ns/p'), pod);
    const nad = { metadata: { name: 'n', namespace: 'ns' }, spec: { config: '{}' } };
    assert.equal(parseNad(nad, 'NAD ns/n'), nad);
  });

  it('a wrong type where Plexus reads a field is code 7 naming the object and the field', () => {
    assert.throws(() => parsePod({ metadata: { name: 'p', namespace: 'ns', annotations: { a: 1 } } }, 'pod ns/p from the API'), code7(/pod ns\/p from the API: \/metadata\/annotations\/a/));
    assert.throws(() => parsePod({ metadata: { name: 'p' } }, 'pod p'), code7(/"namespace"/));
    assert.throws(() => parsePod({ metadata: { name: 'p', namespace: 'ns' }, spec: { nodeName: 3 } }, 'pod p'), code7(/\/spec\/nodeName/));
    assert.throws(() => parseNad({ metadata: { name: 'n', namespace: 'ns' }, spec: { config: { cniVersion: '1.0.0' } } }, 'NAD ns/n'), code7(/\/spec\/config/));
    assert.throws(() => parseNad(null, 'NAD ns/n'), code7(/NAD ns\/n/));
  });

  it('property: any JSON value is a pod (with string annotations) or a code-7 error, never another exception', () => {
    const meta = fc.record(
      {
        name: fc.oneof(fc.string(), fc.integer()),
        namespace: fc.oneof(fc.string(), fc.constant(undefined)),
        annotations: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.dictionary(fc.string(), fc.jsonValue())),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.record({ metadata: meta, spec: fc.jsonValue() }, { requiredKeys: [] })), (value) => {
        try {
          const pod = parsePod(value, 'pod');
          assert.equal(typeof pod.metadata.name, 'string');
          for (const v of Object.values(pod.metadata.annotations ?? {})) assert.equal(typeof v, 'string');
        } catch (err) {
          if (!(err instanceof CniError) || err.code !== 7) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});
