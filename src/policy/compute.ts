/**
 * What a pod's interfaces let through, from the MultiNetworkPolicies that select it: NetworkPolicy's
 * semantics per network. A pod is isolated for a direction on an interface once a policy for that
 * interface's network selects it with that policy type; then only what some rule of those policies
 * allows passes (rules OR'd, across policies). Peers are the addresses pods have on that same network
 * (network-status), never their cluster IP.
 */
import { formatCidr } from '../ipam/addr.js';
import { type MultiNetworkPolicy, type Peer, type PolicyNamespace, type PolicyPod, type PolicyPort, type PolicyRule, type Protocol, matches } from './model.js';

/** The cluster as policy sees it (the daemon's informers, or lists read by `plexusctl policy explain`). */
export interface PolicyWorld {
  policiesIn(namespace: string): Iterable<MultiNetworkPolicy>;
  podsIn(namespace: string): Iterable<PolicyPod>;
  namespaces(): Iterable<PolicyNamespace>;
}

export type Direction = 'ingress' | 'egress';

/** One accept rule: traffic matching all its parts passes. Undefined parts match anything. */
export interface AllowLine {
  /** Peer addresses (or CIDRs) of one family; with `except`, CIDRs left out. */
  family?: 4 | 6;
  addrs?: string[];
  except?: string[];
  protocol?: Protocol;
  /** `80` or `8000-8080`. */
  ports?: string[];
  /** Which policy rule it comes from: `ns/name ingress[0]`. */
  origin: string;
}

export interface DirectionRules {
  /** The policies isolating the interface in this direction. */
  policies: string[];
  allow: AllowLine[];
}

export interface InterfaceRules {
  ifName: string;
  network: string;
  ingress?: DirectionRules;
  egress?: DirectionRules;
}

/** Per interface of the pod selected by at least one policy; interfaces no policy selects are left open. */
export function rulesForPod(world: PolicyWorld, pod: PolicyPod): InterfaceRules[] {
  const out: InterfaceRules[] = [];
  const policies = [...world.policiesIn(pod.namespace)].filter((p) => matches(p.podSelector, pod.labels));
  for (const net of pod.networks) {
    if (!net.ifName) continue;
    const applying = policies.filter((p) => p.networks.includes(net.network));
    if (!applying.length) continue;
    const entry: InterfaceRules = { ifName: net.ifName, network: net.network };
    for (const dir of ['ingress', 'egress'] as const) {
      const isolating = applying.filter((p) => p[dir] !== undefined);
      if (!isolating.length) continue;
      entry[dir] = {
        policies: isolating.map((p) => `${p.namespace}/${p.name}`),
        allow: isolating.flatMap((p) => p[dir]!.flatMap((rule, i) => allowLines(world, p, rule, `${p.namespace}/${p.name} ${dir}[${i}]`, dir, pod, net.network))),
      };
    }
    if (entry.ingress || entry.egress) out.push(entry);
  }
  return out;
}

/** A peer side of a rule: any address, one family's addresses, or an ipBlock; with the pod whose named ports apply. */
interface PeerGroup {
  family?: 4 | 6;
  addrs?: string[];
  except?: string[];
  portsOf?: PolicyPod;
}

/** Pods a peer selects: by pod labels in the policy's namespace, or in the namespaces it selects. */
function peerPods(world: PolicyWorld, policy: MultiNetworkPolicy, peer: Peer): PolicyPod[] {
  const namespaces = peer.namespaceSelector ? [...world.namespaces()].filter((n) => matches(peer.namespaceSelector!, n.labels)).map((n) => n.name) : [policy.namespace];
  return namespaces.flatMap((ns) => [...world.podsIn(ns)].filter((p) => !peer.podSelector || matches(peer.podSelector, p.labels)));
}

function addressGroups(pods: PolicyPod[], network: string, portsOf: boolean): PeerGroup[] {
  const groups: PeerGroup[] = [];
  const add = (members: PolicyPod[], owner?: PolicyPod) => {
    for (const family of [4, 6] as const) {
      const addrs = [...new Set(members.flatMap((p) => p.networks.filter((n) => n.network === network).flatMap((n) => n.ips)).filter((ip) => ip.includes(':') === (family === 6)))].sort();
      if (addrs.length) groups.push({ family, addrs, ...(owner ? { portsOf: owner } : {}) });
    }
  };
  // Named ports of an egress rule are the peer's own: one group per peer pod then.
  if (portsOf) for (const p of pods) add([p], p);
  else add(pods);
  return groups;
}

function allowLines(world: PolicyWorld, policy: MultiNetworkPolicy, rule: PolicyRule, origin: string, dir: Direction, pod: PolicyPod, network: string): AllowLine[] {
  const egressNamed = dir === 'egress' && rule.ports.some((p) => typeof p.port === 'string');
  const groups: PeerGroup[] = [];
  if (!rule.peers.length) groups.push({});
  const podPeers = new Map<string, PolicyPod>();
  for (const peer of rule.peers) {
    if (peer.ipBlock) {
      const b = peer.ipBlock;
      groups.push({ family: b.cidr.family, addrs: [formatCidr(b.cidr)], ...(b.except.length ? { except: b.except.map((e) => formatCidr(e.cidr)) } : {}) });
    } else for (const p of peerPods(world, policy, peer)) podPeers.set(`${p.namespace}/${p.name}`, p);
  }
  groups.push(...addressGroups([...podPeers.values()], network, egressNamed));
  const lines: AllowLine[] = [];
  for (const g of groups) {
    const owner = dir === 'ingress' ? pod : g.portsOf;
    for (const spec of portSpecs(rule.ports, owner)) {
      const { portsOf: _owner, ...peerPart } = g;
      lines.push({ ...peerPart, ...spec, origin });
    }
  }
  return lines;
}

/**
 * A rule's ports as (protocol, port list) pairs. No ports: any traffic. A named port resolves against
 * `owner`'s container ports (the selected pod for ingress, the peer for egress); one that does not
 * resolve matches nothing, as in NetworkPolicy.
 */
function portSpecs(ports: PolicyPort[], owner: PolicyPod | undefined): { protocol?: Protocol; ports?: string[] }[] {
  if (!ports.length) return [{}];
  const byProtocol = new Map<Protocol, Set<string> | 'any'>();
  for (const p of ports) {
    let text: string | undefined;
    if (typeof p.port === 'string') {
      const named = owner?.namedPorts.find((n) => n.name === p.port && n.protocol === p.protocol);
      if (!named) continue;
      text = String(named.port);
    } else if (p.port !== undefined) text = p.endPort !== undefined && p.endPort !== p.port ? `${p.port}-${p.endPort}` : String(p.port);
    const have = byProtocol.get(p.protocol);
    if (have === 'any') continue;
    if (text === undefined) byProtocol.set(p.protocol, 'any');
    else byProtocol.set(p.protocol, (have ?? new Set()).add(text));
  }
  return [...byProtocol].map(([protocol, set]) => (set === 'any' ? { protocol } : { protocol, ports: [...set] }));
}

/** A world from plain lists (`plexusctl policy explain`, tests). */
export function worldOf(policies: MultiNetworkPolicy[], pods: PolicyPod[], namespaces: PolicyNamespace[]): PolicyWorld {
  const by = <T extends { namespace: string }>(items: T[]) => {
    const m = new Map<string, T[]>();
    for (const i of items) m.set(i.namespace, [...(m.get(i.namespace) ?? []), i]);
    return m;
  };
  const p = by(policies);
  const q = by(pods);
  return { policiesIn: (ns) => p.get(ns) ?? [], podsIn: (ns) => q.get(ns) ?? [], namespaces: () => namespaces };
}
