/**
 * Device plugin speed: discovery of 8 PFs × 64 VFs on the fake kernel (target ≤ 50 ms), against the
 * floor of reading the same devices' vendor files; Allocate latency p50/p99 over gRPC through the
 * kubelet double, against a no-op unary call (GetDevicePluginOptions) on the same socket.
 * Run: npm run bench  (writes docs/benchmarks-deviceplugin.md)
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assignPools } from '../src/deviceplugin/pools.js';
import { parseConfig } from '../src/deviceplugin/config.js';
import { unary } from '../src/deviceplugin/grpc.js';
import { SriovDevicePlugin } from '../src/deviceplugin/plugin.js';
import { KubeletDouble } from '../src/sim/kubelet.js';
import { repoRoot } from '../src/sim/simnode.js';
import { discover } from '../src/sriov/discover.js';
import { FakeKernel } from '../src/sim/fakekernel.js';
import { sriovHostOf } from '../src/sim/sriov-host.js';

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-dp-bench-'));
  try {
    const pfs = Array.from({ length: 8 }, (_, i) => ({
      address: `0000:${(0x20 + i * 2).toString(16)}:00.0`,
      vendor: '8086',
      device: '158b',
      totalVfs: 64,
      numVfs: 64,
      netdev: `ens${i}f0`,
      numa: i % 2,
    }));
    const kernel = FakeKernel.create(join(work, 'host'), { pfs });
    const host = kernel.host();
    const config = parseConfig(JSON.stringify({ resourceList: [{ resourceName: 'vfs', allocationPolicy: 'pack-pf', selectors: [{ devices: ['154c'] }] }] }));
    const runs = Number(process.env.BENCH_RUNS ?? 21);
    const disc: number[] = [];
    const floor: number[] = [];
    let count = 0;
    for (let i = 0; i < runs; i++) {
      let t0 = process.hrtime.bigint();
      const inv = discover(host);
      count = assignPools(inv, config.pools).pools[0]!.devices.length;
      disc.push(ms(t0));
      t0 = process.hrtime.bigint();
      for (const d of readdirSync(host.path('sys/bus/pci/devices'))) readFileSync(host.path(`sys/bus/pci/devices/${d}/vendor`));
      floor.push(ms(t0));
    }
    const kubelet = new KubeletDouble(join(work, 'kubelet'));
    await kubelet.start();
    const configFile = join(work, 'config.json');
    writeFileSync(configFile, JSON.stringify({ resourceList: [{ resourceName: 'vfs', allocationPolicy: 'pack-pf', selectors: [{ devices: ['154c'] }] }] }));
    const plugin = new SriovDevicePlugin({ configFile, host: sriovHostOf(kernel), kubeletDir: kubelet.dir, devinfoDir: join(work, 'devinfo'), stateDir: join(work, 'state'), resyncMs: 3_600_000 });
    const t0 = process.hrtime.bigint();
    await plugin.start();
    await kubelet.waitFor('intel.com/vfs', (d) => d.length === 512);
    const startMs = ms(t0);
    const client = kubelet.endpoints.get('intel.com/vfs')!.client;
    const alloc: number[] = [];
    const noop: number[] = [];
    for (let i = 0; i < 200; i++) {
      let t = process.hrtime.bigint();
      await unary(client, 'GetDevicePluginOptions', {});
      noop.push(ms(t));
      t = process.hrtime.bigint();
      await unary(client, 'Allocate', { container_requests: [{ devices_ids: [`0000:${(0x20 + (i % 8) * 2).toString(16)}:0${2 + Math.floor((i % 64) / 8)}.${i % 8}`] }] });
      alloc.push(ms(t));
    }
    await plugin.stop();
    await kubelet.stop();
    const row = (label: string, xs: number[], base: number[]) =>
      `| ${label} | ${pct(xs, 50).toFixed(2)} | ${pct(xs, 99).toFixed(2)} | ${pct(base, 50).toFixed(2)} | ${(pct(xs, 50) / pct(base, 50)).toFixed(1)}× |`;
    const table = [
      '# SR-IOV device plugin',
      '',
      `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}; the fake kernel (a real directory tree with the kernel's sysfs`,
      `layout) holding 8 PFs × 64 VFs = ${count} VFs pooled. Milliseconds; the baseline runs in the same process.`,
      '',
      '| measure | p50 | p99 | baseline p50 | ratio |',
      '|---|---|---|---|---|',
      row('discovery + pool assignment, 8 PFs × 64 VFs (target ≤ 50 ms)', disc, floor),
      row('Allocate of one VF over gRPC (env, _INFO, device-info file)', alloc, noop),
      '',
      `Baselines: discovery against reading each device's \`vendor\` file once (the floor of any sysfs scan);`,
      `Allocate against GetDevicePluginOptions, a no-op unary call on the same socket. Start-up to the first`,
      `full ListAndWatch list of 512 devices: ${startMs.toFixed(0)} ms. Allocate re-reads sysfs for fresh facts`,
      `before answering; that scan is most of its cost.`,
      '',
      'Reproduce: `npm run bench`.',
      '',
    ].join('\n');
    writeFileSync(join(repoRoot(), 'docs', 'benchmarks-deviceplugin.md'), table);
    process.stdout.write(`${table}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
