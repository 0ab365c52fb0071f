import assert from 'node:assert/strict';
import fc from 'fast-check';
import { rulesForPod, worldOf } from '../../src/policy/compute.js';
import { type LabelSelector, PolicyParseError, matches, parsePolicy, parsePolicyFor, parsePolicyPod } from '../../src/policy/model.js';
import { renderTable } from '../../src/policy/nft.js';

const mnp = (spec: object, annotations: Record<string, string> = { 'k8s.v1.cni.cncf.io/policy-for': 'net' }, ns = 'x', name = 'p') => ({ metadata: { name, namespace: ns, annotations }, spec });
const status = (entries: object[]) => JSON.stringify([{ name: 'cluster', interface: 'eth0', ips: ['10.244.0.5'], default: true }, ...entries]);
const pod = (ns: string, name: string, labels: Record<string, string>, ips: string[], extra: object = {}) =>
  parsePolicyPod({ metadata: { name, namespace: ns, labels, annotations: { 'k8s.v1.cni.cncf.io/network-status': status([{ name: 'x/net', interface: 'net1', ips }]) } }, spec: extra });

describe('MultiNetworkPolicy parsing', () => {
  it('defaults policyTypes as NetworkPolicy does; policy-for names NADs in the policy namespace or another', () => {
    const p = parsePolicy(mnp({ podSelector: {} }, { 'k8s.v1.cni.cncf.io/policy-for': ' net , other/net2,net' }));
    assert.deepEqual(p.networks, ['x/net', 'other/net2']);
    assert.deepEqual([p.ingress, p.egress], [[], undefined], 'no types, no egress rules: ingress only (deny all)');
    const e = parsePolicy(mnp({ podSelector: {}, egress: [{}] }));
    assert.deepEqual([e.ingress, e.egress?.length], [[], 1], 'egress rules make it an egress policy too');
    const only = parsePolicy(mnp({ podSelector: {}, policyTypes: ['Egress'], ingress: [{}] }));
    assert.equal(only.ingress, undefined, 'explicit types win');
    assert.deepEqual(parsePolicy(mnp({ podSelector: {} }, {})).networks, [], 'without policy-for it applies to nothing');
    assert.deepEqual(parsePolicy(mnp({ podSelector: {}, ingress: [{ ports: [{ port: '8080' }] }] })).ingress![0]!.ports, [{ protocol: 'TCP', port: 8080 }], 'digits are a number');
  });

  it('refuses what NetworkPolicy validation refuses, saying where', () => {
    const refused: [object, RegExp][] = [
      [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Has' }] } }, /operator: "Has" is not In/],
      [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] } }, /In needs values/],
      [{ podSelector: {}, ingress: [{ ports: [{ port: 'web', endPort: 90 }] }] }, /endPort: needs a numeric port/],
      [{ podSelector: {}, ingress: [{ ports: [{ port: 90, endPort: 80 }] }] }, /endPort: must be a port number not below port 90/],
      [{ podSelector: {}, ingress: [{ ports: [{ port: 70000 }] }] }, /70000 is not a port number/],
      [{ podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP' }] }] }, /"ICMP" is not TCP, UDP or SCTP/],
      [{ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/24'] } }] }] }, /is not inside 10\.0\.0\.0\/16/],
      [{ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/16' }, podSelector: {} }] }] }, /cannot be combined/],
      [{ podSelector: {}, ingress: [{ from: [{}] }] }, /a peer needs podSelector, namespaceSelector or ipBlock/],
      [{ podSelector: {}, policyTypes: ['Both'] }, /policyTypes/],
    ];
    for (const [spec, why] of refused)
      assert.throws(
        () => parsePolicy(mnp(spec)),
        (err: Error) => err instanceof PolicyParseError && why.test(err.message),
        JSON.stringify(spec),
      );
    assert.throws(() => parsePolicy(mnp({ podSelector: {} }, { 'k8s.v1.cni.cncf.io/policy-for': 'a/b/c' })), /"a\/b\/c" is not a NAD name/);
  });

  it('property: any JSON is a policy or a PolicyParseError, never another failure', () => {
    const json = fc.jsonValue({ maxDepth: 6 });
    const shaped = fc.record({
      podSelector: fc.oneof(
        json,
        fc.record({
          matchLabels: fc.dictionary(fc.string(), fc.oneof(fc.string(), json)),
          matchExpressions: fc.array(fc.record({ key: fc.string(), operator: fc.constantFrom('In', 'NotIn', 'Exists', 'DoesNotExist', 'X'), values: fc.array(fc.string()) })),
        }),
      ),
      ingress: fc.oneof(
        json,
        fc.array(
          fc.record({
            from: fc.array(json),
            ports: fc.array(fc.record({ protocol: fc.oneof(fc.constantFrom('TCP', 'UDP', 'SCTP'), json), port: fc.oneof(fc.integer(), fc.string(), json), endPort: fc.oneof(fc.integer(), json) })),
          }),
        ),
      ),
      policyTypes: fc.oneof(json, fc.array(fc.constantFrom('Ingress', 'Egress'))),
    });
    fc.assert(
      fc.property(fc.oneof(json, shaped), fc.oneof(fc.string(), fc.constant(undefined)), (spec, policyFor) => {
        try {
          const p = parsePolicy(mnp(spec as object, policyFor === undefined ? {} : { 'k8s.v1.cni.cncf.io/policy-for': policyFor }));
          assert.ok(p.ingress !== undefined || p.egress !== undefined);
        } catch (err) {
          assert.ok(err instanceof PolicyParseError, String(err));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('property: matchLabels is the same as In expressions of one value; NotIn is the negation of In', () => {
    const labels = fc.dictionary(fc.constantFrom('a', 'b', 'c'), fc.constantFrom('1', '2'));
    fc.assert(
      fc.property(labels, labels, (want, have) => {
        const asLabels: LabelSelector = { matchLabels: want, matchExpressions: [] };
        const asIn: LabelSelector = { matchLabels: {}, matchExpressions: Object.entries(want).map(([key, v]) => ({ key, operator: 'In' as const, values: [v] })) };
        assert.equal(matches(asLabels, have), matches(asIn, have));
        for (const [key, v] of Object.entries(want)) {
          const inSel: LabelSelector = { matchLabels: {}, matchExpressions: [{ key, operator: 'In', values: [v] }] };
          const notIn: LabelSelector = { matchLabels: {}, matchExpressions: [{ key, operator: 'NotIn', values: [v] }] };
          assert.notEqual(matches(inSel, have), matches(notIn, have));
        }
      }),
    );
  });

  it('property: policy-for lists round-trip, each entry once', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9-]{0,8}[a-z0-9]$/);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.option(name, { nil: undefined }), name), { maxLength: 6 }), (entries) => {
        const text = entries.map(([ns, n]) => (ns ? `${ns}/${n}` : n)).join(' , ');
        const want = [...new Set(entries.map(([ns, n]) => `${ns ?? 'home'}/${n}`))];
        assert.deepEqual(parsePolicyFor(text, 'home'), want);
      }),
    );
  });

  it('network-status: the default network is not an attachment; CIDR-style ips are taken bare; garbage is no attachments', () => {
    const p = parsePolicyPod({
      metadata: { name: 'a', namespace: 'x', annotations: { 'k8s.v1.cni.cncf.io/network-status': status([{ name: 'x/net', interface: 'net1', ips: ['10.1.0.2/24', 'fd00::2'] }]) } },
      spec: { containers: [{ ports: [{ name: 'web', containerPort: 8080 }, { containerPort: 9 }] }] },
    });
    assert.deepEqual(p.networks, [{ network: 'x/net', ifName: 'net1', ips: ['10.1.0.2', 'fd00::2'] }]);
    assert.deepEqual(p.namedPorts, [{ name: 'web', protocol: 'TCP', port: 8080 }]);
    assert.deepEqual(parsePolicyPod({ metadata: { name: 'a', namespace: 'x', annotations: { 'k8s.v1.cni.cncf.io/network-status': '{nope' } } }).networks, []);
    const ended = parsePolicyPod({
      metadata: { name: 'a', namespace: 'x', annotations: { 'k8s.v1.cni.cncf.io/network-status': status([{ name: 'x/net', ips: ['10.1.0.2'] }]) } },
      status: { phase: 'Succeeded' },
    });
    assert.deepEqual(ended.networks, [], 'a pod that has ended holds no addresses');
  });
});

describe('MultiNetworkPolicy semantics (rules for a pod)', () => {
  const a = pod('x', 'a', { app: 'a' }, ['10.1.0.1', 'fd00::1'], { containers: [{ ports: [{ name: 'web', containerPort: 8080 }] }] });
  const b = pod('x', 'b', { app: 'b' }, ['10.1.0.2', 'fd00::2'], { containers: [{ ports: [{ name: 'web', containerPort: 9090 }] }] });
  const c = pod('y', 'c', { app: 'b' }, ['10.1.0.3']);
  const namespaces = [
    { name: 'x', labels: { team: 'red' } },
    { name: 'y', labels: { team: 'blue' } },
  ];
  const rules = (...specs: object[]) =>
    rulesForPod(
      worldOf(
        specs.map((s, i) => parsePolicy(mnp(s, undefined, 'x', `p${i}`))),
        [a, b, c],
        namespaces,
      ),
      a,
    );

  it('not selected, or not for its network: no rules (open); selected: isolated per direction', () => {
    assert.deepEqual(rules({ podSelector: { matchLabels: { app: 'b' } } }), []);
    assert.deepEqual(rulesForPod(worldOf([parsePolicy(mnp({ podSelector: {} }, { 'k8s.v1.cni.cncf.io/policy-for': 'other' }))], [a], namespaces), a), []);
    const [iface] = rules({ podSelector: {} });
    assert.deepEqual(iface, { ifName: 'net1', network: 'x/net', ingress: { policies: ['x/p0'], allow: [] } });
  });

  it('peers: podSelector in the policy namespace, namespaceSelector, both; addresses on that network, by family', () => {
    const [bySel] = rules({ podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] });
    assert.deepEqual(
      bySel!.ingress!.allow.map((l) => [l.family, l.addrs]),
      [
        [4, ['10.1.0.2']],
        [6, ['fd00::2']],
      ],
    );
    const [both] = rules({ podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } }, namespaceSelector: { matchLabels: { team: 'blue' } } }] }] });
    assert.deepEqual(
      both!.ingress!.allow.map((l) => l.addrs),
      [['10.1.0.3']],
    );
    const [allNs] = rules({ podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] });
    assert.deepEqual(
      allNs!.ingress!.allow.map((l) => l.addrs),
      [
        ['10.1.0.1', '10.1.0.2', '10.1.0.3'],
        ['fd00::1', 'fd00::2'],
      ],
    );
  });

  it('ports: named ports resolve against the pod itself for ingress and against each peer for egress; an unresolved name matches nothing', () => {
    const [ing] = rules({ podSelector: {}, ingress: [{ ports: [{ port: 'web' }, { port: 'nope' }, { protocol: 'UDP', port: 53, endPort: 60 }] }] });
    assert.deepEqual(
      ing!.ingress!.allow.map((l) => [l.protocol, l.ports]),
      [
        ['TCP', ['8080']],
        ['UDP', ['53-60']],
      ],
    );
    const [eg] = rules({ podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: {} }], ports: [{ port: 'web' }] }] });
    assert.deepEqual(
      eg!.egress!.allow.map((l) => `${l.addrs!.join()}:${l.ports!.join()}`),
      ['10.1.0.1:8080', 'fd00::1:8080', '10.1.0.2:9090', 'fd00::2:9090'],
    );
  });

  it('rules of several policies add up; an empty rule allows everything', () => {
    const [iface] = rules({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.9.0.0/16', except: ['10.9.1.0/24'] } }] }] }, { podSelector: {}, ingress: [{}] });
    assert.deepEqual(iface!.ingress!.policies, ['x/p0', 'x/p1']);
    assert.deepEqual(iface!.ingress!.allow, [{ family: 4, addrs: ['10.9.0.0/16'], except: ['10.9.1.0/24'], origin: 'x/p0 ingress[0]' }, { origin: 'x/p1 ingress[0]' }]);
    const table = renderTable([iface!]);
    assert.match(table, /ip saddr 10\.9\.0\.0\/16 ip saddr != 10\.9\.1\.0\/24 accept comment "x\/p0 ingress\[0\]"/);
    assert.match(table, /\n {4}accept comment "x\/p1 ingress\[0\]"/);
    assert.throws(() => renderTable([{ ...iface!, ifName: 'net1"; drop' }]), /cannot be filtered/);
  });
});
