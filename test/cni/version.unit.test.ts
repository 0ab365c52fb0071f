import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CniError } from '../../src/cni/errors.js';
import { SUPPORTED_VERSIONS, type Result, type Result020, type Result040 } from '../../src/cni/types.js';
import { convertResult } from '../../src/cni/version.js';

// The spec's example result (SPEC.md "Success"), with the 1.1.0 fields added.
const spec110: Result = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'cni0', mac: '00:11:22:33:44:55' },
    { name: 'veth3243', mac: '55:44:33:22:11:11' },
    { name: 'eth0', mac: '99:88:77:66:55:44', mtu: 1400, sandbox: '/var/run/netns/blue', pciID: '0000:5e:02.1', socketPath: '/run/x.sock' },
  ],
  ips: [
    { address: '10.1.0.5/16', gateway: '10.1.0.1', interface: 2 },
    { address: '2001:db8::5/64', gateway: '2001:db8::1', interface: 2 },
  ],
  routes: [
    { dst: '0.0.0.0/0', gw: '10.1.0.1', mtu: 1400, priority: 100 },
    { dst: '::/0', gw: '2001:db8::1' },
  ],
  dns: { nameservers: ['10.1.0.1'], domain: 'example.com', search: ['example.com'], options: ['ndots:5'] },
};

const expected040: Result040 = {
  cniVersion: '0.4.0',
  interfaces: [
    { name: 'cni0', mac: '00:11:22:33:44:55' },
    { name: 'veth3243', mac: '55:44:33:22:11:11' },
    { name: 'eth0', mac: '99:88:77:66:55:44', sandbox: '/var/run/netns/blue' },
  ],
  ips: [
    { address: '10.1.0.5/16', gateway: '10.1.0.1', interface: 2, version: '4' },
    { address: '2001:db8::5/64', gateway: '2001:db8::1', interface: 2, version: '6' },
  ],
  // libcni keeps the 1.1 route fields in every version (one Route type).
  routes: [
    { dst: '0.0.0.0/0', gw: '10.1.0.1', mtu: 1400, priority: 100 },
    { dst: '::/0', gw: '2001:db8::1' },
  ],
  dns: spec110.dns!,
};

const expected020: Result020 = {
  cniVersion: '0.2.0',
  ip4: { ip: '10.1.0.5/16', gateway: '10.1.0.1', routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.1', mtu: 1400, priority: 100 }] },
  ip6: { ip: '2001:db8::5/64', gateway: '2001:db8::1', routes: [{ dst: '::/0', gw: '2001:db8::1' }] },
  dns: spec110.dns!,
};

describe('result conversion', () => {
  it('1.1.0 → 1.0.0 keeps the struct', () => {
    assert.deepEqual(convertResult(spec110, '1.0.0'), { ...spec110, cniVersion: '1.0.0' });
  });

  for (const v of ['0.3.0', '0.3.1', '0.4.0']) {
    it(`1.1.0 → ${v} adds ips[].version and drops interface mtu/socketPath/pciID`, () => {
      assert.deepEqual(convertResult(spec110, v), { ...expected040, cniVersion: v });
    });
    it(`${v} → 1.1.0 drops ips[].version`, () => {
      const back = convertResult({ ...expected040, cniVersion: v }, '1.1.0') as Result;
      assert.equal(back.cniVersion, '1.1.0');
      assert.deepEqual(back.ips, spec110.ips);
      assert.deepEqual(back.interfaces?.[2], { name: 'eth0', mac: '99:88:77:66:55:44', sandbox: '/var/run/netns/blue' });
    });
  }

  for (const v of ['0.1.0', '0.2.0']) {
    it(`1.1.0 → ${v}: first IPv4 → ip4, first IPv6 → ip6, routes by family`, () => {
      assert.deepEqual(convertResult(spec110, v), { ...expected020, cniVersion: v });
    });
    it(`${v} → 0.4.0 and 1.1.0 build ips without interfaces`, () => {
      const up = convertResult({ ...expected020, cniVersion: v }, '0.4.0') as Result040;
      assert.equal(up.interfaces, undefined);
      assert.deepEqual(up.ips, [
        { address: '10.1.0.5/16', gateway: '10.1.0.1', version: '4' },
        { address: '2001:db8::5/64', gateway: '2001:db8::1', version: '6' },
      ]);
      assert.deepEqual(up.routes, [...expected020.ip4!.routes!, ...expected020.ip6!.routes!]);
      const one = convertResult({ ...expected020, cniVersion: v }, '1.1.0') as Result;
      assert.deepEqual(
        one.ips?.map((i) => i.address),
        ['10.1.0.5/16', '2001:db8::5/64'],
      );
    });
  }

  it('a result without IPs cannot become 0.2.0 (libcni: no valid IP addresses)', () => {
    assert.throws(
      () => convertResult({ cniVersion: '1.0.0', interfaces: [{ name: 'eth0' }] }, '0.2.0'),
      (e: unknown) => e instanceof CniError && e.code === 1 && /no valid IP/.test(e.message),
    );
  });

  it('unknown versions are refused with code 1', () => {
    assert.throws(
      () => convertResult(spec110, '2.0.0'),
      (e: unknown) => e instanceof CniError && e.code === 1,
    );
    assert.throws(
      () => convertResult({ ...spec110, cniVersion: '9.9.9' }, '1.0.0'),
      (e: unknown) => e instanceof CniError && e.code === 1,
    );
  });

  it('every version pair converts the spec example, and the addresses survive the round trip', () => {
    for (const from of SUPPORTED_VERSIONS) {
      const start = convertResult(spec110, from);
      for (const to of SUPPORTED_VERSIONS) {
        const converted = convertResult(start, to);
        assert.equal(converted.cniVersion, to);
        const back = convertResult(converted, '1.1.0') as Result;
        assert.deepEqual(
          back.ips?.map((i) => i.address),
          ['10.1.0.5/16', '2001:db8::5/64'],
          `${from} → ${to}`,
        );
      }
    }
  });

  it('property: conversion to any version and back to 1.1.0 keeps addresses, gateways and routes', () => {
    const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 })).map((p) => p.join('.'));
    const ip = fc.record({ address: v4.map((a) => `${a}/24`), gateway: v4 });
    fc.assert(
      fc.property(fc.array(ip, { minLength: 1, maxLength: 3 }), fc.constantFrom(...SUPPORTED_VERSIONS.filter((v) => !v.startsWith('0.1') && !v.startsWith('0.2'))), (ips, to) => {
        const r: Result = { cniVersion: '1.1.0', interfaces: [{ name: 'eth0' }], ips: ips.map((i) => ({ ...i, interface: 0 })), routes: [{ dst: '0.0.0.0/0', gw: ips[0]!.gateway }] };
        const back = convertResult(convertResult(r, to), '1.1.0') as Result;
        assert.deepEqual(back.ips, r.ips);
        assert.deepEqual(back.routes, r.routes);
      }),
    );
  });
});
