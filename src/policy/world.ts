/**
 * The policy engine's view of the cluster: the MultiNetworkPolicies, and the pods and namespaces that
 * the node's watches brought in. A pod can come from several watches (the node's own pods, and each
 * peer selector that matches it): it is kept while any of them holds it, and forgotten with the last.
 */
import type { PolicyWorld } from './compute.js';
import type { MultiNetworkPolicy, PodNetwork, PolicyNamespace, PolicyPod } from './model.js';

const key = (ns: string, name: string) => `${ns}/${name}`;

/** What the sources of one object say of it: the latest value (all sources see the same object). */
interface Held<T> {
  value: T;
  sources: Set<string>;
}

export class PolicyCache implements PolicyWorld {
  readonly policies = new Map<string, Map<string, MultiNetworkPolicy>>();
  private readonly pods = new Map<string, Map<string, Held<PolicyPod>>>();
  private readonly namespaceMap = new Map<string, Held<PolicyNamespace>>();
  /** The node's own pods' attachments as their ADD made them: ahead of their network-status in the API. */
  readonly localNetworks = new Map<string, PodNetwork[]>();

  *policiesIn(ns: string): Iterable<MultiNetworkPolicy> {
    yield* this.policies.get(ns)?.values() ?? [];
  }
  *allPolicies(): Iterable<MultiNetworkPolicy> {
    for (const inNs of this.policies.values()) yield* inNs.values();
  }
  *podsIn(ns: string): Iterable<PolicyPod> {
    for (const { value: p } of this.pods.get(ns)?.values() ?? []) {
      const local = this.localNetworks.get(key(p.namespace, p.name));
      yield local ? { ...p, networks: local } : p;
    }
  }
  *namespaces(): Iterable<PolicyNamespace> {
    for (const h of this.namespaceMap.values()) yield h.value;
  }
  pod(ns: string, name: string): PolicyPod | undefined {
    return this.pods.get(ns)?.get(name)?.value;
  }
  namespace(name: string): PolicyNamespace | undefined {
    return this.namespaceMap.get(name)?.value;
  }
  podCount(): number {
    let n = 0;
    for (const inNs of this.pods.values()) n += inNs.size;
    return n;
  }
  namespaceCount(): number {
    return this.namespaceMap.size;
  }

  putPolicy(ns: string, name: string, policy: MultiNetworkPolicy | undefined): MultiNetworkPolicy | undefined {
    const inNs = this.policies.get(ns) ?? new Map<string, MultiNetworkPolicy>();
    const old = inNs.get(name);
    if (policy === undefined) inNs.delete(name);
    else inNs.set(name, policy);
    if (inNs.size) this.policies.set(ns, inNs);
    else this.policies.delete(ns);
    return old;
  }

  /** `source` says the pod is (or, undefined, is no longer) there: what the cache held before, and holds now. */
  holdPod(source: string, ns: string, name: string, pod: PolicyPod | undefined): { old?: PolicyPod; now?: PolicyPod } {
    const inNs = this.pods.get(ns) ?? new Map<string, Held<PolicyPod>>();
    const change = hold(inNs, source, name, pod);
    if (inNs.size) this.pods.set(ns, inNs);
    else this.pods.delete(ns);
    return change;
  }

  holdNamespace(source: string, ns: PolicyNamespace, present: boolean): { old?: PolicyNamespace; now?: PolicyNamespace } {
    return hold(this.namespaceMap, source, ns.name, present ? ns : undefined);
  }
}

/** One source's word on one object of `index`: kept while any source holds it. */
function hold<T>(index: Map<string, Held<T>>, source: string, name: string, value: T | undefined): { old?: T; now?: T } {
  const held = index.get(name);
  const old = held?.value;
  if (value !== undefined) {
    if (held) {
      held.value = value;
      held.sources.add(source);
    } else index.set(name, { value, sources: new Set([source]) });
    return { ...(old !== undefined ? { old } : {}), now: value };
  }
  if (!held) return {};
  held.sources.delete(source);
  if (held.sources.size) return { old: held.value, now: held.value };
  index.delete(name);
  return { old: held.value };
}
