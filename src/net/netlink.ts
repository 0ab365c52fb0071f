/**
 * The one interface Plexus uses for rtnetlink. `netlink` 0.3.0 sits behind it (pinned, single
 * maintainer): swap the implementation here and nothing else changes. Every error carries the
 * errno name (`code`), the operation and its arguments.
 */
import { createRequire } from 'node:module';
import type * as RtModule from 'netlink/dist/rt/rt.js';
import type { RtNetlinkSocket } from 'netlink/dist/rt/rt.js';
import type { Message } from 'netlink/dist/rt/structs.js';
import { NetError, macString, ipBytes, ipString, parseCidr } from './wire.js';
import { type Netns, hostNetnsPath, inNetnsSync, openNetns } from './netns.js';

export { NetError, parseCidr } from './wire.js';
import {
  IFLA_VFINFO_LIST,
  RTM_DELLINKPROP,
  RTM_GETLINK,
  RTM_NEWLINKPROP,
  RTM_SETLINK,
  type VfInfo,
  type VfSetting,
  decodeVfInfoList,
  encodeAltname,
  encodeGetVfs,
  encodeSetVf,
  parseAttrs,
  parseMac,
} from './vf.js';

// Deep import: the package index also loads nl80211 and wireguard codecs (tens of ms per process).
const { createRtNetlink } = createRequire(import.meta.url)('netlink/dist/rt/rt.js') as typeof RtModule;

const AF_INET = 2;
const AF_INET6 = 10;
const NLM_F_REPLACE = 0x100;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const RT_TABLE_MAIN = 254;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const DEFAULT_TIMEOUT_MS = 5000;

export interface LinkInfo {
  index: number;
  name: string;
  mac?: string;
  mtu: number;
  up: boolean;
  operstate?: number;
  altnames: string[];
  numVfs?: number;
}

export interface AddressInfo {
  /** CIDR, e.g. 10.1.0.5/24 */
  address: string;
  family: 4 | 6;
  scope: number;
}

export interface RouteSpec {
  dst: string;
  gw?: string;
  dev: string;
  table?: number;
  priority?: number;
  /** 0 universe (default), 253 link, 254 host */
  scope?: number;
}

export interface RouteInfo {
  dst: string;
  gw?: string;
  ifindex?: number;
  table: number;
  priority?: number;
  scope: number;
}

function errnoOf(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const m = /Request rejected: (\w+)/.exec(msg);
  if (m) return m[1] === 'ENOTSUP' ? 'EOPNOTSUPP' : m[1]!;
  if (/Timeout/.test(msg)) return 'ETIMEDOUT';
  return (err as { code?: string }).code ?? 'EIO';
}

/** An rtnetlink handle bound to one netns (the host's when opened without one). */
export class NetHandle {
  private constructor(
    private readonly sock: RtNetlinkSocket,
    readonly netnsPath: string,
  ) {}

  static async open(ns?: Netns): Promise<NetHandle> {
    if (!ns) return new NetHandle(createRtNetlink(), 'host');
    return new NetHandle(
      inNetnsSync(ns, () => createRtNetlink()),
      ns.path,
    );
  }

  /** Opens `path` just long enough to bind a socket inside it. */
  static async openPath(path: string): Promise<NetHandle> {
    const ns = await openNetns(path);
    try {
      return await NetHandle.open(ns);
    } finally {
      ns.close();
    }
  }

  close(): void {
    this.sock.socket.close();
  }

  private async call<T>(op: string, args: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof NetError) throw err;
      throw new NetError(`${op} ${args} in ${this.netnsPath}`, errnoOf(err), '');
    }
  }

  private opts(flags = 0): { timeout: number; flags: number } {
    return { timeout: DEFAULT_TIMEOUT_MS, flags };
  }

  async links(): Promise<LinkInfo[]> {
    const msgs = await this.call('list links', '', () => this.sock.getLinks(undefined, undefined, this.opts()));
    return msgs.map(toLinkInfo);
  }

  async findLink(name: string): Promise<LinkInfo | undefined> {
    try {
      return await this.link(name);
    } catch (err) {
      if (err instanceof NetError && err.code === 'ENODEV') return undefined;
      throw err;
    }
  }

  async link(name: string): Promise<LinkInfo> {
    const msgs = await this.call('get link', name, () => this.sock.getLink({}, { ifname: name }, this.opts()));
    const first = msgs[0];
    if (!first) throw new NetError(`get link ${name} in ${this.netnsPath}`, 'ENODEV', '');
    return toLinkInfo(first);
  }

  private async index(name: string): Promise<number> {
    return (await this.link(name)).index;
  }

  async setUp(name: string, up = true): Promise<void> {
    const index = await this.index(name);
    await this.call(up ? 'set up' : 'set down', name, () => this.sock.setLink({ index, flags: up ? { up: true } : {}, change: { up: true } }, {}, this.opts()));
  }

  async setMac(name: string, mac: string): Promise<void> {
    const index = await this.index(name);
    let bytes: Buffer;
    try {
      bytes = parseMac(mac);
    } catch (err) {
      throw new NetError(`set mac ${name}`, 'EINVAL', (err as Error).message);
    }
    await this.call('set mac', `${name} ${mac}`, () => this.sock.setLink({ index }, { address: bytes }, this.opts()));
  }

  async setMtu(name: string, mtu: number): Promise<void> {
    const index = await this.index(name);
    await this.call('set mtu', `${name} ${mtu}`, () => this.sock.setLink({ index }, { mtu }, this.opts()));
  }

  async rename(name: string, newName: string): Promise<void> {
    const index = await this.index(name);
    await this.call('rename', `${name} -> ${newName}`, () => this.sock.setLink({ index }, { ifname: newName }, this.opts()));
  }

  /**
   * Moves (and optionally renames) a link into `target` with one RTM_SETLINK. The kernel moves
   * first and renames second: when `newName` is taken in the target it answers EEXIST with the
   * link already moved under its old name. That half-done move is undone here before the error.
   */
  async moveTo(name: string, target: Netns, newName?: string): Promise<void> {
    const index = await this.index(name);
    const attrs = newName ? { netNsFd: target.fd, ifname: newName } : { netNsFd: target.fd };
    const what = `${name} -> ${target.path}${newName ? ` as ${newName}` : ''}`;
    try {
      await this.call('move link', what, () => this.sock.setLink({ index }, attrs, this.opts()));
    } catch (err) {
      if (newName && newName !== name && (await this.findLink(name)) === undefined) await this.moveBack(name, target);
      throw err;
    }
  }

  private async moveBack(name: string, from: Netns): Promise<void> {
    const there = await NetHandle.open(from);
    const home = await openNetns(this.netnsPath === 'host' ? hostNetnsPath() : this.netnsPath);
    try {
      if (await there.findLink(name)) await there.moveTo(name, home);
    } finally {
      there.close();
      home.close();
    }
  }

  async deleteLink(name: string): Promise<void> {
    const index = await this.index(name);
    await this.call('delete link', name, () => this.sock.delLink({ index }, {}, this.opts()));
  }

  async addAddress(name: string, cidr: string): Promise<void> {
    const index = await this.index(name);
    const { ip, prefix, family } = parseCidr(cidr);
    // IPv6 without NODAD stays tentative and unusable for a second or more.
    await this.call('add address', `${cidr} dev ${name}`, () =>
      this.sock.newAddress(
        { family: family === 4 ? AF_INET : AF_INET6, prefixlen: prefix, index, ...(family === 6 ? { flags: { nodad: true } } : {}) },
        { local: ip, address: ip },
        this.opts(NLM_F_CREATE | NLM_F_EXCL),
      ),
    );
  }

  async delAddress(name: string, cidr: string): Promise<void> {
    const index = await this.index(name);
    const { ip, prefix, family } = parseCidr(cidr);
    await this.call('delete address', `${cidr} dev ${name}`, () =>
      this.sock.delAddress({ family: family === 4 ? AF_INET : AF_INET6, prefixlen: prefix, index }, { local: ip, address: ip }, this.opts()),
    );
  }

  async addresses(name: string): Promise<AddressInfo[]> {
    const index = await this.index(name);
    return (await this.allAddresses()).filter((a) => a.index === index).map(({ index: _, ...a }) => a);
  }

  /** Every address of every link in this netns, with its link's index (one dump). */
  async allAddresses(): Promise<(AddressInfo & { index: number })[]> {
    const msgs = await this.call('list addresses', '', () => this.sock.getAddresses(undefined, undefined, this.opts()));
    return msgs.map((m) => {
      const bytes = m.attrs.local ?? m.attrs.address;
      return {
        index: m.data.index ?? 0,
        address: `${bytes ? ipString(bytes) : '?'}/${m.data.prefixlen ?? 0}`,
        family: m.data.family === AF_INET ? 4 : 6,
        scope: routeScope(m.data.scope as number | string | undefined),
      } as AddressInfo & { index: number };
    });
  }

  private routeMessage(r: RouteSpec, oif: number) {
    const { ip, prefix, family } = parseCidr(r.dst);
    const data = {
      family: family === 4 ? AF_INET : AF_INET6,
      dstLen: prefix,
      table: r.table !== undefined && r.table < 256 ? r.table : RT_TABLE_MAIN,
      protocol: 3 /* RTPROT_BOOT, as iproute2 */,
      scope: r.scope ?? (r.gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK),
      type: 1 /* unicast */,
    };
    const attrs: Record<string, unknown> = { oif };
    if (prefix > 0) attrs.dst = ip;
    if (r.gw) attrs.gateway = ipBytes(r.gw);
    if (r.priority !== undefined) attrs.priority = r.priority;
    if (r.table !== undefined) attrs.table = r.table;
    return { data, attrs };
  }

  async addRoute(r: RouteSpec): Promise<void> {
    const { data, attrs } = this.routeMessage(r, await this.index(r.dev));
    await this.call('add route', `${r.dst}${r.gw ? ` via ${r.gw}` : ''} dev ${r.dev}`, () => this.sock.newRoute(data as never, attrs as never, this.opts(NLM_F_CREATE | NLM_F_EXCL)));
  }

  async replaceRoute(r: RouteSpec): Promise<void> {
    const { data, attrs } = this.routeMessage(r, await this.index(r.dev));
    await this.call('replace route', `${r.dst} dev ${r.dev}`, () => this.sock.newRoute(data as never, attrs as never, this.opts(NLM_F_CREATE | NLM_F_REPLACE)));
  }

  async delRoute(r: RouteSpec): Promise<void> {
    const { data, attrs } = this.routeMessage(r, await this.index(r.dev));
    await this.call('delete route', `${r.dst} dev ${r.dev}`, () => this.sock.delRoute(data as never, attrs as never, this.opts()));
  }

  async routes(family: 4 | 6 = 4): Promise<RouteInfo[]> {
    const msgs = await this.call('list routes', `ipv${family}`, () => this.sock.getRoutes({ family: family === 4 ? AF_INET : AF_INET6 }, undefined, this.opts()));
    const max = family === 4 ? 32 : 128;
    return msgs
      .filter((m) => m.data.family === (family === 4 ? AF_INET : AF_INET6))
      .map((m) => {
        const route: RouteInfo = {
          dst: m.attrs.dst ? `${ipString(m.attrs.dst)}/${m.data.dstLen ?? max}` : family === 4 ? '0.0.0.0/0' : '::/0',
          table: m.attrs.table ?? m.data.table ?? RT_TABLE_MAIN,
          scope: routeScope(m.data.scope),
        };
        if (m.attrs.gateway) route.gw = ipString(m.attrs.gateway);
        if (m.attrs.oif !== undefined) route.ifindex = m.attrs.oif;
        if (m.attrs.priority !== undefined) route.priority = m.attrs.priority;
        return route;
      });
  }

  /** Applies one PF-side setting to VF `vf` of PF `pf` (hand-encoded, see vf.ts). */
  async setVf(pf: string, vf: number, setting: VfSetting): Promise<void> {
    const index = await this.index(pf);
    let payload: Buffer;
    try {
      payload = encodeSetVf(index, vf, setting);
    } catch (err) {
      throw new NetError(`set vf ${pf} vf ${vf} ${setting.kind}`, 'EINVAL', (err as Error).message);
    }
    await this.call(`set vf ${setting.kind}`, `${pf} vf ${vf} ${JSON.stringify(setting)}`, () => this.sock.socket.request(RTM_SETLINK, payload, this.opts()));
  }

  /** Removes an alternative name (RTM_DELLINKPROP); the kernel may keep a renamed link's old name as one. */
  async delAltname(name: string, altname: string): Promise<void> {
    const index = await this.index(name);
    await this.call('delete altname', `${altname} of ${name}`, () => this.sock.socket.request(RTM_DELLINKPROP, encodeAltname(index, altname), this.opts()));
  }

  /** Adds an alternative name (RTM_NEWLINKPROP), e.g. one restored on DEL. */
  async addAltname(name: string, altname: string): Promise<void> {
    const index = await this.index(name);
    await this.call('add altname', `${altname} to ${name}`, () => this.sock.socket.request(RTM_NEWLINKPROP, encodeAltname(index, altname), this.opts(NLM_F_CREATE | NLM_F_EXCL)));
  }

  /** The PF's VF table, decoded from the raw reply (the package's own parser rejects 16-byte VLAN entries). */
  async vfs(pf: string): Promise<VfInfo[]> {
    const index = await this.index(pf);
    const [msgs] = await this.call('get vfs', pf, () => this.sock.socket.request(RTM_GETLINK, encodeGetVfs(index), this.opts()));
    const reply = msgs[0];
    if (!reply) return [];
    const attrs = parseAttrs(reply.data.subarray(16));
    const list = attrs.find(([t]) => t === IFLA_VFINFO_LIST)?.[1];
    return list ? decodeVfInfoList(list) : [];
  }
}

const SCOPES: Record<string, number> = { UNIVERSE: 0, SITE: 200, LINK: 253, HOST: 254, NOWHERE: 255 };
function routeScope(scope: number | string | undefined): number {
  if (typeof scope === 'number') return scope;
  return scope === undefined ? 0 : (SCOPES[scope] ?? 0);
}

function toLinkInfo(m: Message): LinkInfo {
  const msg = m as Extract<Message, { kind: 'link' }>;
  const data = msg.data as { index?: number; flags?: { up?: boolean } };
  const attrs = msg.attrs as { ifname?: string; address?: Buffer; mtu?: number; operstate?: number; altIfname?: string; propList?: Buffer; numVf?: number };
  const altnames: string[] = [];
  if (attrs.propList) {
    for (const [type, payload] of parseAttrs(attrs.propList)) {
      if (type === 53 /* IFLA_ALT_IFNAME */) altnames.push(payload.toString('utf8').replace(/\0+$/, ''));
    }
  }
  const info: LinkInfo = {
    index: data.index ?? 0,
    name: attrs.ifname ?? '',
    mtu: attrs.mtu ?? 0,
    up: Boolean(data.flags?.up),
    altnames,
  };
  const mac = macString(attrs.address);
  if (mac) info.mac = mac;
  if (attrs.operstate !== undefined) info.operstate = attrs.operstate;
  if (attrs.numVf !== undefined) info.numVfs = attrs.numVf;
  return info;
}
