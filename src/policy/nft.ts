/**
 * A pod's policy as one nftables table in its netns (`inet plexus_policy`), replaced whole in one
 * `nft -f` transaction: the kernel switches from the old rules to the new at once, never a moment with
 * half of them. Per filtered interface, a chain per direction: replies of allowed connections
 * (conntrack), IPv6 neighbour discovery and DHCP pass first; then the policies' accepts; then drop.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { inNetnsSync, openNetns } from '../net/netns.js';
import { spawnCollect } from '../util/native.js';
import type { AllowLine, InterfaceRules } from './compute.js';

export const POLICY_TABLE = 'plexus_policy';

/** Allowed on a filtered interface whatever the policies say (docs/policy.md): without them the link itself breaks. */
const ALWAYS_IN = [
  'icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept comment "IPv6 neighbour discovery"',
  'udp sport 67 udp dport 68 accept comment "DHCPv4 replies"',
  'udp sport 547 udp dport 546 accept comment "DHCPv6 replies"',
];
const ALWAYS_OUT = [
  'icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept comment "IPv6 neighbour discovery"',
  'udp sport 68 udp dport 67 accept comment "DHCPv4 requests"',
  'udp sport 546 udp dport 547 accept comment "DHCPv6 requests"',
];

const quote = (s: string): string => `"${s.replace(/[^A-Za-z0-9 ./:_\-[\]@,]/g, '_').slice(0, 120)}"`;
const set = (items: string[]): string => (items.length === 1 ? items[0]! : `{ ${items.join(', ')} }`);

/** One allow line as an nft rule; `dir` says which address is the peer's. */
export function nftRule(line: AllowLine, dir: 'ingress' | 'egress'): string {
  const parts: string[] = [];
  const side = dir === 'ingress' ? 'saddr' : 'daddr';
  if (line.family && line.addrs) {
    const fam = line.family === 4 ? 'ip' : 'ip6';
    parts.push(`${fam} ${side} ${set(line.addrs)}`);
    if (line.except?.length) parts.push(`${fam} ${side} != ${set(line.except)}`);
  }
  if (line.protocol) {
    const proto = line.protocol.toLowerCase();
    parts.push(line.ports ? `${proto} dport ${set(line.ports)}` : `meta l4proto ${proto}`);
  }
  parts.push(`accept comment ${quote(line.origin)}`);
  return parts.join(' ');
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

/** The table's text: what `nft list` would show, minus handles. Empty when nothing is filtered. */
export function renderTable(interfaces: InterfaceRules[]): string {
  if (!interfaces.length) return '';
  const hooks = { ingress: [] as string[], egress: [] as string[] };
  const chains: string[] = [];
  interfaces.forEach((iface, i) => {
    if (!IFNAME.test(iface.ifName)) throw new Error(`interface name ${JSON.stringify(iface.ifName)} cannot be filtered`);
    for (const dir of ['ingress', 'egress'] as const) {
      const rules = iface[dir];
      if (!rules) continue;
      const chain = `if${i}_${dir === 'ingress' ? 'in' : 'out'}`;
      hooks[dir].push(`${dir === 'ingress' ? 'iifname' : 'oifname'} "${iface.ifName}" jump ${chain}`);
      chains.push(
        [
          `  chain ${chain} {`,
          `    comment ${quote(`${iface.network} ${dir}: ${rules.policies.join(' ')}`)}`,
          '    ct state established,related accept',
          '    ct state invalid drop',
          ...(dir === 'ingress' ? ALWAYS_IN : ALWAYS_OUT).map((r) => `    ${r}`),
          ...rules.allow.map((l) => `    ${nftRule(l, dir)}`),
          `    drop comment ${quote(`isolated by ${rules.policies.join(' ')}`)}`,
          '  }',
        ].join('\n'),
      );
    }
  });
  const base = (name: string, hook: string, jumps: string[]) =>
    jumps.length ? [`  chain ${name} {`, `    type filter hook ${hook} priority filter; policy accept;`, ...jumps.map((j) => `    ${j}`), '  }'].join('\n') : undefined;
  const body = [base('ingress', 'input', hooks.ingress), base('egress', 'output', hooks.egress), ...chains].filter(Boolean).join('\n');
  const digest = createHash('sha256').update(body).digest('hex').slice(0, 16);
  return `table inet ${POLICY_TABLE} {\n  comment "plexus ${digest}"\n${body}\n}\n`;
}

/** The transaction that makes the netns hold exactly `table` (or no table when it is empty). */
export function replaceScript(table: string): string {
  return `table inet ${POLICY_TABLE}\ndelete table inet ${POLICY_TABLE}\n${table}`;
}

/** Runs nft in a netns: the addon's posix_spawn starts it on the main thread, switched into the netns for that call only. */
export async function nftIn(nft: string, netns: string, args: string[], stdin = ''): Promise<string> {
  const ns = await openNetns(netns);
  let outcome;
  try {
    outcome = await inNetnsSync(ns, () => spawnCollect(nft, { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdin, 10_000, args));
  } finally {
    ns.close();
  }
  if (outcome.status !== 0) throw new Error(`nft ${args.join(' ')} in ${netns}: ${outcome.timedOut ? 'timed out' : outcome.stderr.toString().trim() || `exit ${String(outcome.status)}`}`);
  return outcome.stdout.toString();
}

/** Makes the pod's netns hold `table` (from renderTable), in one transaction. */
export function applyTable(nft: string, netns: string, table: string): Promise<string> {
  return nftIn(nft, netns, ['-f', '-'], replaceScript(table));
}

/** The table as the kernel has it, or '' when there is none. */
export async function installedTable(nft: string, netns: string): Promise<string> {
  try {
    return await nftIn(nft, netns, ['list', 'table', 'inet', POLICY_TABLE]);
  } catch (err) {
    if (/No such file or directory/.test((err as Error).message)) return '';
    throw err;
  }
}

/** The nft binary: the daemon's choice, never a request's. */
export function findNft(explicit?: string): string | undefined {
  for (const p of explicit ? [explicit] : ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft']) if (existsSync(p)) return p;
  return undefined;
}
