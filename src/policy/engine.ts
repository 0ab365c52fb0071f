/**
 * MultiNetworkPolicy enforcement in the node daemon. It watches the policies, its own node's pods, and
 * only the peers of the policies that select a pod of this node (watches.ts: each filtered by the API
 * server on the peer's own selector), so its cost follows its node, not the cluster (docs/scale.md). The
 * node's sandboxes (netns and interfaces) come from the ADDs and, at start, from the attachment store. A
 * change marks only the local pods it can affect; those are recomputed and, where their table differs,
 * replaced in one nft transaction. An ADD of a pod a policy selects returns only once its table is in
 * place; an ADD of a pod no policy selects waits for nothing but the policy list.
 */
import { existsSync } from 'node:fs';
import { ApiClient, ApiError, type ApiTraffic } from '../k8s/client.js';
import { Informer } from '../k8s/informer.js';
import type { ApiConfig } from '../k8s/kubeconfig.js';
import { nativeAddon } from '../util/native.js';
import { KeyedQueue } from '../util/keyed-queue.js';
import { type InterfaceRules, rulesForPod } from './compute.js';
import {
  MNP_GROUP,
  MNP_PLURAL,
  type LabelSelector,
  type MultiNetworkPolicy,
  type Peer,
  type PolicyNamespace,
  type PolicyPod,
  type PolicySandbox,
  matches,
  parsePolicy,
  parsePolicyNamespace,
  parsePolicyPod,
} from './model.js';
import { applyTable, renderTable } from './nft.js';
import { type WatchSpec, watchKey, watchesFor } from './watches.js';
import { PolicyCache } from './world.js';

export interface PolicyObserver {
  /** A pod's table replaced: how long since the change that asked for it, and its rule count. */
  synced(pod: string, seconds: number, rules: number): void;
  failed(pod: string, error: string): void;
  forgot(pod: string): void;
  /** An interface a policy selects that cannot be filtered (no kernel interface in the pod: DPDK/vfio); a Warning Event on the policy says so too. */
  unfilterable(policy: MultiNetworkPolicy, pod: PolicySandbox, ifName: string, why: string): void;
  log(msg: string, fields: Record<string, unknown>): void;
}

interface Local {
  sandbox: PolicySandbox;
  /** The table last put in its netns ('' = none), undefined before the first sync. */
  installed?: string;
  dirtySince?: number;
  rules: number;
  reported: Set<string>;
}

type Kept<K extends string, V> = { metadata: { name: string; namespace?: string; resourceVersion?: string } } & Record<K, V>;

/** One peer watch: the informer and the spec it was started for. */
interface PeerWatch {
  spec: WatchSpec;
  informer: Informer<Kept<'pod', PolicyPod>> | Informer<Kept<'ns', PolicyNamespace>>;
}

const key = (ns: string, name: string) => `${ns}/${name}`;
/** The source name of the node's own pods in the cache. */
const NODE = 'node';

/** Whether a peer of `policy` selects `pod` (namespace labels as the cache has them). */
function peerSelects(world: PolicyCache, policy: MultiNetworkPolicy, peer: Peer, pod: PolicyPod): boolean {
  if (peer.ipBlock) return false;
  if (peer.namespaceSelector) {
    const ns = world.namespace(pod.namespace);
    if (!ns || !matches(peer.namespaceSelector, ns.labels)) return false;
  } else if (pod.namespace !== policy.namespace) return false;
  return !peer.podSelector || matches(peer.podSelector, pod.labels);
}

const relevant = (p: PolicyPod | undefined) => (p ? JSON.stringify([p.labels, p.networks, p.namedPorts]) : '');
const keptPod = (raw: unknown): Kept<'pod', PolicyPod> => {
  const pod = parsePolicyPod(raw);
  return { metadata: { name: pod.name, namespace: pod.namespace, ...(pod.resourceVersion ? { resourceVersion: pod.resourceVersion } : {}) }, pod };
};
const keptNamespace = (raw: unknown): Kept<'ns', PolicyNamespace> => {
  const ns = parsePolicyNamespace(raw);
  return { metadata: { name: ns.name, ...(ns.resourceVersion ? { resourceVersion: ns.resourceVersion } : {}) }, ns };
};

export interface PolicyEngineOptions {
  api: ApiConfig;
  nodeName: string;
  nft: string;
  observer: PolicyObserver;
  /** Tables replaced at once. */
  concurrency?: number;
  /** Told of every API request and watch event: the daemon counts them per component. */
  traffic?: ApiTraffic;
  /** How long an ADD waits for the policy list, or for the peers of the policies selecting its pod. */
  waitMs?: number;
}

export class PolicyEngine {
  private readonly world = new PolicyCache();
  private readonly locals = new Map<string, Local>();
  /** Each sandbox's table replacements, one at a time: the last computed is the last installed. */
  private readonly installs = new KeyedQueue();
  private readonly client: ApiClient;
  private policyInformer: Informer<Kept<'policy', MultiNetworkPolicy | undefined>> | undefined;
  private nodePods: Informer<Kept<'pod', PolicyPod>> | undefined;
  private readonly peerWatches = new Map<string, PeerWatch>();
  /** No MultiNetworkPolicy CRD: no policy can exist. */
  private noCrd = false;
  private stopped = false;
  private flushing: Promise<void> | undefined;
  private flushAgain = false;
  private reconciling = false;
  private readonly concurrency: number;

  constructor(private readonly o: PolicyEngineOptions) {
    this.client = new ApiClient(o.api, 30_000, o.traffic, 'plexus-daemon/policy');
    this.concurrency = o.concurrency ?? 4;
  }

  /** Starts the policy and node-pod informers; resolves once each has tried its first list. */
  async start(): Promise<void> {
    const version = await this.servedVersion();
    this.policyInformer = new Informer<Kept<'policy', MultiNetworkPolicy | undefined>>(this.client, {
      path: `/apis/${MNP_GROUP}/${version}/${MNP_PLURAL}`,
      keep: (raw) => {
        const md = (raw as { metadata: { name: string; namespace: string; resourceVersion?: string } }).metadata;
        try {
          return { metadata: md, policy: parsePolicy(raw) };
        } catch (err) {
          // A policy that does not parse is applied to nothing, and said so (the API server's schema
          // lets through what NetworkPolicy's validation would refuse).
          this.o.observer.log('MultiNetworkPolicy refused', { policy: `${md.namespace}/${md.name}`, error: (err as Error).message });
          return { metadata: md, policy: undefined };
        }
      },
      onChange: (obj, gone) => this.policyChanged(obj.metadata.namespace ?? '', obj.metadata.name, gone ? undefined : obj.policy),
      onError: (err) => {
        this.noCrd = err instanceof ApiError && err.status === 404;
        if (!this.noCrd) this.o.observer.log('policy informer list/watch failed', { informer: 'multi-networkpolicies', error: err.message });
      },
    });
    // The node's own pods: their labels say which policies select them (spec.nodeName is indexed by the watch cache).
    this.nodePods = new Informer(this.client, {
      path: '/api/v1/pods',
      query: { fieldSelector: `spec.nodeName=${this.o.nodeName}` },
      keep: keptPod,
      onChange: (obj, gone) => {
        this.podSeen(NODE, obj.pod, gone);
        this.reconcileSoon();
      },
      onError: (err) => this.o.observer.log('policy informer list/watch failed', { informer: 'pods of the node', error: err.message }),
    });
    await Promise.all([this.policyInformer.start(), this.nodePods.start()]);
  }

  /** v1beta2 (endPort) where the CRD serves it, else v1beta1. */
  private async servedVersion(): Promise<string> {
    try {
      const group = await this.client.get<{ versions?: { version: string }[] }>(`/apis/${MNP_GROUP}`);
      return group.versions?.some((v) => v.version === 'v1beta2') ? 'v1beta2' : 'v1beta1';
    } catch {
      return 'v1beta1';
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const all = [this.policyInformer, this.nodePods, ...[...this.peerWatches.values()].map((w) => w.informer)];
    this.peerWatches.clear();
    await Promise.all(all.map((i) => i?.stop()));
  }

  /** Whether every policy is known (listed, or known not to exist): until then an ADD cannot know its rules. */
  get ready(): boolean {
    return this.policyInformer?.listed === true || this.noCrd;
  }

  /** What /debug and the scale bench read: how much of the cluster this node holds, and which watches it keeps. */
  stats(): { policies: number; pods: number; namespaces: number; watches: string[] } {
    let policies = 0;
    for (const inNs of this.world.policies.values()) policies += inNs.size;
    return { policies, pods: this.world.podCount(), namespaces: this.world.namespaceCount(), watches: [...this.peerWatches.keys()] };
  }

  /**
   * Marks the node's pods that any of `policies` selects: only their tables can change. A pod whose
   * labels are not known (yet) is marked too.
   */
  private markSelectedBy(policies: (MultiNetworkPolicy | undefined)[], since: number): void {
    const by = policies.filter((p): p is MultiNetworkPolicy => p !== undefined);
    if (!by.length) return;
    for (const l of this.locals.values()) {
      if (l.dirtySince !== undefined) continue;
      const labels = this.world.pod(l.sandbox.namespace, l.sandbox.name)?.labels;
      if (!labels || by.some((p) => p.namespace === l.sandbox.namespace && matches(p.podSelector, labels))) l.dirtySince = since;
    }
  }

  private policyChanged(ns: string, name: string, policy: MultiNetworkPolicy | undefined): void {
    const old = this.world.putPolicy(ns, name, policy);
    this.markSelectedBy([old, policy], performance.now());
    this.reconcileSoon();
    this.schedule();
  }

  /** A watch (`source`) saw a pod come, change or go. */
  private podSeen(source: string, pod: PolicyPod, gone: boolean): void {
    const { old, now } = this.world.holdPod(source, pod.namespace, pod.name, gone ? undefined : pod);
    if (relevant(old) === relevant(now)) return;
    const at = performance.now();
    for (const l of this.locals.values()) if (l.sandbox.namespace === pod.namespace && l.sandbox.name === pod.name) l.dirtySince ??= at;
    this.markPeersOf([old, now], at);
    this.schedule();
  }

  /** Every policy with a rule whose peers `selects`. */
  private policiesWithPeer(selects: (policy: MultiNetworkPolicy, peer: Peer) => boolean): MultiNetworkPolicy[] {
    const out: MultiNetworkPolicy[] = [];
    for (const p of this.world.allPolicies()) if ([...(p.ingress ?? []), ...(p.egress ?? [])].some((r) => r.peers.some((peer) => selects(p, peer)))) out.push(p);
    return out;
  }

  /** Marks the node's pods selected by policies that have one of `pods` (before or after a change) as a peer. */
  private markPeersOf(pods: (PolicyPod | undefined)[], now: number): void {
    const known = pods.filter((v): v is PolicyPod => v !== undefined);
    this.markSelectedBy(
      this.policiesWithPeer((p, peer) => known.some((v) => peerSelects(this.world, p, peer, v))),
      now,
    );
  }

  private namespaceSeen(source: string, ns: PolicyNamespace, gone: boolean): void {
    const { old, now } = this.world.holdNamespace(source, ns, !gone);
    if (JSON.stringify(old?.labels) === JSON.stringify(now?.labels)) return;
    // Namespace labels matter only to namespaceSelector peers (and to which namespaces' pods are watched).
    this.markSelectedBy(
      this.policiesWithPeer((_, peer) => peer.namespaceSelector !== undefined),
      performance.now(),
    );
    this.reconcileSoon();
    this.schedule();
  }

  /** The policies that select a pod of this node (known from the node's pod watch, or from an ADD). */
  private activePolicies(): MultiNetworkPolicy[] {
    const labelsHere: { namespace: string; labels: Record<string, string> }[] = [];
    for (const o of this.nodePods?.list() ?? []) labelsHere.push(o.pod);
    for (const l of this.locals.values()) {
      const p = this.world.pod(l.sandbox.namespace, l.sandbox.name);
      if (p) labelsHere.push(p);
    }
    return [...this.world.allPolicies()].filter((p) => labelsHere.some((pod) => pod.namespace === p.namespace && matches(p.podSelector, pod.labels)));
  }

  private wantedWatches(policies: MultiNetworkPolicy[]): WatchSpec[] {
    const matching = (sel: LabelSelector) => [...this.world.namespaces()].filter((n) => matches(sel, n.labels)).map((n) => n.name);
    return watchesFor(policies, matching);
  }

  private reconcileSoon(): void {
    if (this.reconciling || this.stopped) return;
    this.reconciling = true;
    setImmediate(() => {
      this.reconciling = false;
      if (!this.stopped) this.reconcile();
    });
  }

  /** Starts the peer watches the active policies need and stops those they no longer need (forgetting what only they held). */
  private reconcile(): void {
    const want = new Map(this.wantedWatches(this.activePolicies()).map((w) => [watchKey(w), w]));
    for (const [k, w] of [...this.peerWatches]) {
      if (want.has(k)) continue;
      this.peerWatches.delete(k);
      void w.informer.stop();
      if (w.spec.kind === 'pods') for (const o of (w.informer as Informer<Kept<'pod', PolicyPod>>).list()) this.podSeen(k, o.pod, true);
      else for (const o of (w.informer as Informer<Kept<'ns', PolicyNamespace>>).list()) this.namespaceSeen(k, o.ns, true);
    }
    for (const [k, spec] of want) if (!this.peerWatches.has(k)) this.startWatch(k, spec);
  }

  private startWatch(k: string, spec: WatchSpec): void {
    const query = spec.labelSelector ? { labelSelector: spec.labelSelector } : undefined;
    const onError = (err: Error) => this.o.observer.log('policy informer list/watch failed', { informer: k, error: err.message });
    // Events of a watch already stopped are not this engine's any more.
    const live = () => this.peerWatches.get(k)?.informer === informer;
    const informer: PeerWatch['informer'] =
      spec.kind === 'pods'
        ? new Informer(this.client, { path: spec.path, ...(query ? { query } : {}), keep: keptPod, onError, onChange: (o, gone) => live() && this.podSeen(k, o.pod, gone) })
        : // A namespace is its labels to a policy: metadata only.
          new Informer(this.client, {
            path: spec.path,
            ...(query ? { query } : {}),
            metadataOnly: true,
            keep: keptNamespace,
            onError,
            onChange: (o, gone) => live() && this.namespaceSeen(k, o.ns, gone),
          });
    this.peerWatches.set(k, { spec, informer });
    void informer.start();
  }

  /** Whether every peer watch the policies need has listed (a watch not started yet is started now). */
  private peersKnown(policies: MultiNetworkPolicy[]): boolean {
    let known = true;
    for (const spec of this.wantedWatches(policies)) {
      const k = watchKey(spec);
      if (!this.peerWatches.has(k)) this.startWatch(k, spec);
      if (!this.peerWatches.get(k)!.informer.listed) known = false;
    }
    return known;
  }

  private schedule(): void {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.flush())
      .finally(() => {
        this.flushing = undefined;
        if (this.flushAgain) {
          this.flushAgain = false;
          this.schedule();
        }
      });
  }

  private async flush(): Promise<void> {
    const dirty = [...this.locals.values()].filter((l) => l.dirtySince !== undefined);
    let next = 0;
    const worker = async () => {
      while (next < dirty.length) {
        const l = dirty[next++]!;
        const since = l.dirtySince!;
        l.dirtySince = undefined;
        // Detached meanwhile (its DEL), or its netns already gone: nothing to install.
        if (this.locals.get(l.sandbox.containerID) !== l || !existsSync(l.sandbox.netns)) continue;
        try {
          await this.sync(l, since);
        } catch (err) {
          if (this.locals.get(l.sandbox.containerID) !== l) continue;
          l.dirtySince ??= since;
          this.o.observer.failed(key(l.sandbox.namespace, l.sandbox.name), (err as Error).message);
          // Tried again with the next change, or in a second.
          setTimeout(() => this.schedule(), 1000).unref();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, dirty.length) }, worker));
  }

  /** The pod as policy sees it: labels from the API, attachments from its ADD. */
  private podOf(s: PolicySandbox): PolicyPod | undefined {
    const known = this.world.pod(s.namespace, s.name);
    if (!known || (s.uid && known.uid && known.uid !== s.uid)) return undefined;
    return { ...known, networks: s.networks };
  }

  /** What the sandbox's table should be now; undefined while its pod is not known (the table stays as it is). */
  desired(s: PolicySandbox, pod = this.podOf(s)): { table: string; interfaces: InterfaceRules[] } | undefined {
    if (!pod) return undefined;
    const present = this.linksOf(s.netns);
    const interfaces = rulesForPod(this.world, pod).filter((iface) => {
      if (present.has(iface.ifName)) return true;
      const local = this.locals.get(s.containerID);
      const why = `no kernel interface ${iface.ifName} in the pod (a userspace DPDK/vfio device?)`;
      for (const name of [...(iface.ingress?.policies ?? []), ...(iface.egress?.policies ?? [])]) {
        const [ns = '', n = ''] = name.split('/');
        const policy = this.world.policies.get(ns)?.get(n);
        const said = `${name} ${iface.ifName}`;
        if (policy && !local?.reported.has(said)) {
          local?.reported.add(said);
          this.o.observer.unfilterable(policy, s, iface.ifName, why);
          void this.warn(policy, `not enforced on pod ${s.namespace}/${s.name} interface ${iface.ifName} (node ${this.o.nodeName}): ${why}`);
        }
      }
      return false;
    });
    return { table: renderTable(interfaces), interfaces };
  }

  /** A Warning Event on the policy: where users look for why it does not hold. */
  private async warn(policy: MultiNetworkPolicy, message: string): Promise<void> {
    const now = new Date().toISOString();
    await this.client
      .post(`/api/v1/namespaces/${encodeURIComponent(policy.namespace)}/events`, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${policy.name}.`, namespace: policy.namespace },
        involvedObject: { apiVersion: `${MNP_GROUP}/v1beta1`, kind: 'MultiNetworkPolicy', name: policy.name, namespace: policy.namespace, ...(policy.uid ? { uid: policy.uid } : {}) },
        reason: 'PolicyNotEnforced',
        message,
        type: 'Warning',
        source: { component: 'plexus-daemon', host: this.o.nodeName },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      })
      .catch((err: Error) => this.o.observer.log('policy Event not posted', { policy: `${policy.namespace}/${policy.name}`, error: err.message }));
  }

  private linksOf(netns: string): Set<string> {
    try {
      return new Set(nativeAddon().linkNames(netns));
    } catch {
      return new Set();
    }
  }

  /** Computes the sandbox's table and installs it if it changed; after any replacement of it still running. */
  private sync(l: Local, since: number, pod?: PolicyPod): Promise<void> {
    return this.installs.run(l.sandbox.containerID, async () => {
      const want = this.desired(l.sandbox, pod ?? this.podOf(l.sandbox));
      if (!want || want.table === l.installed) return;
      const { table, interfaces } = want;
      await applyTable(this.o.nft, l.sandbox.netns, table);
      l.installed = table;
      l.rules = interfaces.reduce((n, i) => n + (i.ingress?.allow.length ?? 0) + (i.egress?.allow.length ?? 0), 0);
      this.o.observer.synced(key(l.sandbox.namespace, l.sandbox.name), (performance.now() - since) / 1000, l.rules);
    });
  }

  /**
   * A sandbox the meta plugin has just attached: its table is in place when this resolves. Throws when
   * the policies, or the peers of those selecting the pod, are not known in time, or the table cannot be
   * installed (the ADD then fails and is undone). A pod no policy selects waits for the policy list only.
   */
  async attached(s: PolicySandbox): Promise<void> {
    const since = performance.now();
    const waitMs = this.o.waitMs ?? 5000;
    if (!(await this.until(() => this.ready, waitMs))) throw new Error('the MultiNetworkPolicies are not known yet (the API server cannot be listed)');
    let pod = this.podOf(s);
    // Only a policy of its namespace for one of its networks can select it: with none, its labels do not matter.
    const candidates = [...this.world.policiesIn(s.namespace)].filter((p) => p.networks.some((n) => s.networks.some((x) => x.network === n)));
    if (!pod && candidates.length) pod = await this.readPod(s);
    // A new netns has no table: nothing to write when no policy selects the pod.
    const l: Local = { sandbox: s, installed: '', rules: 0, reported: new Set() };
    this.locals.set(s.containerID, l);
    this.world.localNetworks.set(key(s.namespace, s.name), s.networks);
    if (!pod) return;
    const selecting = candidates.filter((p) => matches(p.podSelector, pod.labels));
    try {
      if (selecting.length) {
        this.reconcileSoon();
        if (!(await this.until(() => this.peersKnown(selecting), waitMs)))
          throw new Error(`the peers of ${selecting.map((p) => `${p.namespace}/${p.name}`).join(', ')} are not known yet (their pods cannot be listed)`);
      }
      await this.sync(l, since, pod);
    } catch (err) {
      this.detached(s.containerID);
      throw err;
    }
    // Its addresses are peers of the node's other pods now (ahead of its network-status).
    this.markPeersOf([pod], since);
    l.dirtySince = undefined;
    this.schedule();
  }

  /** Polls `ok` every 50 ms for up to `ms`: whether it held. */
  private async until(ok: () => boolean, ms: number): Promise<boolean> {
    for (const deadline = Date.now() + ms; !ok(); await new Promise((r) => setTimeout(r, 50))) if (Date.now() >= deadline) return false;
    return true;
  }

  /** A pod not in the informer yet (created a moment ago), read once; undefined when the API has no such pod. */
  private async readPod(s: PolicySandbox): Promise<PolicyPod | undefined> {
    let raw: unknown;
    try {
      raw = await this.client.get<unknown>(`/api/v1/namespaces/${encodeURIComponent(s.namespace)}/pods/${encodeURIComponent(s.name)}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      // Not a Kubernetes pod (a runtime used without the kubelet): no policy can name it.
      this.o.observer.log('no such pod in the API: no MultiNetworkPolicy applies to its sandbox', { pod: key(s.namespace, s.name), containerID: s.containerID });
      return undefined;
    }
    const read = parsePolicyPod(raw);
    if (s.uid && read.uid && read.uid !== s.uid) throw new Error(`pod ${s.namespace}/${s.name} is not the one of this sandbox (UID ${read.uid}, not ${s.uid})`);
    // A pod of this node: the node's pod watch holds it from now on (and lets it go when it is deleted).
    this.world.holdPod(NODE, s.namespace, s.name, read);
    return { ...read, networks: s.networks };
  }

  /** The sandbox is being torn down: nothing more to keep for it (its netns goes with its rules). */
  detached(containerID: string): void {
    const l = this.locals.get(containerID);
    if (!l) return;
    this.locals.delete(containerID);
    const k = key(l.sandbox.namespace, l.sandbox.name);
    if ([...this.locals.values()].every((o) => key(o.sandbox.namespace, o.sandbox.name) !== k)) this.world.localNetworks.delete(k);
    this.o.observer.forgot(k);
    this.reconcileSoon();
  }

  /**
   * At start: the node's sandboxes from the attachment store. Their tables (left in place while the
   * daemon was down) are recomputed against the cluster as it is now and replaced where they differ.
   */
  adopt(sandboxes: PolicySandbox[]): void {
    const now = performance.now();
    for (const s of sandboxes) {
      this.locals.set(s.containerID, { sandbox: s, dirtySince: now, rules: 0, reported: new Set() });
      this.world.localNetworks.set(key(s.namespace, s.name), s.networks);
    }
    this.reconcileSoon();
    this.schedule();
  }

  /** What `plexusctl policy explain` and /debug read: each local pod's interfaces and their rules. */
  explain(namespace: string, name: string): { containerID: string; interfaces: InterfaceRules[]; table: string }[] {
    return [...this.locals.values()]
      .filter((l) => l.sandbox.namespace === namespace && l.sandbox.name === name)
      .map((l) => ({ containerID: l.sandbox.containerID, interfaces: this.desired(l.sandbox)?.interfaces ?? [], table: l.installed ?? '' }));
  }
}
