/**
 * The admission decisions in process: NAD and pod validation (the plugin's parsers and checks, the
 * plugin's words), resource injection as network-resources-injector does it without its defects, and
 * the property that the webhook admits exactly the network requests the meta plugin can plan.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { PluginRequest, PluginStdinConf } from '../../src/cni/skel.js';
import type { NetworkAttachmentDefinition } from '../../src/k8s/types.js';
import { MetaInvocation } from '../../src/meta/invocation.js';
import { planAttachments } from '../../src/meta/plan.js';
import { CniError } from '../../src/cni/errors.js';
import { Admission, type AdmissionRequest, type Decision, PodShapeError, ReviewError, parseReview, reviewResponse } from '../../src/webhook/admission.js';
import { type InjectOptions, PODNETINFO_VOLUME, parseControlSwitches } from '../../src/webhook/inject.js';
import { type AdmissionPolicy, type Catalog, DEFAULT_POLICY, parseNodeSelector, resourceNameProblem, validateNad } from '../../src/webhook/validate.js';
import { applyJsonPatch } from '../../src/webhook/jsonpatch.js';

const SRIOV = 'intel.com/sriov_a';
const nad = (name: string, config: object | string | undefined, annotations: Record<string, string> = {}, namespace = 'default'): NetworkAttachmentDefinition => ({
  metadata: { name, namespace, annotations },
  ...(config === undefined ? {} : { spec: { config: typeof config === 'string' ? config : JSON.stringify(config) } }),
});
const macvlan = (name: string, capabilities: Record<string, boolean> = {}) => nad(name, { cniVersion: '1.0.0', name, type: 'macvlan', master: 'eth0', capabilities, ipam: { type: 'static' } });

class MapCatalog implements Catalog {
  readonly nads = new Map<string, NetworkAttachmentDefinition>();
  claims: Set<string> | undefined = new Set<string>();
  allocatable: Record<string, number> | undefined = { [SRIOV]: 4 };
  constructor(list: NetworkAttachmentDefinition[]) {
    for (const n of list) this.nads.set(`${n.metadata.namespace}/${n.metadata.name}`, n);
  }
  nad(ns: string, name: string) {
    return this.nads.get(`${ns}/${name}`);
  }
  ipamClaim(ns: string, name: string) {
    return this.claims?.has(`${ns}/${name}`);
  }
  largestAllocatable(resource: string) {
    return this.allocatable ? (this.allocatable[resource] ?? 0) : undefined;
  }
}

const catalog = () =>
  new MapCatalog([
    macvlan('mv'),
    macvlan('mv-ips', { ips: true, mac: true }),
    nad('sriov-a', { cniVersion: '1.0.0', name: 'sriov-a', type: 'sriov', ipam: { type: 'static' } }, { 'k8s.v1.cni.cncf.io/resourceName': SRIOV }),
    nad('sriov-b', { cniVersion: '1.0.0', name: 'sriov-b', type: 'sriov' }, { 'k8s.v1.cni.cncf.io/resourceName': SRIOV }),
    nad('pinned', { cniVersion: '1.0.0', name: 'pinned', type: 'macvlan', master: 'eno3' }, { 'k8s.v1.cni.cncf.io/nodeSelector': 'master=eno3' }),
    { ...macvlan('shared'), metadata: { name: 'shared', namespace: 'other' } },
  ]);

const noInjections: InjectOptions = { userInjections: new Map(), podNetInfo: true, hugepages: false };

function podObject(
  annotations: Record<string, string>,
  containers: object[] = [{ name: 'app', image: 'x' }],
  extra: { labels?: Record<string, string>; nodeSelector?: Record<string, string> } = {},
): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p', namespace: 'default', annotations, ...(extra.labels ? { labels: extra.labels } : {}) },
    spec: { containers, ...(extra.nodeSelector ? { nodeSelector: extra.nodeSelector } : {}) },
  };
}

const review = (kind: string, object: unknown, operation: AdmissionRequest['operation'] = 'CREATE', oldObject?: unknown): AdmissionRequest => ({
  uid: 'u1',
  kind: { group: kind === 'Pod' ? '' : 'k8s.cni.cncf.io', version: 'v1', kind },
  operation,
  namespace: 'default',
  object,
  ...(oldObject ? { oldObject } : {}),
});

function admission(cat: Catalog = catalog(), policy: AdmissionPolicy = DEFAULT_POLICY, opts: InjectOptions = noInjections): Admission {
  return new Admission(cat, policy, () => opts);
}

/** The pod as the API server stores it: mutated, then validated. */
async function admit(obj: Record<string, unknown>, a = admission()): Promise<{ mutated: Record<string, unknown>; mutate: Decision; validate: Decision }> {
  const mutate = await a.mutate(review('Pod', obj));
  const mutated = mutate.patch ? applyJsonPatch(obj, mutate.patch) : obj;
  return { mutated, mutate, validate: await a.validate(review('Pod', mutated)) };
}

describe('admission webhook: NADs', () => {
  it('denies a spec.config that is not JSON, naming the NAD and the field', () => {
    const v = validateNad(nad('broken', '{"cniVersion": "1.0.0", "type": '));
    assert.equal(v.denials.length, 1);
    assert.match(v.denials[0]!, /failed to decode spec\.config of NetworkAttachmentDefinition default\/broken/);
  });

  it('denies a plugin without a type, an unsupported cniVersion, a type that is a path, ill-typed capabilities', () => {
    assert.match(validateNad(nad('a', { cniVersion: '1.0.0', plugins: [{ master: 'x' }] })).denials.join(), /type/);
    assert.match(validateNad(nad('a', { cniVersion: '9.9.9', type: 'macvlan' })).denials.join(), /9\.9\.9/);
    assert.match(validateNad(nad('a', { cniVersion: '1.0.0', type: '../../bin/sh' })).denials.join(), /spec\.config of NetworkAttachmentDefinition default\/a: \/type: must match/);
    assert.match(validateNad(nad('a', { cniVersion: '1.0.0', type: 'macvlan', capabilities: { ips: 'yes' } })).denials.join(), /capabilities/);
  });

  it('denies a malformed resourceName or nodeSelector annotation; warns for no spec.config and a differing config name', () => {
    assert.match(validateNad(nad('a', { cniVersion: '1.0.0', type: 'sriov' }, { 'k8s.v1.cni.cncf.io/resourceName': 'no-slash' })).denials.join(), /resourceName.*<domain>\/<name>/);
    assert.match(validateNad(nad('a', { cniVersion: '1.0.0', type: 'sriov' }, { 'k8s.v1.cni.cncf.io/resourceName': 'kubernetes.io/x' })).denials.join(), /reserved/);
    assert.match(validateNad(nad('a', { cniVersion: '1.0.0', type: 'macvlan' }, { 'k8s.v1.cni.cncf.io/nodeSelector': 'novalue' })).denials.join(), /nodeSelector/);
    const none = validateNad(nad('ondisk', undefined));
    assert.deepEqual(none.denials, []);
    assert.match(none.warnings.join(), /no spec\.config.*conf file named "ondisk"/);
    const named = validateNad(nad('a', { cniVersion: '1.0.0', name: 'b', type: 'macvlan' }));
    assert.deepEqual(named.denials, []);
    assert.match(named.warnings.join(), /differs from metadata\.name/);
    assert.deepEqual(validateNad(macvlan('fine')), { denials: [], warnings: [] });
  });

  it('the AdmissionReview answer carries the denial as a 403 status, and the uid', async () => {
    const d = await admission().validate(
      review('NetworkAttachmentDefinition', { apiVersion: 'k8s.cni.cncf.io/v1', kind: 'NetworkAttachmentDefinition', metadata: { name: 'x' }, spec: { config: 'nope' } }),
    );
    const out = reviewResponse('u1', d) as { response: { uid: string; allowed: boolean; status: { code: number; message: string } } };
    assert.equal(out.response.uid, 'u1');
    assert.equal(out.response.allowed, false);
    assert.equal(out.response.status.code, 403);
    assert.match(out.response.status.message, /NetworkAttachmentDefinition default\/x denied by Plexus: failed to decode spec\.config/);
  });

  it('a request that is not an AdmissionReview v1 is refused before any decision', () => {
    assert.throws(() => parseReview({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'x' } }), /not an admission\.k8s\.io\/v1 AdmissionReview/);
    assert.throws(() => parseReview({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'x', kind: { kind: 'Pod' }, operation: 'CREATE' } }), /group, version, kind/);
  });
});

describe('admission webhook: pods', () => {
  it("a typo in the annotation is denied with the plugin parser's own message", async () => {
    const { validate } = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'mv@eth 1' }));
    assert.equal(validate.allowed, false);
    assert.match(validate.message!, /invalid k8s\.v1\.cni\.cncf\.io\/networks annotation: element 0: interface/);
    const json = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': '[{"name": "mv", "interfce": "x"}]' }));
    assert.match(json.validate.message!, /element 0: "interfce" is not an NPWG key/);
  });

  it('a missing NAD is denied, or admitted with a warning when so configured', async () => {
    const denied = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'mv,nope' }));
    assert.equal(denied.validate.allowed, false);
    assert.match(denied.validate.message!, /network default\/nope \(as net2\): NetworkAttachmentDefinition default\/nope does not exist/);
    const warned = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'nope' }), admission(catalog(), { ...DEFAULT_POLICY, missingNad: 'warn' }));
    assert.equal(warned.validate.allowed, true);
    assert.match(warned.validate.warnings!.join(), /does not exist/);
  });

  it('namespaceIsolation, duplicate interface names, undeclared capabilities, unknown IPAMClaims are denied', async () => {
    const iso = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'other/shared' }), admission(catalog(), { ...DEFAULT_POLICY, namespaceIsolation: true }));
    assert.match(iso.validate.message!, /network not allowed by namespaceIsolation/);
    assert.equal((await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'other/shared' }))).validate.allowed, true);
    const dup = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'mv@net2,mv-ips' }));
    assert.match(dup.validate.message!, /duplicate interface name: "net2"/);
    const eth0 = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'mv@eth0' }));
    assert.match(eth0.validate.message!, /"eth0" is requested by the cluster network and default\/mv/);
    const caps = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': '[{"name": "mv", "ips": ["10.1.1.1/24"]}]' }));
    assert.match(caps.validate.message!, /network default\/mv cannot take "ips": no plugin in "mv" declares the "ips" capability/);
    assert.equal((await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': '[{"name": "mv-ips", "ips": ["10.1.1.1/24"], "mac": "02:00:00:00:00:01"}]' }))).validate.allowed, true);
    const cat = catalog();
    const claim = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': '[{"name": "mv", "ipam-claim-reference": "c1"}]' }), admission(cat));
    assert.match(claim.validate.message!, /IPAMClaim default\/c1, which does not exist/);
    cat.claims!.add('default/c1');
    assert.equal((await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': '[{"name": "mv", "ipam-claim-reference": "c1"}]' }), admission(cat))).validate.allowed, true);
  });

  it("two SR-IOV selections: 2 requested and limited in the first container, podnetinfo mounted; the user's own requests kept", async () => {
    const { mutated, validate } = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a,sriov-b' }, [{ name: 'app' }, { name: 'side' }]));
    assert.equal(validate.allowed, true, validate.message);
    const spec = mutated.spec as {
      containers: { resources?: { requests: Record<string, string>; limits: Record<string, string> }; volumeMounts?: { name: string; mountPath: string }[] }[];
      volumes: { name: string }[];
    };
    assert.deepEqual(spec.containers[0]!.resources, { requests: { [SRIOV]: '2' }, limits: { [SRIOV]: '2' } });
    assert.equal(spec.containers[1]!.resources, undefined);
    assert.deepEqual(
      spec.volumes.map((v) => v.name),
      [PODNETINFO_VOLUME],
    );
    assert.ok(spec.containers.every((c) => c.volumeMounts?.some((m) => m.mountPath === '/etc/podnetinfo')));
    // Already asked for: nothing added.
    const own = await admit(
      podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a,sriov-b' }, [{ name: 'app', resources: { limits: { [SRIOV]: '2' }, requests: { [SRIOV]: '2' } } }]),
      admission(catalog(), DEFAULT_POLICY, { ...noInjections, podNetInfo: false }),
    );
    assert.equal(own.mutate.patch, undefined);
    assert.equal(own.validate.allowed, true);
  });

  it('the resource-containers annotation spreads the devices over the containers it names', async () => {
    const { mutated } = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a,sriov-b', 'plexus.network/resource-containers': 'b,c' }, [{ name: 'a' }, { name: 'b' }, { name: 'c' }]));
    const c = (mutated.spec as { containers: { resources?: { limits: Record<string, string> } }[] }).containers;
    assert.deepEqual(
      c.map((x) => x.resources?.limits[SRIOV]),
      [undefined, '1', '1'],
    );
    const unknown = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a', 'plexus.network/resource-containers': 'ghost' }));
    assert.match(unknown.validate.message!, /names container "ghost", which the pod does not have/);
  });

  it('without the mutating side, a pod short of devices is denied; warnings when no node has enough', async () => {
    const a = admission();
    const d = await a.validate(review('Pod', podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a,sriov-b' })));
    assert.match(d.message!, /selects 2 network\(s\) of resource intel\.com\/sriov_a but its containers request 0/);
    const cat = catalog();
    cat.allocatable = { [SRIOV]: 1 };
    const short = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a,sriov-b' }), admission(cat));
    assert.match(short.validate.warnings!.join(), /largest node has 1 allocatable/);
    cat.allocatable = {};
    assert.match((await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a' }), admission(cat))).validate.warnings!.join(), /no node advertises intel\.com\/sriov_a/);
  });

  it('a pod with ResourceClaims (DRA): a NAD of a resource no node advertises takes its device from a claim, so nothing is injected or denied; an advertised one still is', async () => {
    const cat = catalog();
    cat.nads.set('default/dra-net', nad('dra-net', { cniVersion: '1.0.0', name: 'dra-net', type: 'sriov' }, { 'k8s.v1.cni.cncf.io/resourceName': 'intel.com/x710_dra' }));
    const withClaim = (networks: string) => {
      const obj = podObject({ 'k8s.v1.cni.cncf.io/networks': networks }, [{ name: 'app', resources: { claims: [{ name: 'vf' }] } }]);
      (obj.spec as Record<string, unknown>).resourceClaims = [{ name: 'vf', resourceClaimTemplateName: 'one-vf' }];
      return obj;
    };
    const dra = await admit(withClaim('dra-net'), admission(cat));
    assert.equal(dra.validate.allowed, true, dra.validate.message);
    assert.equal((dra.mutated.spec as { containers: { resources: Record<string, unknown> }[] }).containers[0]!.resources.requests, undefined, 'no device-plugin request injected');
    // Without claims the same NAD is a device-plugin resource: a pod short of it is denied.
    const plain = await admission(cat).validate(review('Pod', podObject({ 'k8s.v1.cni.cncf.io/networks': 'dra-net' })));
    assert.match(plain.message!, /selects 1 network\(s\) of resource intel\.com\/x710_dra but its containers request 0/);
    // A resource some node advertises is injected even for a pod with claims (say, a GPU claim).
    const both = await admit(withClaim('dra-net,sriov-a'), admission(cat));
    assert.equal(both.validate.allowed, true, both.validate.message);
    assert.deepEqual((both.mutated.spec as { containers: { resources: { limits?: Record<string, string> } }[] }).containers[0]!.resources.limits, { [SRIOV]: '1' });
  });

  it("a NAD's nodeSelector is injected without a resourceName (NRI #78); a conflicting one is denied", async () => {
    const { mutated, validate } = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'pinned' }));
    assert.equal(validate.allowed, true);
    assert.deepEqual((mutated.spec as { nodeSelector: object }).nodeSelector, { master: 'eno3' });
    const clash = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'pinned' }, undefined, { nodeSelector: { master: 'eno4' } }));
    assert.match(clash.validate.message!, /runs only on nodes with master=eno3 .* but the pod's nodeSelector has master=eno4/);
  });

  it("user-defined injections: every matching key applies (NRI #94), added to the pod's own networks (NRI #88)", async () => {
    const { injections, problems } = parseControlSwitches(
      JSON.stringify({
        'user-defined-injections': {
          'feature.pod.kubernetes.io_sriov-network': { op: 'add', path: '/metadata/annotations', value: { 'k8s.v1.cni.cncf.io/networks': 'sriov-a' } },
          'feature.pod.kubernetes.io_pinned': { op: 'add', path: '/metadata/annotations', value: { 'k8s.v1.cni.cncf.io/networks': 'pinned', team: 'ran' } },
          bad: { op: 'remove', path: '/spec' },
        },
      }),
    );
    assert.equal(problems.length, 1);
    const opts = { ...noInjections, userInjections: injections };
    const labels = { 'feature.pod.kubernetes.io_sriov-network': 'true', 'feature.pod.kubernetes.io_pinned': 'true' };
    const { mutated, validate } = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'mv' }, undefined, { labels }), admission(catalog(), DEFAULT_POLICY, opts));
    assert.equal(validate.allowed, true, validate.message);
    const ann = (mutated.metadata as { annotations: Record<string, string> }).annotations;
    assert.deepEqual(
      (JSON.parse(ann['k8s.v1.cni.cncf.io/networks']!) as { name: string }[]).map((s) => s.name),
      ['mv', 'pinned', 'sriov-a'],
    );
    assert.equal(ann.team, 'ran');
  });

  it('hugepages in podnetinfo per container, each item scoped to its container (NRI #45)', async () => {
    const hp = (n: string) => ({ name: n, resources: { requests: { 'hugepages-1Gi': '2Gi' }, limits: { 'hugepages-1Gi': '2Gi' } } });
    const { mutated } = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a' }, [hp('a'), hp('b')]), admission(catalog(), DEFAULT_POLICY, { ...noInjections, hugepages: true }));
    const vol = (mutated.spec as { volumes: { downwardAPI: { items: { path: string; resourceFieldRef?: { containerName: string } }[] } }[] }).volumes[0]!;
    const items = vol.downwardAPI.items.filter((i) => i.resourceFieldRef);
    assert.deepEqual(
      items.map((i) => `${i.path}:${i.resourceFieldRef!.containerName}`),
      ['hugepages_1G_request_a:a', 'hugepages_1G_limit_a:a', 'hugepages_1G_request_b:b', 'hugepages_1G_limit_b:b'],
    );
  });

  it('mutating twice (reinvocation) changes nothing more; an UPDATE that keeps the network request is not judged', async () => {
    const a = admission();
    const { mutated } = await admit(podObject({ 'k8s.v1.cni.cncf.io/networks': 'sriov-a,pinned' }), a);
    assert.equal((await a.mutate(review('Pod', mutated))).patch, undefined);
    const broken = podObject({ 'k8s.v1.cni.cncf.io/networks': 'nope' });
    assert.equal((await a.validate(review('Pod', { ...broken, metadata: { ...(broken.metadata as object), labels: { x: 'y' } } }, 'UPDATE', broken))).outcome, 'skipped');
    const changed = await a.validate(review('Pod', podObject({ 'k8s.v1.cni.cncf.io/networks': 'mv' }), 'UPDATE', broken));
    assert.equal(changed.allowed, true);
    assert.match(changed.warnings!.join(), /applies to the pod sandbox created next/);
  });
});

describe('admission webhook: outside input', () => {
  it('property: any body is an AdmissionReview or a ReviewError; any object in one is judged or refused with a named error, never a crash', async () => {
    const a = admission();
    const anyPodish = fc.record(
      {
        apiVersion: fc.constant('v1'),
        metadata: fc.oneof(
          fc.jsonValue(),
          fc.record(
            { name: fc.string(), annotations: fc.dictionary(fc.constantFrom('k8s.v1.cni.cncf.io/networks', 'v1.multus-cni.io/default-network', 'x'), fc.jsonValue()), labels: fc.jsonValue() },
            { requiredKeys: [] },
          ),
        ),
        spec: fc.oneof(fc.jsonValue(), fc.record({ containers: fc.array(fc.jsonValue(), { maxLength: 3 }), nodeSelector: fc.jsonValue(), volumes: fc.jsonValue() }, { requiredKeys: [] })),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record({
        apiVersion: fc.constantFrom('admission.k8s.io/v1', 'admission.k8s.io/v1beta1'),
        kind: fc.constant('AdmissionReview'),
        request: fc.record(
          {
            uid: fc.string(),
            kind: fc.oneof(
              fc.jsonValue(),
              fc.record({ group: fc.constantFrom('', 'k8s.cni.cncf.io'), version: fc.constant('v1'), kind: fc.constantFrom('Pod', 'NetworkAttachmentDefinition', 'Node') }),
            ),
            operation: fc.constantFrom('CREATE', 'UPDATE', 'DELETE', 'PATCH'),
            namespace: fc.string(),
            object: anyPodish,
            oldObject: anyPodish,
          },
          { requiredKeys: [] },
        ),
      }),
    );
    await fc.assert(
      fc.asyncProperty(body, async (b) => {
        let req: AdmissionRequest;
        try {
          req = parseReview(b);
        } catch (err) {
          assert.ok(err instanceof ReviewError, String(err));
          return;
        }
        for (const op of [() => a.validate(req), () => a.mutate(req)]) {
          try {
            const d = await op();
            assert.equal(typeof d.allowed, 'boolean');
            if (!d.allowed) assert.ok(d.message);
          } catch (err) {
            assert.ok(err instanceof PodShapeError || err instanceof CniError, String((err as Error).stack));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('property: nodeSelector and resourceName annotations give a map or a reason, and the control switches a typed result', () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.string(),
        fc.oneof(
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        (sel, res, cfg) => {
          const parsed = parseNodeSelector(sel);
          if (typeof parsed !== 'string') for (const [k, v] of Object.entries(parsed)) assert.ok(k && typeof v === 'string');
          const why = resourceNameProblem(res);
          assert.ok(why === undefined ? /^[a-z0-9.-]+\/[A-Za-z0-9_.-]+$/.test(res) : why.length > 0);
          const sw = parseControlSwitches(cfg);
          assert.ok(sw.injections instanceof Map && Array.isArray(sw.problems));
          for (const v of sw.injections.values()) assert.ok(Object.values(v).every((x) => typeof x === 'string'));
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('admission webhook and meta plugin agree', () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'plexus-webhook-prop-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Whether the meta plugin, given the same NADs, can plan the pod's attachments (what ADD does before any delegate runs). */
  async function pluginAccepts(annotations: Record<string, string>, cat: MapCatalog): Promise<boolean> {
    const conf = {
      cniVersion: '1.0.0',
      name: 'plexus',
      type: 'plexus',
      delegates: [{ cniVersion: '1.0.0', name: 'cluster', type: 'bridge' }],
      cniDir: join(dir, 'cni'),
      confDir: join(dir, 'net.d'),
      runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations },
    } as unknown as PluginStdinConf;
    const req: PluginRequest = {
      command: 'ADD',
      containerID: 'c',
      netns: '/var/run/netns/x',
      ifName: 'eth0',
      args: [
        ['K8S_POD_NAMESPACE', 'default'],
        ['K8S_POD_NAME', 'p'],
      ],
      path: [],
      stdin: Buffer.alloc(0),
      conf,
      env: {},
    };
    const inv = new MetaInvocation(req, { lookup: { pod: () => undefined, nad: (ns, name) => cat.nad(ns, name) } });
    try {
      await planAttachments(inv);
      return true;
    } catch {
      return false;
    }
  }

  it('property: the webhook admits an annotation exactly when the plugin can plan it', async () => {
    // The plugin checks neither IPAMClaims nor node capacity: unknown to the webhook here too.
    const cat = catalog();
    cat.allocatable = undefined;
    cat.claims = undefined;
    const a = admission(cat);
    const seen = new Set<boolean>();
    const element = fc.record(
      {
        name: fc.constantFrom('mv', 'mv-ips', 'nope', 'Bad_Name', ''),
        namespace: fc.constantFrom('default', 'other'),
        interface: fc.constantFrom('net1', 'net2', 'eth0', 'x'.repeat(16), 'a b'),
        ips: fc.constantFrom(['10.1.1.1/24'], ['nope'], []),
        mac: fc.constantFrom('02:00:00:00:00:01', '01:00:00:00:00:01', 'zz'),
        'default-route': fc.constantFrom(['10.1.1.1'], ['x']),
        'ipam-claim-reference': fc.constantFrom('', 'c1'),
        unknownKey: fc.constant(1),
      },
      { requiredKeys: [] },
    );
    const text = fc.oneof(
      fc.array(element, { maxLength: 3 }).map((l) => JSON.stringify(l)),
      fc.array(fc.constantFrom('mv', 'mv-ips', 'other/shared', 'mv@net1', 'mv-ips@net1', 'nope', 'a/b/c', 'mv@@x', ''), { minLength: 1, maxLength: 3 }).map((l) => l.join(',')),
      fc.string({ maxLength: 20 }),
    );
    await fc.assert(
      fc.asyncProperty(text, async (t) => {
        const annotations = { 'k8s.v1.cni.cncf.io/networks': t };
        const webhook = (await a.validate(review('Pod', podObject(annotations)))).allowed;
        const plugin = await pluginAccepts(annotations, cat);
        seen.add(plugin);
        assert.equal(webhook, plugin, `annotation ${JSON.stringify(t)}`);
      }),
      { numRuns: 400 },
    );
    assert.deepEqual([...seen].sort(), [false, true], 'both verdicts were drawn');
  });
});
