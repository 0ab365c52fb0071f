import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { defaultRouteNetdevs } from '../../src/sriov/discover.js';
import { HostRoot, formatPciAddress, parsePciAddress, routingId } from '../../src/sriov/host.js';
import { Rig } from '../support/rig.js';

describe('sysfs and procfs parsers', () => {
  const rig = new Rig();
  after(() => rig.cleanup());

  it('property: PCI addresses round-trip through the routing id; anything else is refused', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), (domain, rid) => {
        const text = formatPciAddress(domain, rid);
        assert.equal(routingId(text), rid);
        assert.equal(parsePciAddress(text.toUpperCase())?.domain, domain);
      }),
    );
    fc.assert(fc.property(fc.string(), (s) => void (parsePciAddress(s) === undefined || /^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$/.test(s.trim().toLowerCase()) || assert.fail(s))));
  });

  it('property: default routes are exactly the v4 entries with destination and mask 0 and the v6 ::/0 entries, whatever else the files hold', () => {
    const root = rig.dir('routes');
    mkdirSync(join(root, 'proc/net'), { recursive: true });
    const host = new HostRoot(root);
    const name = fc.stringMatching(/^[a-z][a-z0-9]{0,14}$/);
    const v4 = fc.record({ dev: name, dest: fc.constantFrom('00000000', '0000A8C0'), mask: fc.constantFrom('00000000', '00FFFFFF') });
    const v6 = fc.record({ dev: name, dest: fc.constantFrom('0'.repeat(32), `fd${'0'.repeat(30)}`), len: fc.constantFrom('00', '40') });
    fc.assert(
      fc.property(fc.array(v4, { maxLength: 6 }), fc.array(v6, { maxLength: 6 }), fc.array(fc.string(), { maxLength: 3 }), (r4, r6, junk) => {
        writeFileSync(
          join(root, 'proc/net/route'),
          ['Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT', ...r4.map((r) => `${r.dev}\t${r.dest}\t00000000\t0003\t0\t0\t0\t${r.mask}\t0\t0\t0`), ...junk].join(
            '\n',
          ),
        );
        writeFileSync(
          join(root, 'proc/net/ipv6_route'),
          [...r6.map((r) => `${r.dest} ${r.len} ${'0'.repeat(32)} 00 ${'0'.repeat(32)} 00000400 00000001 00000000 00000003 ${r.dev.padStart(8)}`), ...junk].join('\n'),
        );
        const got = defaultRouteNetdevs(host);
        assert.deepEqual(got.v4.sort(), [...new Set(r4.filter((r) => r.dest === '00000000' && r.mask === '00000000').map((r) => r.dev))].sort());
        assert.deepEqual(got.v6.sort(), [...new Set(r6.filter((r) => r.dest === '0'.repeat(32) && r.len === '00' && r.dev !== 'lo').map((r) => r.dev))].sort());
      }),
      { numRuns: 200 },
    );
  });
});
