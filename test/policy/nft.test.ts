/**
 * The tables Plexus renders, checked by the real nft: every table generated from random valid policies
 * is accepted (`nft -c`), and one put in a netns and read back is what was rendered, replaced whole.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { rulesForPod, worldOf } from '../../src/policy/compute.js';
import { parsePolicy, parsePolicyPod } from '../../src/policy/model.js';
import { applyTable, findNft, installedTable, renderTable } from '../../src/policy/nft.js';
import { Rig } from '../support/rig.js';

const nft = findNft()!;
const octet = fc.integer({ min: 0, max: 255 });
const v4 = fc.tuple(octet, octet).map(([a, b]) => `10.7.${a}.${b}`);
const v6 = fc.integer({ min: 1, max: 0xffff }).map((n) => `fd07::${n.toString(16)}`);
const labels = fc.dictionary(fc.constantFrom('app', 'tier', 'role'), fc.constantFrom('a', 'b', 'c'), { maxKeys: 2 });
const selector = fc.record({ matchLabels: labels }, { requiredKeys: [] });
const port = fc.oneof(
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'), port: fc.integer({ min: 1, max: 65535 }) }),
  fc.integer({ min: 1, max: 60000 }).chain((p) => fc.record({ port: fc.constant(p), endPort: fc.integer({ min: p, max: 65535 }) })),
  fc.record({ port: fc.constantFrom('web', 'alt', 'missing') }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP') }),
);
const peer = fc.oneof(
  fc.record({ podSelector: selector }),
  fc.record({ namespaceSelector: selector }),
  fc.record({ podSelector: selector, namespaceSelector: selector }),
  fc.constantFrom({ ipBlock: { cidr: '10.7.0.0/16', except: ['10.7.1.0/24', '10.7.9.9/32'] } }, { ipBlock: { cidr: 'fd07::/64' } }, { ipBlock: { cidr: '0.0.0.0/0' } }),
);
const rule = (side: 'from' | 'to') => fc.record({ [side]: fc.array(peer, { maxLength: 3 }), ports: fc.array(port, { maxLength: 3 }) }, { requiredKeys: [] });
const spec = fc.record(
  { podSelector: selector, ingress: fc.array(rule('from'), { maxLength: 3 }), egress: fc.array(rule('to'), { maxLength: 3 }), policyTypes: fc.subarray(['Ingress', 'Egress'], { minLength: 1 }) },
  { requiredKeys: ['podSelector'] },
);
const podArb = fc.record({ labels, ns: fc.constantFrom('x', 'y'), ips: fc.tuple(fc.array(v4, { maxLength: 2 }), fc.array(v6, { maxLength: 2 })) });

describe('network policy tables and the real nft', function () {
  this.timeout(120_000);
  const rig = new Rig();
  after(() => rig.cleanup());

  it('property: every table rendered from random valid policies and pods is one nft accepts', () => {
    let checked = 0;
    fc.assert(
      fc.property(fc.array(spec, { minLength: 1, maxLength: 4 }), fc.array(podArb, { minLength: 1, maxLength: 6 }), (specs, podSpecs) => {
        const policies = specs.map((s, i) => parsePolicy({ metadata: { name: `p${i}`, namespace: 'x', annotations: { 'k8s.v1.cni.cncf.io/policy-for': 'x/net' } }, spec: s }));
        const pods = podSpecs.map((p, i) =>
          parsePolicyPod({
            metadata: {
              name: `pod${i}`,
              namespace: p.ns,
              labels: p.labels,
              annotations: { 'k8s.v1.cni.cncf.io/network-status': JSON.stringify([{ name: 'x/net', interface: 'net1', ips: [...p.ips[0], ...p.ips[1]] }]) },
            },
            spec: {
              containers: [
                {
                  ports: [
                    { name: 'web', containerPort: 8080 },
                    { name: 'alt', containerPort: 53, protocol: 'UDP' },
                  ],
                },
              ],
            },
          }),
        );
        const world = worldOf(policies, pods, [
          { name: 'x', labels: { app: 'a' } },
          { name: 'y', labels: { role: 'b' } },
        ]);
        const target = { ...pods[0]!, namespace: 'x', networks: [{ network: 'x/net', ifName: 'net1', ips: ['10.7.200.1'] }] };
        const table = renderTable(rulesForPod(world, target));
        if (!table) return;
        execFileSync(nft, ['-c', '-f', '-'], { input: table, stdio: ['pipe', 'ignore', 'pipe'] });
        checked++;
      }),
      { numRuns: 60 },
    );
    // Runs whose target no policy selects render no table: enough of them must have given nft one.
    assert.ok(checked >= 15, `only ${checked} of 60 runs rendered a table`);
  });

  it('a table put in a netns reads back as rendered; the next replaces it whole; an empty one removes it', async () => {
    const ns = rig.netns('nft');
    const policy = (from: string) =>
      parsePolicy({ metadata: { name: 'p', namespace: 'x', annotations: { 'k8s.v1.cni.cncf.io/policy-for': 'net' } }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: from } }] }] } });
    const pod = parsePolicyPod({
      metadata: { name: 'a', namespace: 'x', annotations: { 'k8s.v1.cni.cncf.io/network-status': JSON.stringify([{ name: 'x/net', interface: 'net1', ips: ['10.7.0.1'] }]) } },
    });
    const first = renderTable(rulesForPod(worldOf([policy('10.7.0.0/24')], [pod], []), pod));
    await applyTable(nft, ns.path, first);
    const read = await installedTable(nft, ns.path);
    assert.match(read, /ip saddr 10\.7\.0\.0\/24 accept comment "x\/p ingress\[0\]"/);
    assert.equal(read.match(/comment "plexus [0-9a-f]{16}"/)?.[0], first.match(/comment "plexus [0-9a-f]{16}"/)?.[0]);
    const second = renderTable(rulesForPod(worldOf([policy('10.8.0.0/24')], [pod], []), pod));
    await applyTable(nft, ns.path, second);
    const after = await installedTable(nft, ns.path);
    assert.match(after, /10\.8\.0\.0\/24/);
    assert.doesNotMatch(after, /10\.7\.0\.0\/24/, 'replaced whole, not added to');
    await applyTable(nft, ns.path, '');
    assert.equal(await installedTable(nft, ns.path), '');
    await applyTable(nft, ns.path, '');
    assert.equal(execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'ruleset'], { encoding: 'utf8' }), '', 'removing twice is fine, and nothing else was touched');
  });
});
