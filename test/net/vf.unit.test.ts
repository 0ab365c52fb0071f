import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { type VfInfo, type VfSetting, decodeVfInfoList, encodeSetVf, encodeVfInfoList } from '../../src/net/vf.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures');
const golden = JSON.parse(readFileSync(join(fixtures, 'vf-golden.json'), 'utf8')) as { messages: { iproute2: string; pfIndex: number; payload: string }[] };

/** The Plexus setting for each captured iproute2 command. */
const SETTINGS: Record<string, VfSetting> = {
  'mac 02:aa:bb:cc:dd:ee': { kind: 'mac', mac: '02:aa:bb:cc:dd:ee' },
  'vlan 100 qos 5': { kind: 'vlan', vlan: 100, qos: 5, proto: '802.1Q' },
  'vlan 100 qos 5 proto 802.1ad': { kind: 'vlan', vlan: 100, qos: 5, proto: '802.1ad' },
  'vlan 0': { kind: 'vlan', vlan: 0, qos: 0, proto: '802.1Q' },
  'spoofchk on': { kind: 'spoofchk', on: true },
  'spoofchk off': { kind: 'spoofchk', on: false },
  'trust on': { kind: 'trust', on: true },
  'trust off': { kind: 'trust', on: false },
  'state enable': { kind: 'linkState', state: 'enable' },
  'state disable': { kind: 'linkState', state: 'disable' },
  'state auto': { kind: 'linkState', state: 'auto' },
  'min_tx_rate 100 max_tx_rate 2000': { kind: 'rate', minTxRate: 100, maxTxRate: 2000 },
};

describe('VF attribute messages (golden bytes from iproute2)', () => {
  it('covers every captured command', () => {
    assert.deepEqual(golden.messages.map((m) => m.iproute2.replace('ip link set PF vf 3 ', '')).sort(), Object.keys(SETTINGS).sort());
  });

  for (const m of golden.messages) {
    const cmd = m.iproute2.replace('ip link set PF vf 3 ', '');
    it(`${cmd} is byte-identical to iproute2`, () => {
      assert.equal(encodeSetVf(m.pfIndex, 3, SETTINGS[cmd]!).toString('hex'), m.payload);
    });
  }

  it('802.1ad entries are 16 bytes (nla_len 20), not the 14 netlink 0.3.0 writes', () => {
    const bytes = encodeSetVf(1, 0, { kind: 'vlan', vlan: 5, qos: 0, proto: '802.1ad' });
    const info = bytes.subarray(16 + 4 + 4 + 4); // ifinfomsg, VFINFO_LIST, VF_INFO, VF_VLAN_LIST headers
    assert.equal(info.readUInt16LE(0), 20);
    assert.equal(info.readUInt16BE(4 + 12), 0x88a8);
  });

  it('refuses out-of-range values before anything is sent', () => {
    assert.throws(() => encodeSetVf(1, 0, { kind: 'vlan', vlan: 4096, qos: 0, proto: '802.1Q' }), /vlan 4096/);
    assert.throws(() => encodeSetVf(1, 0, { kind: 'vlan', vlan: 1, qos: 8, proto: '802.1Q' }), /qos 8/);
    assert.throws(() => encodeSetVf(1, 0, { kind: 'mac', mac: '02:aa:bb' }), /invalid MAC/);
    assert.throws(() => encodeSetVf(1, -1, { kind: 'trust', on: true }), /vf -1/);
  });

  it('decodes the VF table the kernel sends, unknown spoofchk/trust (-1) as absent', () => {
    const table: VfInfo[] = [
      { vf: 0, mac: '02:00:00:00:00:01', vlan: 10, qos: 3, vlanProto: '802.1ad', spoofchk: true, trust: false, linkState: 'disable', minTxRate: 10, maxTxRate: 100 },
      { vf: 1, mac: '00:00:00:00:00:00', vlan: 0, qos: 0, vlanProto: '802.1Q', linkState: 'auto', minTxRate: 0, maxTxRate: 0 },
    ];
    assert.deepEqual(decodeVfInfoList(encodeVfInfoList(table)), table);
  });

  it('property: any VF table survives encode → decode', () => {
    const hex = fc.integer({ min: 0, max: 255 }).map((n) => n.toString(16).padStart(2, '0'));
    const vf = fc.record({
      vf: fc.nat(255),
      mac: fc.array(hex, { minLength: 6, maxLength: 6 }).map((a) => a.join(':')),
      vlan: fc.nat(4095),
      qos: fc.nat(7),
      vlanProto: fc.constantFrom('802.1Q' as const, '802.1ad' as const),
      spoofchk: fc.option(fc.boolean(), { nil: undefined }),
      trust: fc.option(fc.boolean(), { nil: undefined }),
      linkState: fc.constantFrom('auto' as const, 'enable' as const, 'disable' as const),
      minTxRate: fc.nat(100000),
      maxTxRate: fc.nat(100000),
    });
    fc.assert(
      fc.property(fc.array(vf, { maxLength: 8 }), (vfs) => {
        const clean = vfs.map((v) => Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined)) as unknown as VfInfo);
        assert.deepEqual(decodeVfInfoList(encodeVfInfoList(clean)), clean);
      }),
    );
  });

  it('property: decoding arbitrary bytes returns a table or throws an Error, never hangs', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          decodeVfInfoList(Buffer.from(bytes));
        } catch (err) {
          assert.ok(err instanceof Error);
        }
      }),
    );
  });
});
