import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CniError } from '../../src/cni/errors.js';
import { formatCidr, formatIp, parseCidr, parseIp } from '../../src/ipam/addr.js';
import { parseIpamConfig, rangeCapacity } from '../../src/ipam/config.js';

/** The WHATWG URL parser's IPv6 serialisation is RFC 5952's: an oracle independent of ours. */
const canonicalV6 = (text: string): string => new URL(`http://[${text}]/`).hostname.slice(1, -1);

describe('IPAM addresses', () => {
  it('IPv4 and IPv6 as numbers and back, RFC 5952 text', () => {
    assert.equal(parseIp('10.1.2.3')!.value, 0x0a010203n);
    assert.equal(formatIp(parseIp('2001:db8:0:0:1:0:0:1')!), '2001:db8::1:0:0:1');
    assert.equal(formatIp(parseIp('::ffff:1.2.3.4')!), '::ffff:102:304');
    assert.equal(formatIp(parseIp('::')!), '::');
    assert.equal(parseIp('fe80::1%eth0'), undefined);
    assert.equal(parseIp('10.1.2'), undefined);
    const c = parseCidr('10.1.2.3/22')!;
    assert.equal(formatCidr(c), '10.1.0.0/22');
    assert.equal(formatIp({ family: 4, value: c.broadcast }), '10.1.3.255');
    assert.equal(parseCidr('2001:db8::/129'), undefined);
  });

  it('property: any IPv6 or IPv4 address survives parse and format, in canonical text', () => {
    const v6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':'));
    const v4 = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }).map((o) => o.join('.'));
    fc.assert(
      fc.property(v6, v4, (a6, a4) => {
        assert.equal(formatIp(parseIp(a6)!), canonicalV6(a6));
        assert.equal(parseIp(formatIp(parseIp(a6)!))!.value, parseIp(a6)!.value);
        assert.equal(formatIp(parseIp(a4)!), a4);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('IPAM config (whereabouts format)', () => {
  const conf = (ipam: object) => parseIpamConfig({ type: 'whereabouts', ...ipam });
  const ip = (v: bigint, family: 4 | 6 = 4) => formatIp({ family, value: v });

  it("a CIDR range leaves out the subnet's first and last address, as whereabouts does in L2 mode; l3 uses them", () => {
    const r = conf({ range: '192.168.2.0/24' }).ranges[0]!;
    assert.deepEqual([ip(r.first), ip(r.last), r.cidr], ['192.168.2.1', '192.168.2.254', '192.168.2.0/24']);
    const l3 = conf({ range: '192.168.2.0/24', l3: true }).ranges[0]!;
    assert.deepEqual([ip(l3.first), ip(l3.last)], ['192.168.2.0', '192.168.2.255']);
    assert.equal(rangeCapacity(conf({ range: '10.0.0.0/31' }).ranges[0]!), 2n);
  });

  it('first-last/prefix, range_start/range_end, exclude, gateway, ipRanges for dual stack, network_name', () => {
    const c = conf({
      range: '192.168.2.225-192.168.2.230/28',
      gateway: '192.168.2.226',
      network_name: 'blue',
      ipRanges: [{ range: '2001:db8::/64', range_start: '2001:db8::10', exclude: ['2001:db8::20/126'] }],
      kubernetes: { kubeconfig: '/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig' },
    });
    const [v4, v6] = c.ranges;
    assert.deepEqual([ip(v4!.first), ip(v4!.last), v4!.cidr], ['192.168.2.225', '192.168.2.230', '192.168.2.224/28']);
    assert.equal(rangeCapacity(v4!), 5n, 'six addresses less the gateway');
    assert.equal(c.networkName, 'blue');
    assert.equal(ip(v6!.first, 6), '2001:db8::10');
    assert.equal(rangeCapacity(v6!), 2n ** 64n - 1n - 16n - 4n, 'a whole /64 less its last address, those below range_start and the excluded /126');
    assert.equal(rangeCapacity(conf({ range: '10.0.0.0/8' }).ranges[0]!), 2n ** 24n - 2n);
  });

  it('says which key is wrong, and never takes a path or credentials from the tenant', () => {
    const err = (ipam: object) => {
      try {
        conf(ipam);
      } catch (e) {
        assert.ok(e instanceof CniError && e.code === 7, String(e));
        return e.details;
      }
      return 'accepted';
    };
    assert.match(err({ range: '10.0.0.0/33' })!, /ipam\.range is not a CIDR/);
    assert.match(err({ range: '10.0.0.0/24', range_start: '10.0.1.1' })!, /ipam\.range_start "10\.0\.1\.1" is not an address of 10\.0\.0\.0\/24/);
    assert.match(err({ range: '10.0.0.0/24', range_start: '10.0.0.9', range_end: '10.0.0.3' })!, /range_end is below the range start/);
    assert.match(err({ ipRanges: [{ range: '10.0.0.0/24', exclude: ['2001:db8::/64'] }] })!, /ipam\.ipRanges\[0\]\.exclude\[0\] is not a IPv4 CIDR/);
    assert.match(err({})!, /ipam\.range is missing/);
    assert.match(err({ range: '10.0.0.0/24', log_fil: 'x' })!, /ipam\.log_fil is not a key/);
    // whereabouts' host-side keys are read as nothing at all.
    const c = conf({ range: '10.0.0.0/24', log_file: '/etc/shadow', configuration_path: '/root', kubernetes: { kubeconfig: '/root/.kube/config' } });
    assert.ok(!JSON.stringify(c, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)).includes('shadow'));
  });

  it('property: any IPAM section is a config whose ranges lie in their subnets, or code 7 — never a crash', () => {
    const cidr = fc.oneof(
      fc.tuple(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 34 })).map(([o, p]) => `${o.join('.')}/${p}`),
      fc.tuple(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 130 })).map(([g, p]) => `${g.map((x) => x.toString(16)).join(':')}/${p}`),
      fc.string(),
    );
    const addr = fc.oneof(fc.ipV4(), fc.ipV6(), fc.string());
    const section = fc.record(
      {
        type: fc.constantFrom('whereabouts', 'plexus-ipam', 'host-local'),
        range: cidr,
        range_start: addr,
        range_end: addr,
        exclude: fc.oneof(fc.array(cidr, { maxLength: 3 }), fc.jsonValue()),
        gateway: addr,
        ipRanges: fc.oneof(fc.array(fc.record({ range: cidr, range_start: addr, exclude: fc.array(cidr, { maxLength: 2 }) }, { requiredKeys: ['range'] }), { maxLength: 2 }), fc.jsonValue()),
        network_name: fc.oneof(fc.string(), fc.jsonValue()),
        l3: fc.boolean(),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(section, (s) => {
        try {
          const c = parseIpamConfig(s);
          for (const r of c.ranges) {
            assert.ok(r.network <= r.first && r.first <= r.last && r.last <= r.broadcast);
            assert.ok(rangeCapacity(r) <= r.last - r.first + 1n && rangeCapacity(r) >= 0n);
          }
        } catch (err) {
          assert.ok(err instanceof CniError && err.code === 7, String((err as Error).stack));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('property: the capacity of a small range is what counting each address gives', () => {
    fc.assert(
      fc.property(fc.integer({ min: 24, max: 30 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 26, max: 32 })), { maxLength: 4 }), (prefix, ex) => {
        const exclude = ex.map(([o, p]) => `10.0.0.${o}/${p}`);
        const r = conf({ range: `10.0.0.0/${prefix}`, exclude }).ranges[0]!;
        let n = 0n;
        for (let v = r.first; v <= r.last; v++) if (!r.excluded.some(([a, b]) => v >= a && v <= b)) n++;
        assert.equal(rangeCapacity(r), n);
      }),
      { numRuns: 500 },
    );
  });
});
