import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import AjvModule from 'ajv';
import fc from 'fast-check';
import { parseAllDocuments } from 'yaml';
import { CniError } from '../../src/cni/errors.js';
import type { PluginStdinConf } from '../../src/cni/skel.js';
import { checkNamespaceAllowed, parseMetaConf } from '../../src/meta/conf.js';
import { loadNetworkFromPath, nadToConfList } from '../../src/meta/nad.js';
import { parseDefaultNetworkAnnotation, parseNetworksAnnotation } from '../../src/meta/selection.js';
import { exampleDocs, repoRoot } from '../../src/sim/simnode.js';

const Ajv = AjvModule as unknown as typeof AjvModule.default;
const codeOf = (fn: () => unknown): number | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof CniError, `not a CniError: ${String(err)}`);
    return err.code;
  }
};

describe('networks annotation', () => {
  it('comma list: namespaces, @interface, trimming', () => {
    assert.deepEqual(parseNetworksAnnotation(' net-a, other-ns/net-b , net-c@macvlan1', 'pod-ns'), [
      { name: 'net-a', namespace: 'pod-ns' },
      { name: 'net-b', namespace: 'other-ns' },
      { name: 'net-c', namespace: 'pod-ns', interface: 'macvlan1' },
    ]);
    assert.deepEqual(parseNetworksAnnotation('', 'x'), []);
    assert.deepEqual(parseNetworksAnnotation(undefined, 'x'), []);
  });

  it('JSON list: every NPWG 1.3 key', () => {
    const [sel] = parseNetworksAnnotation(
      JSON.stringify([
        {
          name: 'net-b',
          namespace: 'other-ns',
          interface: 'ens5',
          ips: ['10.2.2.42/24', '2001:db8::5/64'],
          mac: '02:23:45:67:89:01',
          'infiniband-guid': '24:8a:07:03:00:8d:ae:2f',
          'default-route': ['10.2.2.1'],
          portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'TCP' }],
          bandwidth: { ingressRate: 2048, ingressBurst: 300, egressRate: 8000, egressBurst: 200 },
          'cni-args': { spoofchk: 'on' },
          'org.example.custom': 1,
        },
      ]),
      'pod-ns',
    );
    assert.deepEqual(sel, {
      name: 'net-b',
      namespace: 'other-ns',
      interface: 'ens5',
      ips: ['10.2.2.42/24', '2001:db8::5/64'],
      mac: '02:23:45:67:89:01',
      infinibandGUID: '24:8a:07:03:00:8d:ae:2f',
      defaultRoute: ['10.2.2.1'],
      portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }],
      bandwidth: { ingressRate: 2048, ingressBurst: 300, egressRate: 8000, egressBurst: 200 },
      cniArgs: { spoofchk: 'on' },
    });
    assert.deepEqual(parseNetworksAnnotation('[{"name":"a","ipam-claim-reference":"claim-1"}]', 'ns')[0]?.ipamClaimReference, 'claim-1');
    assert.equal(parseNetworksAnnotation('[{"name":"a","interfaceRequest":"legacy0"}]', 'ns')[0]?.interface, 'legacy0');
  });

  const invalid: [string, string, number, RegExp][] = [
    ['two slashes', 'a/b/c', 7, /more than one "\/"/],
    ['two @', 'a@b@c', 7, /more than one "@"/],
    ['upper-case name', 'Net-A', 7, /DNS-1123/],
    ['a non-NPWG key', '[{"name":"a","gateway":"1.2.3.4"}]', 7, /not an NPWG key/],
    ['ips and a claim', '[{"name":"a","ips":["10.0.0.1"],"ipam-claim-reference":"c"}]', 7, /cannot be combined/],
    ['a burst without rate', '[{"name":"a","bandwidth":{"ingressBurst":1}}]', 7, /needs ingressRate/],
    ['a zero port', '[{"name":"a","portMappings":[{"hostPort":0,"containerPort":80}]}]', 7, /port 1-65535/],
    ['a bad protocol', '[{"name":"a","portMappings":[{"hostPort":1,"containerPort":80,"protocol":"icmp"}]}]', 7, /TCP, UDP or SCTP/],
    ['an 8-byte MAC as mac', '[{"name":"a","mac":"24:8a:07:03:00:8d:ae:2f"}]', 7, /6-byte MAC/],
    ['an empty ips list', '[{"name":"a","ips":[]}]', 7, /non-empty/],
    ['an IPv4 prefix over 32', '[{"name":"a","ips":["10.0.0.1/33"]}]', 7, /not an IP/],
    ['a string in JSON form', '"just a string"', 7, /must be an object/],
    ['an IPv6 address with a zone', '[{"name":"a","ips":["fe80::1%eth0/64"]}]', 7, /ips\[0\] is not an IP/],
    ['a default-route gateway with a zone', '[{"name":"a","default-route":["fe80::1%eth0"]}]', 7, /default-route\[0\] is not an IP/],
    ['a broadcast mac', '[{"name":"a","mac":"ff:ff:ff:ff:ff:ff"}]', 7, /mac is the broadcast address/],
    ['a multicast mac', '[{"name":"a","mac":"01:00:5e:00:00:01"}]', 7, /mac is a multicast address/],
    ['an all-zero mac', '[{"name":"a","mac":"00:00:00:00:00:00"}]', 7, /mac is all zeros/],
  ];
  for (const [what, text, code, cause] of invalid) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => parseNetworksAnnotation(text, 'ns'),
        (e: unknown) => e instanceof CniError && e.code === code && cause.test(`${e.msg} ${e.details ?? ''}`),
      );
    });
  }

  it('default-network: exactly one network, namespace defaulting to the Multus namespace', () => {
    assert.deepEqual(parseDefaultNetworkAnnotation('calico', 'kube-system'), { name: 'calico', namespace: 'kube-system' });
    assert.equal(parseDefaultNetworkAnnotation(' ', 'kube-system'), undefined);
    assert.equal(
      codeOf(() => parseDefaultNetworkAnnotation('a,b', 'kube-system')),
      7,
    );
  });

  it('property: any annotation text gives selections or CNI error 6/7, never a crash', () => {
    const element = fc.dictionary(
      fc.constantFrom('name', 'namespace', 'interface', 'ips', 'mac', 'infiniband-guid', 'cni-args', 'portMappings', 'bandwidth', 'default-route', 'ipam-claim-reference', 'deviceID', 'x.y'),
      fc.jsonValue(),
    );
    const text = fc.oneof(
      fc.string(),
      fc.array(element).map((a) => JSON.stringify(a)),
      fc.array(fc.stringMatching(/^[a-z0-9/@-]{0,12}$/)).map((a) => a.join(',')),
    );
    fc.assert(
      fc.property(text, (t) => {
        try {
          for (const sel of parseNetworksAnnotation(t, 'ns')) {
            assert.match(sel.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
            if (sel.interface) assert.ok(sel.interface.length <= 15);
          }
        } catch (err) {
          assert.ok(err instanceof CniError, String(err));
          assert.ok([6, 7].includes(err.code));
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('meta conf', () => {
  const base = (extra: object = {}): PluginStdinConf => ({ cniVersion: '1.0.0', name: 'plexus', type: 'plexus', clusterNetwork: 'cbr0', ...extra }) as PluginStdinConf;

  it('applies Multus defaults', () => {
    const conf = parseMetaConf(base());
    assert.equal(conf.multusNamespace, 'kube-system');
    assert.deepEqual(conf.systemNamespaces, ['kube-system']);
    assert.equal(conf.confDir, '/etc/cni/multus/net.d');
    assert.equal(conf.binDir, '/opt/cni/bin');
    assert.equal(conf.namespaceIsolation, false);
  });

  it('accepts a Multus thin conf with only its type changed', () => {
    const multus = {
      cniVersion: '0.3.1',
      name: 'multus-cni-network',
      type: 'plexus',
      kubeconfig: '/etc/cni/net.d/multus.d/multus.kubeconfig',
      confDir: '/etc/cni/multus/net.d',
      cniDir: '/var/lib/cni/multus',
      binDir: '/opt/cni/bin',
      logFile: '/var/log/multus.log',
      logLevel: 'debug',
      logToStderr: false,
      logOptions: { maxAge: 5, maxSize: 100, maxBackups: 5, compress: true },
      capabilities: { portMappings: true },
      readinessindicatorfile: '',
      namespaceIsolation: true,
      globalNamespaces: 'default,tenant-shared',
      retryDeleteOnError: false,
      systemNamespaces: ['kube-system'],
      multusNamespace: 'kube-system',
      defaultNetworks: ['extra'],
      delegates: [{ cniVersion: '0.3.1', name: 'k8s-pod-network', type: 'calico' }],
    };
    const conf = parseMetaConf(multus as unknown as PluginStdinConf);
    assert.deepEqual(conf.globalNamespaces, ['default', 'tenant-shared']);
    assert.equal(conf.delegates?.length, 1);
    assert.equal(conf.readinessindicatorfile, undefined, 'empty means none');
  });

  it('refuses a conf without cluster network, and bad key types, naming the field', () => {
    assert.throws(() => parseMetaConf({ cniVersion: '1.0.0', name: 'p', type: 'plexus' } as PluginStdinConf), /"clusterNetwork" or "delegates"/);
    assert.throws(
      () => parseMetaConf(base({ namespaceIsolation: 'yes' })),
      (e: unknown) => e instanceof CniError && e.code === 7 && /namespaceIsolation/.test(e.details ?? ''),
    );
    assert.throws(() => parseMetaConf(base({ apiTimeoutMs: 0 })), /apiTimeoutMs/);
  });

  it('namespaceIsolation allows own namespace and global namespaces only', () => {
    const conf = parseMetaConf(base({ namespaceIsolation: true, globalNamespaces: 'shared' }));
    checkNamespaceAllowed(conf, 'a', 'a', 'n');
    checkNamespaceAllowed(conf, 'a', 'shared', 'n');
    assert.throws(() => checkNamespaceAllowed(conf, 'a', 'default', 'n'), /namespaceIsolation/);
    const implicit = parseMetaConf(base({ namespaceIsolation: true }));
    checkNamespaceAllowed(implicit, 'a', 'default', 'n');
  });

  it('property: any conf object gives a MetaConf or CNI error 7', () => {
    const keys = fc.constantFrom(
      'clusterNetwork',
      'delegates',
      'defaultNetworks',
      'systemNamespaces',
      'multusNamespace',
      'namespaceIsolation',
      'globalNamespaces',
      'confDir',
      'cniDir',
      'binDir',
      'kubeconfig',
      'logLevel',
      'logToStderr',
      'capabilities',
      'apiTimeoutMs',
      'auxiliaryCNIChainName',
    );
    fc.assert(
      fc.property(fc.dictionary(keys, fc.jsonValue()), (extra) => {
        try {
          parseMetaConf({ cniVersion: '1.0.0', name: 'p', type: 'plexus', ...extra } as PluginStdinConf);
        } catch (err) {
          assert.ok(err instanceof CniError && err.code === 7, String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('a network conf file by path (clusterNetwork)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plx-confpath-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is parsed again only when its bytes change, and gets the plugins of <dir>/<name>/ as they are now', () => {
    const file = join(dir, '10-cluster.conflist');
    writeFileSync(file, JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', plugins: [{ type: 'bridge', bridge: 'br-a' }] }));
    const first = loadNetworkFromPath(file);
    assert.equal(loadNetworkFromPath(file), first, 'unchanged: the parse is reused');
    writeFileSync(file, JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', plugins: [{ type: 'bridge', bridge: 'br-b' }] }));
    assert.equal(loadNetworkFromPath(file).plugins[0]!.bridge, 'br-b', 'changed: parsed again');
    mkdirSync(join(dir, 'cluster'));
    writeFileSync(join(dir, 'cluster', '50-tuning.conf'), JSON.stringify({ type: 'tuning', mtu: 1300 }));
    assert.deepEqual(
      loadNetworkFromPath(file).plugins.map((p) => p.type),
      ['bridge', 'tuning'],
      'appended plugins are read every time',
    );
    // The file given, not another of the same name in its directory.
    writeFileSync(join(dir, '00-same-name.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', plugins: [{ type: 'macvlan' }] }));
    assert.equal(loadNetworkFromPath(file).plugins[0]!.type, 'bridge');
  });
});

describe('NAD resolution', () => {
  const nad = (config?: string) => ({ metadata: { name: 'net-a', namespace: 'ns' }, ...(config === undefined ? {} : { spec: { config } }) });

  it('uses spec.config and injects the NAD name when it is missing', () => {
    const list = nadToConfList(nad('{"cniVersion":"1.0.0","type":"macvlan"}'), '/nonexistent');
    assert.equal(list.name, 'net-a');
    assert.equal(JSON.parse(list.bytes.toString()).name, 'net-a');
    assert.equal(nadToConfList(nad('{"cniVersion":"1.0.0","name":"own","plugins":[{"type":"bridge"}]}'), '/x').name, 'own');
  });

  it('parses a NAD object once; a changed NAD (a new object, as informers hand out) is parsed again', () => {
    const first = nad('{"cniVersion":"1.0.0","type":"macvlan"}');
    assert.equal(nadToConfList(first, '/x'), nadToConfList(first, '/x'), 'the same object: the same parse');
    const changed = nad('{"cniVersion":"1.0.0","type":"bridge"}');
    assert.equal(nadToConfList(changed, '/x').plugins[0]!.type, 'bridge');
  });

  it('without spec.config fails naming the conf dir it searched', () => {
    assert.throws(
      () => nadToConfList(nad(), '/nonexistent'),
      (e: unknown) => e instanceof CniError && e.code === 7 && /no spec\.config.*\/nonexistent/.test(e.msg),
    );
  });

  it('property: any spec.config gives a conf list or CNI error 1, 6 or 7', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
          fc.record({ cniVersion: fc.string(), type: fc.string(), plugins: fc.jsonValue() }, { requiredKeys: [] }).map((v) => JSON.stringify(v)),
        ),
        (config) => {
          try {
            nadToConfList(nad(config), '/nonexistent');
          } catch (err) {
            assert.ok(err instanceof CniError && [1, 6, 7].includes(err.code), String(err));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('every example NAD is valid against the CRD schema in crds/, and a wrong one is not', () => {
    const crd = parseAllDocuments(readFileSync(join(repoRoot(), 'crds', 'network-attachment-definition.yaml'), 'utf8'))[0]!.toJS() as { spec: { versions: { schema: { openAPIV3Schema: object } }[] } };
    const validate = new Ajv({ strict: false }).compile(crd.spec.versions[0]!.schema.openAPIV3Schema);
    const examples = exampleDocs('network-attachment-definitions.yaml');
    assert.ok(examples.length >= 3);
    for (const doc of examples) {
      assert.ok(validate(doc), `${doc.metadata.name}: ${JSON.stringify(validate.errors)}`);
      assert.ok(nadToConfList(doc as never, '/nonexistent').plugins.length >= 1);
    }
    assert.equal(validate({ ...examples[0], spec: { config: { not: 'a string' } } }), false);
  });
});
