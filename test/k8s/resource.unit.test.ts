import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CniError, ErrorCode } from '../../src/cni/errors.js';
import { parseResourceClaim, podClaims, sliceDeviceIds } from '../../src/k8s/resource.js';
import type { Pod } from '../../src/k8s/types.js';

const label = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/);
const result = fc.record({ request: label, driver: label, pool: label, device: label });

describe('DRA objects as Plexus reads them (src/k8s/resource.ts)', () => {
  it('a claim: allocation results and opaque configs come back as given; no allocation is undefined results', () => {
    fc.assert(
      fc.property(
        fc.option(fc.array(result, { maxLength: 4 }), { nil: undefined }),
        fc.array(fc.record({ requests: fc.array(label, { maxLength: 2 }), driver: label }), { maxLength: 3 }),
        (results, configs) => {
          const raw = {
            metadata: { name: 'c', namespace: 'ns', uid: 'u' },
            status: results
              ? { allocation: { devices: { results, config: configs.map((c) => ({ source: 'FromClaim', requests: c.requests, opaque: { driver: c.driver, parameters: { n: 1 } } })) } } }
              : {},
          };
          const claim = parseResourceClaim(raw, 'claim');
          assert.deepEqual(
            claim.results,
            results?.map((r) => ({ ...r })),
          );
          assert.deepEqual(claim.config, results ? configs.map((c) => ({ requests: c.requests, driver: c.driver, parameters: { n: 1 } })) : []);
        },
      ),
    );
  });

  it('a claim of any shape: parsed, or refused with a CNI error naming it; never another exception', () => {
    fc.assert(
      fc.property(fc.anything(), fc.anything(), fc.anything(), (status, results, config) => {
        const shapes = [status, { allocation: status }, { allocation: { devices: { results, config } } }];
        for (const s of shapes) {
          try {
            parseResourceClaim({ metadata: { name: 'c', namespace: 'ns', uid: 'u' }, status: s }, 'claim ns/c');
          } catch (err) {
            assert.ok(err instanceof CniError, String(err));
            assert.equal(err.code, ErrorCode.InvalidNetworkConfig);
            assert.match(err.message, /claim ns\/c/);
          }
        }
      }),
    );
  });

  it("a pod's claims: spec order with their names in the pod, a template's claim from status, a template not made yet left out, no repeats", () => {
    const pod: Pod = {
      metadata: { name: 'p', namespace: 'ns' },
      spec: {
        resourceClaims: [
          { name: 'a', resourceClaimTemplateName: 't' },
          { name: 'b', resourceClaimName: 'shared' },
          { name: 'c', resourceClaimTemplateName: 't' },
          { name: 'd', resourceClaimName: 'shared' },
        ],
      },
      status: { resourceClaimStatuses: [{ name: 'a', resourceClaimName: 'p-a-x1' }] },
    };
    assert.deepEqual(podClaims(pod), [
      { ref: 'a', claim: 'p-a-x1' },
      { ref: 'b', claim: 'shared' },
    ]);
    fc.assert(
      fc.property(fc.anything(), fc.anything(), (claims, statuses) => {
        const found = podClaims({ metadata: { name: 'p', namespace: 'ns' }, spec: { resourceClaims: claims }, status: { resourceClaimStatuses: statuses } });
        assert.ok(found.every((c) => typeof c.ref === 'string' && typeof c.claim === 'string' && c.claim.length > 0));
        assert.equal(new Set(found.map((c) => c.claim)).size, found.length);
      }),
    );
  });

  it('slice devices: the two Multus attributes by driver/pool/device; malformed slices and devices are passed over; a non-list is refused', () => {
    const list = {
      items: [
        {
          spec: {
            driver: 'd',
            pool: { name: 'p' },
            devices: [
              { name: 'vf0', attributes: { 'k8s.cni.cncf.io/deviceID': { string: '0000:3b:02.0' }, 'k8s.cni.cncf.io/resourceName': { string: 'intel.com/x710' } } },
              { name: 'gpu0', attributes: { model: { string: 'x' } } },
              { name: 'odd', attributes: { 'k8s.cni.cncf.io/deviceID': { int: 3 } } },
              'not a device',
            ],
          },
        },
        { spec: { driver: 'd' } },
        null,
      ],
    };
    assert.deepEqual(
      [...sliceDeviceIds(list, 'slices')],
      [
        ['d/p/vf0', { deviceID: '0000:3b:02.0', resourceName: 'intel.com/x710' }],
        ['d/p/gpu0', {}],
        ['d/p/odd', {}],
      ],
    );
    assert.throws(() => sliceDeviceIds({ kind: 'Status' }, 'the slices of d'), /the slices of d cannot be read/);
    fc.assert(
      fc.property(fc.anything(), (items) => {
        try {
          sliceDeviceIds({ items }, 'slices');
        } catch (err) {
          assert.ok(err instanceof CniError);
        }
      }),
    );
  });
});
