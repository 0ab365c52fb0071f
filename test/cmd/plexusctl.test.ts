import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostLocalReservations } from '../../src/sim/hostlocal.js';
import { installShellPlugin, plexusctlPath, REFERENCE_PLUGINS } from '../support/plugins.js';
import { Rig, ipAddresses, ipJson, linkExists, listNetns } from '../support/rig.js';

interface Run {
  status: number | null;
  json: Record<string, unknown> | undefined;
  stdout: string;
  stderr: string;
}

function plexusctl(args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(plexusctlPath, args, { encoding: 'utf8', env: { ...process.env, ...env } });
  let json: Record<string, unknown> | undefined;
  try {
    json = r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.status, json, stdout: r.stdout, stderr: r.stderr };
}

/** Everything observable on the host that an attachment could leave behind. */
function hostSnapshot(ipamDir: string): string {
  const links = ipJson<{ ifname: string }[]>(['link', 'show'])
    .map((l) => l.ifname)
    .sort();
  // host-local keeps its lock and last_reserved_ip files by design; reservations are files named by IP.
  const reservations = hostLocalReservations(ipamDir);
  return JSON.stringify({ links, netns: listNetns().sort(), reservations });
}

describe('plexusctl cni with the reference plugins', function () {
  this.timeout(60000);
  const rig = new Rig();
  let confDir: string;
  let cacheDir: string;
  let ipamDir: string;
  let bridge: string;
  let master: string;
  before(() => {
    const d = rig.dir('ctl');
    confDir = join(d, 'net.d');
    cacheDir = join(d, 'cache');
    ipamDir = join(d, 'ipam');
    spawnSync('mkdir', ['-p', confDir]);
    bridge = `plxbr${process.pid % 10000}`;
    rig.ownLink(bridge);
    [master] = rig.veth('m');
    spawnSync('ip', ['link', 'set', master!, 'up']);
    writeFileSync(
      join(confDir, '10-br.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'plx-br',
        plugins: [
          { type: 'bridge', bridge, ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet: '10.251.0.0/24' }]], routes: [{ dst: '10.252.0.0/16', gw: '10.251.0.1' }] } },
          { type: 'tuning', mtu: 1400 },
        ],
      }),
    );
    writeFileSync(
      join(confDir, '20-mv.conf'),
      JSON.stringify({ cniVersion: '0.4.0', name: 'plx-mv', type: 'macvlan', master, mode: 'bridge', ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet: '10.253.0.0/24' }]] } }),
    );
  });
  after(() => rig.cleanup());

  const common = (): string[] => ['--conf-dir', confDir, '--cni-path', REFERENCE_PLUGINS, '--cache-dir', cacheDir];

  it('bridge + tuning conflist: ADD, CHECK, DEL, repeated DEL', () => {
    const ns = rig.netns('br');
    const add = plexusctl(['cni', 'add', 'plx-br', ns.path, ...common(), '--args', 'K8S_POD_NAME=p1;K8S_POD_NAMESPACE=ns1']);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const ips = (add.json?.ips as { address: string }[]).map((i) => i.address);
    assert.deepEqual(ipAddresses(ns.name, 'eth0'), ips);
    const [eth0] = ipJson<{ mtu: number }[]>(['-n', ns.name, 'link', 'show', 'eth0']);
    assert.equal(eth0?.mtu, 1400, 'tuning (second plugin) ran on the bridge result');
    const routes = ipJson<{ dst: string; gateway?: string }[]>(['-n', ns.name, 'route', 'show']);
    assert.ok(routes.some((r) => r.dst === '10.252.0.0/16' && r.gateway === '10.251.0.1'));
    assert.equal(readdirSync(join(ipamDir, 'plx-br')).filter((f) => f.startsWith('10.')).length, 1, 'one IP reserved');

    const check = plexusctl(['cni', 'check', 'plx-br', ns.path, ...common()]);
    assert.equal(check.status, 0, check.stdout + check.stderr);

    const del = plexusctl(['cni', 'del', 'plx-br', ns.path, ...common()]);
    assert.equal(del.status, 0, del.stdout + del.stderr);
    assert.equal(linkExists('eth0', ns.name), false);
    assert.deepEqual(
      readdirSync(join(ipamDir, 'plx-br')).filter((f) => f.startsWith('10.')),
      [],
      'IP released',
    );
    assert.equal(readdirSync(join(cacheDir, 'results')).length, 0, 'cache entry removed');
    const again = plexusctl(['cni', 'del', 'plx-br', ns.path, ...common()]);
    assert.equal(again.status, 0, again.stdout);
  });

  it('macvlan .conf (0.4.0) on a test veth: ADD returns 0.4.0, CHECK, DEL also after the netns is gone', () => {
    const ns = rig.netns('mv');
    const add = plexusctl(['cni', 'add', 'plx-mv', ns.name, ...common(), '--ifname', 'net1']);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.equal(add.json?.cniVersion, '0.4.0');
    assert.equal((add.json?.ips as { version: string }[])[0]?.version, '4');
    assert.deepEqual(ipAddresses(ns.name, 'net1'), ['10.253.0.2/24']);
    assert.equal(plexusctl(['cni', 'check', 'plx-mv', ns.name, ...common(), '--ifname', 'net1']).status, 0);
    spawnSync('ip', ['netns', 'del', ns.name]);
    const del = plexusctl(['cni', 'del', 'plx-mv', ns.path, ...common(), '--ifname', 'net1']);
    assert.equal(del.status, 0, del.stdout + del.stderr);
    assert.deepEqual(
      readdirSync(join(ipamDir, 'plx-mv')).filter((f) => f.startsWith('10.')),
      [],
      'IP released without the netns',
    );
  });

  it('the cache entry has libcni cniCacheV1 format', () => {
    const ns = rig.netns('cache');
    const add = plexusctl(['cni', 'add', 'plx-br', ns.path, ...common(), '--container-id', 'cid42', '--args', 'K8S_POD_NAME=p1', '--cap-args', '{"portMappings":[]}']);
    assert.equal(add.status, 0, add.stdout);
    const entry = JSON.parse(readFileSync(join(cacheDir, 'results', 'plx-br-cid42-eth0'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(entry), ['kind', 'containerId', 'config', 'ifName', 'networkName', 'netns', 'cniArgs', 'capabilityArgs', 'result']);
    assert.equal(entry.kind, 'cniCacheV1');
    assert.equal(JSON.parse(Buffer.from(String(entry.config), 'base64').toString()).name, 'plx-br');
    assert.deepEqual(entry.cniArgs, [['K8S_POD_NAME', 'p1']]);
    assert.deepEqual(entry.result, add.json);
    assert.equal(plexusctl(['cni', 'del', 'plx-br', ns.path, ...common(), '--container-id', 'cid42']).status, 0);
  });

  it('version reports the chosen version and each plugin VERSION', () => {
    const v = plexusctl(['cni', 'version', 'plx-br', ...common()]);
    assert.equal(v.status, 0, v.stdout);
    assert.equal(v.json?.cniVersion, '1.0.0');
    assert.deepEqual(
      (v.json?.plugins as { type: string }[]).map((p) => p.type),
      ['bridge', 'tuning'],
    );
  });

  describe('bad input: spec code, a message naming the cause, exit 1, no change on the host', () => {
    let ns: { name: string; path: string };
    let bin: string;
    before(() => {
      ns = rig.netns('bad');
      bin = rig.dir('badbin');
      installShellPlugin(bin, 'failing', `echo '{"code":117,"msg":"delegate exploded","details":"on purpose"}'; exit 1`);
      writeFileSync(
        join(confDir, '30-fail.conflist'),
        JSON.stringify({
          cniVersion: '1.0.0',
          name: 'plx-fail',
          plugins: [{ type: 'bridge', bridge, ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet: '10.254.0.0/24' }]] } }, { type: 'failing' }],
        }),
      );
      writeFileSync(join(confDir, '40-missing.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'plx-missing', type: 'no-such-plugin' }));
      writeFileSync(join(confDir, '50-future.conf'), JSON.stringify({ cniVersion: '9.0.0', name: 'plx-future', type: 'bridge' }));
      writeFileSync(join(confDir, '60-garbage.conflist'), '{"cniVersion": "1.0.0", "name": "plx-garbage", plugins: [');
    });

    const cases: [string, () => string[], number, RegExp][] = [
      ['unknown network', () => ['cni', 'add', 'plx-nope', ns.path, ...common()], 7, /no network "plx-nope"/],
      ['network in a malformed file', () => ['cni', 'add', 'plx-garbage', ns.path, ...common()], 7, /60-garbage\.conflist/],
      ['unsupported version', () => ['cni', 'add', 'plx-future', ns.path, ...common()], 1, /incompatible CNI versions/],
      ['missing delegate binary', () => ['cni', 'add', 'plx-missing', ns.path, ...common()], 7, /failed to find plugin "no-such-plugin"/],
      [
        'failing delegate (after bridge succeeded)',
        () => ['cni', 'add', 'plx-fail', ns.path, '--conf-dir', confDir, '--cni-path', `${REFERENCE_PLUGINS}:${bin}`, '--cache-dir', cacheDir],
        117,
        /delegate exploded/,
      ],
      ['missing netns', () => ['cni', 'add', 'plx-br', '/var/run/netns/plx-does-not-exist', ...common()], 3, /does not exist/],
      ['interface name over 15 characters', () => ['cni', 'add', 'plx-br', ns.path, ...common(), '--ifname', 'a-very-long-name0'], 4, /15 bytes/],
      ['malformed CNI_ARGS', () => ['cni', 'add', 'plx-br', ns.path, ...common(), '--args', 'A=1;'], 4, /invalid pair/],
      ['malformed capability JSON', () => ['cni', 'add', 'plx-br', ns.path, ...common(), '--cap-args', '{"x":'], 6, /cap-args/],
      ['missing arguments', () => ['cni', 'add'], 4, /missing required argument/],
    ];
    for (const [what, args, code, cause] of cases) {
      it(`${what} → code ${code}`, () => {
        const before = hostSnapshot(ipamDir);
        const r = plexusctl(args());
        assert.equal(r.status, 1, r.stdout + r.stderr);
        assert.equal(r.json?.code, code, r.stdout);
        assert.match(`${String(r.json?.msg)}: ${String(r.json?.details ?? '')}`, cause);
        assert.equal(hostSnapshot(ipamDir), before, 'host changed');
        assert.deepEqual(
          ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
          ['lo'],
        );
      });
    }
  });
});

describe('plexusctl as a person types it: usage errors in one line, never a stack trace', function () {
  this.timeout(30000);
  it('--version names the build and the contracts it speaks', () => {
    const r = plexusctl(['--version']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^plexusctl \d+\.\d+\.\d+( \([0-9a-f]{12}\))?; CNI spec 1\.1\.0, NPWG v1\.3/);
  });

  const cases: [string, string[], RegExp][] = [
    ['daemon --max-concurrent 0', ['daemon', '--max-concurrent', '0'], /--max-concurrent <n>' argument '0' is invalid\. expected an integer ≥ 1/],
    ['daemon --max-queued -1', ['daemon', '--max-queued', '-1'], /--max-queued <n>' argument '-1' is invalid/],
    ['daemon --max-concurrent two', ['daemon', '--max-concurrent', 'two'], /argument 'two' is invalid/],
    ['device-plugin --config /missing', ['device-plugin', '--config', '/plx-missing.json'], /^plexusctl device-plugin: --config \/plx-missing\.json: no such file$/m],
    ['device-plugin --resync-seconds 0', ['device-plugin', '--resync-seconds', '0'], /--resync-seconds <n>' argument '0' is invalid/],
    ['sriov discover --sysfs-root /missing', ['sriov', 'discover', '--sysfs-root', '/plx-missing'], /plx-missing holds no PCI sysfs/],
    ['sriov vfs --sysfs-root /missing', ['sriov', 'vfs', '--sysfs-root', '/plx-missing'], /plx-missing holds no PCI sysfs/],
    ['apiserver --port 70000', ['apiserver', '--port', '70000'], /expected an integer from 0 to 65535/],
  ];
  for (const [what, args, message] of cases) {
    it(`${what}: exit 1 with the reason, no stack trace`, () => {
      const r = plexusctl(args, { PLEXUS_SRIOV_HOST_ROOT: '' });
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stderr + r.stdout, message);
      assert.doesNotMatch(r.stderr + r.stdout, /^\s+at /m, 'no stack trace');
    });
  }
});
