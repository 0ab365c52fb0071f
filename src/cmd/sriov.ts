/** `plexusctl sriov`: what the SR-IOV device plugin sees on this host (real or simulated). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { VfInfo } from '../net/vf.js';
import type { DevicePluginConfig } from '../deviceplugin/config.js';
import type { FakePfSpec } from '../sim/fakekernel.js';
import { HOST_ROOT_ENV } from '../sriov/host.js';
import { findAbove } from '../util/find-above.js';
import { openSriovHost } from './sriov-host.js';

/** The `plexusctl sriov discover -o json` document (schema: device-plugin/discover.schema.json). */
export interface DiscoverReport {
  schemaVersion: 1;
  hostRoot: string;
  iommu: boolean;
  defaultRoutes: { v4: string[]; v6: string[] };
  pools: { resourceName: string; deviceType: string; devices: string[] }[];
  /** Auxiliary devices (sub-functions), by name, with their parent PCI function. */
  auxDevices: { name: string; type: string; parent: string; driver: string | null; netdevs: string[]; rdma: string[]; pool: string | null; reason: string | null }[];
  devices: {
    pciAddress: string;
    vendor: string;
    device: string;
    class: string;
    driver: string | null;
    numaNode: number;
    iommuGroup: string | null;
    pf: string | null;
    vfIndex: number | null;
    netdevs: string[];
    rdma: string[];
    pool: string | null;
    reason: string | null;
  }[];
}

export function defaultConfigPath(): string | undefined {
  return findAbove(import.meta.url, [join('device-plugin', 'config.json')]);
}

export async function discoverReport(root: string, config: DevicePluginConfig): Promise<DiscoverReport> {
  // Loaded here, not with plexusctl: the config's JSON Schema brings ajv's compiler, which no other command needs.
  const [{ resourceFullName }, { assignPools }, { discover }] = await Promise.all([import('../deviceplugin/config.js'), import('../deviceplugin/pools.js'), import('../sriov/discover.js')]);
  const host = await openSriovHost(root);
  const inv = discover(host.sysfs);
  if (config.pools.some((p) => p.selectors.some((sel) => sel.ddpProfiles?.length))) {
    const { addDdpProfiles } = await import('../sriov/ddp.js');
    await addDdpProfiles(host.openDdp(), inv);
  }
  const { pools, verdicts } = assignPools(inv, config.pools);
  return {
    schemaVersion: 1,
    hostRoot: host.sysfs.root,
    iommu: inv.iommuEnabled,
    defaultRoutes: inv.defaultRouteNetdevs,
    pools: pools.map((p) => ({ resourceName: resourceFullName(p.pool), deviceType: p.pool.deviceType, devices: p.devices })),
    auxDevices: verdicts
      .filter((v) => v.device.aux)
      .map(({ device: d, pool, reason }) => ({
        name: d.address,
        type: d.aux!.type,
        parent: d.aux!.parent,
        driver: d.driver ?? null,
        netdevs: d.netdevs.map((n) => n.name),
        rdma: d.rdma,
        pool: pool ?? null,
        reason: reason ?? null,
      })),
    devices: verdicts
      .filter((v) => !v.device.aux)
      .map(({ device: d, pool, reason }) => ({
        pciAddress: d.address,
        vendor: d.vendor,
        device: d.device,
        class: d.class,
        driver: d.driver ?? null,
        numaNode: d.numaNode,
        iommuGroup: d.iommuGroup ?? null,
        pf: d.pf ?? null,
        vfIndex: d.vfIndex ?? null,
        netdevs: d.netdevs.map((n) => n.name),
        rdma: d.rdma,
        pool: pool ?? null,
        reason: reason ?? null,
      })),
  };
}

function table(r: DiscoverReport): string {
  const rows = [['PCI', 'ID', 'DRIVER', 'NUMA', 'IOMMU', 'PF', 'VF', 'NETDEV', 'POOL / WHY NOT']];
  for (const d of r.devices)
    rows.push([
      d.pciAddress,
      `${d.vendor}:${d.device}`,
      d.driver ?? '-',
      String(d.numaNode),
      d.iommuGroup ?? '-',
      d.pf ?? '-',
      d.vfIndex === null ? '-' : String(d.vfIndex),
      d.netdevs.join(',') || '-',
      d.pool ?? `✗ ${d.reason}`,
    ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const lines = rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  const pools = r.pools.map((p) => `${p.resourceName} (${p.deviceType}): ${p.devices.length} device(s)`);
  return [...lines, '', ...pools].join('\n');
}

export interface VfTable {
  pf: string;
  pfNetdev: string;
  vfs: (VfInfo & { address?: string; where: string })[];
}

/** Every PF's VF table (rtnetlink, or the fake kernel), each VF with where its netdev is. */
export async function vfTables(root: string): Promise<VfTable[]> {
  const { discover } = await import('../sriov/discover.js');
  const host = await openSriovHost(root);
  const inv = discover(host.sysfs);
  const { SriovState } = await import('../sriov/state.js');
  const { stateDir } = await import('../sriov/plugin.js');
  const held = new SriovState(stateDir(host.sysfs)).all();
  const pf = await host.openPfOps();
  try {
    const out: VfTable[] = [];
    for (const dev of inv.devices.filter((d) => d.sriov && d.sriov.numVfs > 0 && d.netdevs[0])) {
      const vfs = await pf.vfs(dev.netdevs[0]!.name);
      out.push({
        pf: dev.address,
        pfNetdev: dev.netdevs[0]!.name,
        vfs: vfs.map((v) => {
          const vf = inv.devices.find((d) => d.pf === dev.address && d.vfIndex === v.vf);
          const record = held.find((r) => r.vf.pf === dev.address && r.vf.index === v.vf);
          const where = vf?.netdevs[0]
            ? `${vf.netdevs[0].name} (host)`
            : record
              ? `${record.mode === 'dpdk' ? 'dpdk, ' : `${record.ifName} in `}${record.netns}`
              : vf?.driver
                ? `no netdev (${vf.driver})`
                : '-';
          return { ...v, ...(vf ? { address: vf.address } : {}), where };
        }),
      });
    }
    return out;
  } finally {
    pf.close();
  }
}

/** `ADDR:VENDOR:DEVICE:NUMVFS[:PF_NETDEV]`, the address itself holding colons. */
const PF_ARG_HELP = 'ADDR:VENDOR:DEVICE:NUMVFS[:PF_NETDEV][,numa=N][,offset=N][,stride=N][,real-pf]';

export function parsePfArg(text: string): FakePfSpec {
  const [head = '', ...options] = text.split(',');
  const m = /^([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]):([0-9a-fA-F]{4}):([0-9a-fA-F]{4}):(\d+)(?::([A-Za-z0-9_.-]{1,12}))?$/.exec(head);
  if (!m) throw new Error(`--pf ${text}: expected ${PF_ARG_HELP}, e.g. 0000:5e:00.0:8086:158b:4:ens1f0,numa=1`);
  const spec: FakePfSpec = { address: m[1]!.toLowerCase(), vendor: m[2]!, device: m[3]!, numVfs: Number(m[4]), totalVfs: Math.max(8, Number(m[4])), ...(m[5] ? { netdev: m[5] } : {}) };
  for (const option of options) {
    const [key, value] = option.split('=');
    const n = Number(value);
    const integer = value !== undefined && /^\d{1,3}$/.test(value);
    if (key === 'real-pf' && value === undefined) spec.realPfNetdev = true;
    else if (key === 'numa' && integer) spec.numa = n;
    else if (key === 'offset' && integer && n >= 1) spec.vfOffset = n;
    else if (key === 'stride' && integer && n >= 1) spec.vfStride = n;
    else throw new Error(`--pf ${text}: "${option}" is not one of numa=N, offset=N (≥ 1), stride=N (≥ 1), real-pf`);
  }
  return spec;
}

export function registerSriov(program: Command): void {
  const sriov = program.command('sriov').description('SR-IOV devices on this host, or on a simulated one');
  sriov
    .command('discover')
    .description('every PCI network device with the pool it joins, or why it joins none')
    .option('--sysfs-root <dir>', `host root holding sys/, proc/ and dev/ (default: $${HOST_ROOT_ENV} or /)`)
    .option('--config <file>', 'device plugin config.json (default: device-plugin/config.json)')
    .option('-o, --output <format>', 'json or table', 'table')
    .action(async (o: { sysfsRoot?: string; config?: string; output: string }) => {
      const configPath = o.config ?? defaultConfigPath();
      const { parseConfig } = await import('../deviceplugin/config.js');
      const config = configPath ? parseConfig(readFileSync(configPath, 'utf8')) : { pools: [] };
      const report = await discoverReport(o.sysfsRoot ?? process.env[HOST_ROOT_ENV] ?? '/', config);
      process.stdout.write(`${o.output === 'json' ? JSON.stringify(report, null, 2) : table(report)}\n`);
    });
  sriov
    .command('vfs')
    .description("each PF's VF table as the PF reports it, with where each VF's netdev is")
    .option('--sysfs-root <dir>', `host root (default: $${HOST_ROOT_ENV} or /)`)
    .option('-o, --output <format>', 'json or table', 'table')
    .action(async (o: { sysfsRoot?: string; output: string }) => {
      const tables = await vfTables(o.sysfsRoot ?? process.env[HOST_ROOT_ENV] ?? '/');
      if (o.output === 'json') {
        process.stdout.write(`${JSON.stringify(tables, null, 2)}\n`);
        return;
      }
      const rows = [['PF', 'VF', 'PCI', 'MAC', 'VLAN/QOS/PROTO', 'SPOOFCHK', 'TRUST', 'STATE', 'RATE MIN/MAX', 'NETDEV']];
      const onOff = (v: boolean | undefined) => (v === undefined ? '?' : v ? 'on' : 'off');
      for (const t of tables)
        for (const v of t.vfs)
          rows.push([t.pfNetdev, String(v.vf), v.address ?? '-', v.mac, `${v.vlan}/${v.qos}/${v.vlanProto}`, onOff(v.spoofchk), onOff(v.trust), v.linkState, `${v.minTxRate}/${v.maxTxRate}`, v.where]);
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      process.stdout.write(
        `${rows
          .map((r) =>
            r
              .map((c, i) => c.padEnd(widths[i]!))
              .join('  ')
              .trimEnd(),
          )
          .join('\n')}\n`,
      );
    });
  const host = sriov.command('host').description('a simulated SR-IOV host: a directory with the kernel sysfs layout, answering writes as the kernel does');
  host
    .command('create <dir>')
    .description(`build a simulated host (VF netdevs are real veth ends in this netns); point the tools at it with --sysfs-root or ${HOST_ROOT_ENV}`)
    .option(
      '--pf <spec...>',
      `a PF ${PF_ARG_HELP} (repeatable), e.g. 0000:5e:00.0:8086:158b:4:ens1f0,numa=1; its VF netdevs are <PF_NETDEV>v<N>; PFs on one bus get disjoint VF ranges unless offset/stride say otherwise; real-pf makes the PF netdev a real link too`,
    )
    .option('--nic <spec...>', 'a plain NIC ADDR:VENDOR:DEVICE:NETDEV holding the default route')
    .action(async (dir: string, o: { pf?: string[]; nic?: string[] }) => {
      const { FakeKernel } = await import('../sim/fakekernel.js');
      const nics = (o.nic ?? []).map((t) => {
        const m = /^([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]):([0-9a-fA-F]{4}):([0-9a-fA-F]{4}):(\S+)$/.exec(t);
        if (!m) throw new Error(`--nic ${t}: expected ADDR:VENDOR:DEVICE:NETDEV`);
        return { address: m[1]!.toLowerCase(), vendor: m[2]!, device: m[3]!, netdev: m[4]! };
      });
      FakeKernel.create(dir, { realNetdevs: true, pfs: (o.pf ?? []).map(parsePfArg), nics, defaultRoutes: { v4: nics.map((n) => n.netdev) } });
      process.stdout.write(`simulated host in ${dir}: ${HOST_ROOT_ENV}=${dir} plexusctl sriov discover\n`);
    });
  host
    .command('destroy <dir>')
    .description('remove a simulated host and every link it made')
    .action(async (dir: string) => {
      const { FakeKernel } = await import('../sim/fakekernel.js');
      const kernel = FakeKernel.open(dir);
      if (!kernel) throw new Error(`${dir} is not a simulated host`);
      kernel.destroy();
    });
}
