import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadNetwork, parseNetworkConfig, selectVersion } from '../../src/cni/conf.js';
import { CniError } from '../../src/cni/errors.js';
import { parseStdinConf } from '../../src/cni/skel.js';
import { SUPPORTED_VERSIONS } from '../../src/cni/types.js';
import { Rig } from '../support/rig.js';

const buf = (v: unknown): Buffer => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));
const codeOf = (fn: () => unknown): number | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof CniError, `expected a CniError, got ${String(err)}`);
    return err.code;
  }
};

describe('network configuration parsing', () => {
  it('reads a conflist with version negotiation over cniVersion and cniVersions', () => {
    const list = parseNetworkConfig(buf({ cniVersion: '0.4.0', cniVersions: ['1.0.0', '1.1.0', '9.0.0'], name: 'n1', plugins: [{ type: 'bridge' }] }));
    assert.equal(list.cniVersion, '1.1.0');
    assert.equal(list.disableCheck, false);
    assert.equal(list.plugins[0]?.type, 'bridge');
  });

  it('wraps a legacy .conf into a one-plugin list, defaulting to 0.1.0 without cniVersion', () => {
    const list = parseNetworkConfig(buf({ name: 'old', type: 'macvlan', master: 'x' }));
    assert.equal(list.cniVersion, '0.1.0');
    assert.deepEqual(list.plugins, [{ name: 'old', type: 'macvlan', master: 'x' }]);
  });

  it('accepts disableCheck / disableGC as booleans or strings, like libcni', () => {
    const list = parseNetworkConfig(buf({ cniVersion: '1.1.0', name: 'n', disableCheck: 'true', disableGC: true, plugins: [{ type: 'x' }] }));
    assert.equal(list.disableCheck, true);
    assert.equal(list.disableGC, true);
  });

  const bad: [string, unknown, number][] = [
    ['malformed JSON', '{"name":', 6],
    ['not an object', '[1,2]', 7],
    ['missing name', { cniVersion: '1.0.0', plugins: [{ type: 'x' }] }, 7],
    ['bad name', { cniVersion: '1.0.0', name: 'a/b', plugins: [{ type: 'x' }] }, 7],
    ['type with a slash', { cniVersion: '1.0.0', name: 'n', plugins: [{ type: '../x' }] }, 7],
    ['plugin without type', { cniVersion: '1.0.0', name: 'n', plugins: [{}] }, 7],
    ['unknown version only', { cniVersion: '7.0.0', name: 'n', plugins: [{ type: 'x' }] }, 1],
    ['capabilities not booleans', { cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'x', capabilities: { ips: 'yes' } }] }, 7],
    ['loadOnlyInlinedPlugins with no plugins', { cniVersion: '1.1.0', name: 'n', loadOnlyInlinedPlugins: true, plugins: [] }, 7],
  ];
  for (const [what, input, code] of bad) {
    it(`refuses ${what} with code ${code}`, () => {
      assert.equal(
        codeOf(() => parseNetworkConfig(buf(input))),
        code,
      );
    });
  }

  it('selectVersion ignores versions newer than Plexus implements', () => {
    assert.equal(selectVersion('1.0.0', ['1.1.0', '1.2.0']), '1.1.0');
    assert.equal(
      codeOf(() => selectVersion('2.0.0', ['3.0.0'])),
      1,
    );
  });

  it('property: any bytes give a list or a CNI error 1, 6 or 7, never a crash', () => {
    const json = fc.jsonValue().map((v) => JSON.stringify(v));
    const shaped = fc
      .record(
        {
          cniVersion: fc.oneof(fc.constantFrom(...SUPPORTED_VERSIONS), fc.string()),
          cniVersions: fc.array(fc.string()),
          name: fc.string(),
          type: fc.string(),
          disableCheck: fc.jsonValue(),
          plugins: fc.array(fc.dictionary(fc.constantFrom('type', 'capabilities', 'ipam', 'dns', 'x'), fc.jsonValue())),
        },
        { requiredKeys: [] },
      )
      .map((v) => JSON.stringify(v));
    fc.assert(
      fc.property(fc.oneof(fc.string(), json, shaped), (text) => {
        try {
          const list = parseNetworkConfig(Buffer.from(text));
          assert.ok(list.plugins.length >= 0 && SUPPORTED_VERSIONS.includes(list.cniVersion as never));
        } catch (err) {
          assert.ok(err instanceof CniError, String(err));
          assert.ok([1, 6, 7].includes(err.code), `code ${err.code}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('property: plugin stdin parsing gives a conf or a CNI error 1, 6 or 7', () => {
    const shaped = fc
      .record({ cniVersion: fc.oneof(fc.constantFrom(...SUPPORTED_VERSIONS), fc.string()), name: fc.string(), type: fc.string(), prevResult: fc.jsonValue() }, { requiredKeys: [] })
      .map((v) => JSON.stringify(v));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
          shaped,
        ),
        (text) => {
          try {
            parseStdinConf(Buffer.from(text), SUPPORTED_VERSIONS);
          } catch (err) {
            assert.ok(err instanceof CniError, String(err));
            assert.ok([1, 6, 7].includes(err.code), `code ${err.code}`);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('conf dir lookup (libcni LoadConfList)', () => {
  const rig = new Rig();
  after(() => rig.cleanup());

  it('prefers conflists, then .conf/.json in lexical order, and appends <dir>/<name>/*.conf', () => {
    const dir = rig.dir('confdir');
    writeFileSync(join(dir, '20-a.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'a', type: 'single' }));
    writeFileSync(join(dir, '30-a.conflist'), JSON.stringify({ cniVersion: '1.1.0', name: 'a', plugins: [{ type: 'listed' }] }));
    writeFileSync(join(dir, '10-broken.conflist'), '{nope');
    mkdirSync(join(dir, 'a'));
    writeFileSync(join(dir, 'a', '1-extra.conf'), JSON.stringify({ type: 'extra' }));
    const list = loadNetwork(dir, 'a');
    assert.deepEqual(
      list.plugins.map((p) => p.type),
      ['listed', 'extra'],
    );
  });

  it('names the unreadable files when the network is not found', () => {
    const dir = rig.dir('confdir');
    writeFileSync(join(dir, '10-broken.conflist'), '{nope');
    assert.throws(
      () => loadNetwork(dir, 'missing'),
      (e: unknown) => e instanceof CniError && e.code === 7 && /10-broken/.test(e.details ?? ''),
    );
  });
});
