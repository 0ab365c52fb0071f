/**
 * Which pods and namespaces a node daemon must watch to enforce the MultiNetworkPolicies that select its
 * own pods: the peers of those policies, each through a watch the API server filters by the peer's own
 * label selector (docs/scale.md). A node whose pods no policy selects watches nothing here; a change to a
 * pod that no policy of the node's pods names never reaches the node.
 */
import type { LabelSelector, MultiNetworkPolicy } from './model.js';

/** One list+watch: a collection path and the label selector the server filters it by ('' for none). */
export interface WatchSpec {
  /** `pods` or `namespaces`: which store of the policy cache it feeds. */
  kind: 'pods' | 'namespaces';
  path: string;
  labelSelector: string;
}

export const watchKey = (w: WatchSpec): string => `${w.path}?${w.labelSelector}`;

/** A label selector as the API server's `labelSelector` query takes it ('' selects everything). */
export function selectorQuery(sel: LabelSelector): string {
  const terms = Object.entries(sel.matchLabels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`);
  for (const e of sel.matchExpressions) {
    const values = [...e.values].sort().join(',');
    if (e.operator === 'In') terms.push(`${e.key} in (${values})`);
    else if (e.operator === 'NotIn') terms.push(`${e.key} notin (${values})`);
    else if (e.operator === 'Exists') terms.push(e.key);
    else terms.push(`!${e.key}`);
  }
  return terms.join(',');
}

const nsPods = (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`;

/**
 * The watches the peers of `policies` need. A peer by pod labels alone: the policy's namespace's pods,
 * filtered by those labels. A peer with a namespaceSelector: the namespaces it selects (filtered by it)
 * and, with pod labels, the pods of the cluster filtered by them; without pod labels, every pod of each
 * namespace it selects now (`namespacesMatching`, from the namespace watches: the set follows them).
 */
export function watchesFor(policies: Iterable<MultiNetworkPolicy>, namespacesMatching: (sel: LabelSelector) => string[]): WatchSpec[] {
  const out = new Map<string, WatchSpec>();
  const add = (w: WatchSpec) => out.set(watchKey(w), w);
  for (const p of policies) {
    for (const rule of [...(p.ingress ?? []), ...(p.egress ?? [])]) {
      for (const peer of rule.peers) {
        if (peer.ipBlock) continue;
        const pods = peer.podSelector ? selectorQuery(peer.podSelector) : '';
        if (!peer.namespaceSelector) {
          add({ kind: 'pods', path: nsPods(p.namespace), labelSelector: pods });
          continue;
        }
        add({ kind: 'namespaces', path: '/api/v1/namespaces', labelSelector: selectorQuery(peer.namespaceSelector) });
        if (pods) add({ kind: 'pods', path: '/api/v1/pods', labelSelector: pods });
        else for (const ns of namespacesMatching(peer.namespaceSelector)) add({ kind: 'pods', path: nsPods(ns), labelSelector: '' });
      }
    }
  }
  return [...out.values()];
}
