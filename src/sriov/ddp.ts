/**
 * DDP (Dynamic Device Personalization) package names of Intel PFs, for the `ddpProfiles` selector:
 * devlink's "info" running version `fw.app.name` (generic netlink, as sriov-network-device-plugin reads
 * it); a simulated host has its own source. A PF without devlink info has none.
 */
import { createRequire } from 'node:module';
import type { HostInventory } from './discover.js';
import { attr, parseAttrs } from '../net/vf.js';

const GENL_ID_CTRL = 16;
const CTRL_CMD_GETFAMILY = 3;
const CTRL_ATTR_FAMILY_ID = 1;
const CTRL_ATTR_FAMILY_NAME = 2;
// include/uapi/linux/devlink.h
const DEVLINK_CMD_INFO_GET = 51;
const DEVLINK_ATTR_BUS_NAME = 1;
const DEVLINK_ATTR_DEV_NAME = 2;
const DEVLINK_ATTR_INFO_VERSION_RUNNING = 101;
const DEVLINK_ATTR_INFO_VERSION_NAME = 103;
const DEVLINK_ATTR_INFO_VERSION_VALUE = 104;
const FW_APP_NAME = 'fw.app.name';
const TIMEOUT_MS = 2000;

export interface DdpSource {
  profile(pfAddress: string): Promise<string | undefined>;
  close(): void;
}

const cstring = (s: string) => Buffer.from(`${s}\0`);
const text = (b: Buffer) => b.toString('utf8').replace(/\0+$/, '');

interface GenlSocket {
  request(family: number, cmd: number, version: number, data: Uint8Array[], options: { timeout: number }): Promise<[{ data: Buffer }[], unknown]>;
  socket: { close(): void };
}

/** devlink over generic netlink: the family id is resolved once, then one INFO_GET per PF. */
export function devlinkSource(): DdpSource {
  const { createGenericNetlink } = createRequire(import.meta.url)('netlink/dist/genl/genl.js') as { createGenericNetlink(): GenlSocket };
  const sock = createGenericNetlink();
  let family: Promise<number | undefined> | undefined;
  const resolveFamily = async (): Promise<number | undefined> => {
    try {
      const [msgs] = await sock.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, [attr(CTRL_ATTR_FAMILY_NAME, cstring('devlink'))], { timeout: TIMEOUT_MS });
      const id = parseAttrs(msgs[0]!.data).find(([t]) => t === CTRL_ATTR_FAMILY_ID)?.[1];
      return id ? id.readUInt16LE(0) : undefined;
    } catch {
      return undefined; // no devlink in this kernel
    }
  };
  return {
    async profile(pf) {
      family ??= resolveFamily();
      const id = await family;
      if (id === undefined) return undefined;
      try {
        const [msgs] = await sock.request(id, DEVLINK_CMD_INFO_GET, 1, [attr(DEVLINK_ATTR_BUS_NAME, cstring('pci')), attr(DEVLINK_ATTR_DEV_NAME, cstring(pf))], { timeout: TIMEOUT_MS });
        for (const [type, payload] of parseAttrs(msgs[0]?.data ?? Buffer.alloc(0))) {
          if (type !== DEVLINK_ATTR_INFO_VERSION_RUNNING) continue;
          const kv = parseAttrs(payload);
          const name = kv.find(([t]) => t === DEVLINK_ATTR_INFO_VERSION_NAME)?.[1];
          const value = kv.find(([t]) => t === DEVLINK_ATTR_INFO_VERSION_VALUE)?.[1];
          if (name && value && text(name) === FW_APP_NAME) return text(value);
        }
        return undefined;
      } catch {
        return undefined; // no devlink instance for this function (ENODEV), or no info support
      }
    },
    close: () => sock.socket.close(),
  };
}

/** Sets `ddpProfile` on every PF and VF (a VF's is its PF's), one query per PF; closes `source`. */
export async function addDdpProfiles(source: DdpSource, inv: HostInventory): Promise<void> {
  try {
    const byPf = new Map<string, string | undefined>();
    for (const dev of inv.devices) {
      const pf = dev.aux ? undefined : (dev.pf ?? (dev.sriov ? dev.address : undefined));
      if (!pf) continue;
      if (!byPf.has(pf)) byPf.set(pf, await source.profile(pf));
      const name = byPf.get(pf);
      if (name) dev.ddpProfile = name;
    }
  } finally {
    source.close();
  }
}
