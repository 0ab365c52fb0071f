import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { ConfigError, normaliseHex, parseConfig, parseRanged, resourceEnvName } from '../../src/deviceplugin/config.js';
import { assignPools } from '../../src/deviceplugin/pools.js';
import { discover } from '../../src/sriov/discover.js';
import { FakeKernel, type FakeHostSpec } from '../../src/sim/fakekernel.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { Rig } from '../support/rig.js';

const dir = join(repoRoot(), 'device-plugin');

/** The NIC each example is written for. */
const EXAMPLE_HOSTS: Record<string, FakeHostSpec> = {
  'intel-i40e-iavf.json': { pfs: [{ address: '0000:5e:00.0', vendor: '8086', device: '158b', numVfs: 8, netdev: 'ens1f0' }] },
  'intel-ice-iavf.json': {
    pfs: [
      { address: '0000:3b:00.0', vendor: '8086', device: '1592', numVfs: 4, netdev: 'ens2f0' },
      { address: '0000:3b:00.1', vendor: '8086', device: '1592', numVfs: 4, netdev: 'ens2f1' },
    ],
  },
  'mellanox-mlx5.json': { pfs: [{ address: '0000:af:00.0', vendor: '15b3', device: '1017', numVfs: 4, netdev: 'ens3f0' }] },
};

describe('device plugin config', () => {
  const rig = new Rig();
  after(() => rig.cleanup());

  it('the default config.json and every example parse, and each example pools the VFs of the NIC it is written for', () => {
    parseConfig(readFileSync(join(dir, 'config.json'), 'utf8'));
    const examples = readdirSync(join(dir, 'examples')).filter((f) => f.endsWith('.json'));
    assert.deepEqual(examples.sort(), Object.keys(EXAMPLE_HOSTS).sort());
    for (const file of examples) {
      const config = parseConfig(readFileSync(join(dir, 'examples', file), 'utf8'));
      const host = FakeKernel.create(join(rig.dir('ex'), 'host'), EXAMPLE_HOSTS[file]!);
      const { pools } = assignPools(discover(host.host()), config.pools);
      for (const p of pools) assert.ok(p.devices.length > 0, `${file}: ${p.pool.resourceName} selects devices`);
    }
  });

  it('accepts sriov-network-device-plugin configs unchanged: a selectors object, any key case, default prefix and type', () => {
    const c = parseConfig('{"ResourceList":[{"resourcename":"a","SELECTORS":{"pfnames":["ens1f0"],"ISRDMA":false}}]}');
    assert.deepEqual(c.pools[0], {
      resourceName: 'a',
      resourcePrefix: 'intel.com',
      deviceType: 'netDevice',
      excludeTopology: false,
      selectors: [{ pfNames: [{ name: 'ens1f0' }], isRdma: false }],
      additionalInfo: {},
      allocationPolicy: 'none',
      pfLinkHealth: true,
    });
  });

  it('names the field of an invalid config', () => {
    const bad: [string, RegExp][] = [
      ['{"resourceList":[{"resourceName":"a b"}]}', /resourceList\.0\.resourceName: must match pattern/],
      ['{"resourceList":[{"resourceName":"a","deviceType":"gpu"}]}', /resourceList\.0\.deviceType: must be one of netDevice, accelerator, auxNetDevice/],
      ['{"resourceList":[{"resourceName":"a","selectors":[{"vendor":["8086"]}]}]}', /unknown key "vendor"/],
      ['{"resourceList":[{"resourceName":"a","selectors":[{"vendors":["80866"]}]}]}', /selectors\[0\]\.vendors\[0\]: "80866" is not a 16-bit hex id/],
      ['{"resourceList":[{"resourceName":"a","selectors":[{"pfNames":["ens1#3-1"]}]}]}', /pfNames\[0\]: range "3-1"/],
      ['{"resourceList":[{"resourceName":"a","selectors":[{"isRdma":true,"vdpaType":"vhost"}]}]}', /isRdma and vdpaType exclude each other/],
      ['{"resourceList":[{"resourceName":"a"},{"resourceName":"a"}]}', /duplicate resource intel.com\/a/],
      ['{"resourceList":', /not JSON/],
    ];
    for (const [text, re] of bad)
      assert.throws(
        () => parseConfig(text),
        (e: Error) => e instanceof ConfigError && re.test(e.message),
        text,
      );
  });

  it('env names: DP replaces only "." (a "-" survives); the shell-safe name replaces everything else', () => {
    const pool = parseConfig('{"resourceList":[{"resourceName":"sriov-net_1","resourcePrefix":"example.com"}]}').pools[0]!;
    assert.equal(resourceEnvName(pool), 'PCIDEVICE_EXAMPLE_COM_SRIOV-NET_1');
    assert.equal(resourceEnvName(pool, true), 'PCIDEVICE_EXAMPLE_COM_SRIOV_NET_1');
  });

  it('property: any JSON is either a config or a ConfigError, never a crash', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.json(),
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify({ resourceList: [v] })),
        ),
        (text) => {
          try {
            parseConfig(text);
          } catch (err) {
            assert.ok(err instanceof ConfigError, String(err));
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('property: hex ids normalise regardless of 0x and case; ranges expand to exactly their indexes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.boolean(), fc.boolean(), (n, prefix, upper) => {
        let t = n.toString(16);
        if (upper) t = t.toUpperCase();
        assert.equal(normaliseHex(prefix ? `0x${t}` : t, 'x'), n.toString(16).padStart(4, '0'));
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 20 })), { minLength: 1, maxLength: 5 }), (ranges) => {
        const text = `ens1f0#${ranges.map(([a, len]) => (len ? `${a}-${a + len}` : `${a}`)).join(',')}`;
        const expected = new Set(ranges.flatMap(([a, len]) => Array.from({ length: len + 1 }, (_, i) => a + i)));
        assert.deepEqual(
          [...parseRanged(text, 'x').vfIndexes!].sort((x, y) => x - y),
          [...expected].sort((x, y) => x - y),
        );
      }),
    );
  });
});
