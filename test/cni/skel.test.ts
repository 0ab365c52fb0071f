import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { installRecordPlugin } from '../support/plugins.js';
import { Rig } from '../support/rig.js';

describe('plugin side (skel) through a real exec', () => {
  const rig = new Rig();
  let plugin: string;
  let ns: { name: string; path: string };
  before(() => {
    plugin = installRecordPlugin(rig.dir('skel'));
    ns = rig.netns('skel');
  });
  after(() => rig.cleanup());

  const conf = (extra: object = {}): string => JSON.stringify({ cniVersion: '1.0.0', name: 'net1', type: 'record', ...extra });
  const exec = (env: Record<string, string>, stdin: string) => {
    const r = spawnSync(plugin, [], { env: { PATH: process.env.PATH ?? '', ...env }, input: stdin, encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: r.stdout ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined };
  };
  const fullEnv = (): Record<string, string> => ({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: ns.path, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' });

  it('ADD prints a result in the config version and exits 0', () => {
    const r = exec(fullEnv(), conf({ cniVersion: '0.4.0' }));
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json?.cniVersion, '0.4.0');
    assert.deepEqual(r.json?.ips, [{ address: '10.200.0.2/24', gateway: '10.200.0.1', interface: 0, version: '4' }]);
  });

  it('VERSION answers with dummy env (as podman probes) and with empty stdin', () => {
    const podman = exec({ CNI_COMMAND: 'VERSION', CNI_CONTAINERID: '', CNI_NETNS: 'dummy', CNI_IFNAME: 'dummy', CNI_PATH: 'dummy', CNI_ARGS: '' }, '{"cniVersion":"1.0.0"}');
    assert.equal(podman.status, 0);
    assert.deepEqual(podman.json, { cniVersion: '1.0.0', supportedVersions: ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
    const empty = exec({ CNI_COMMAND: 'VERSION' }, '');
    assert.equal(empty.status, 0);
    assert.equal(empty.json?.cniVersion, '1.1.0');
  });

  it('an empty CNI_COMMAND prints the about line to stderr and nothing on stdout', () => {
    const r = exec({}, '');
    assert.equal(r.status, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /CNI protocol versions supported: 0\.1\.0/);
  });

  const table: [string, (env: Record<string, string>) => void, string, number, RegExp][] = [
    ['missing CNI_CONTAINERID', (e) => delete e.CNI_CONTAINERID, conf(), 4, /CNI_CONTAINERID/],
    ['missing CNI_NETNS', (e) => delete e.CNI_NETNS, conf(), 4, /CNI_NETNS/],
    ['missing CNI_IFNAME', (e) => delete e.CNI_IFNAME, conf(), 4, /CNI_IFNAME/],
    ['missing CNI_PATH', (e) => delete e.CNI_PATH, conf(), 4, /CNI_PATH/],
    ['several missing at once', (e) => (delete e.CNI_NETNS, delete e.CNI_IFNAME), conf(), 4, /\[CNI_NETNS,CNI_IFNAME\]/],
    ['bad container ID', (e) => (e.CNI_CONTAINERID = 'a b'), conf(), 4, /CNI_CONTAINERID/],
    ['interface name over 15 bytes', (e) => (e.CNI_IFNAME = 'abcdefghijklmnop'), conf(), 4, /15 bytes/],
    ['interface name with a slash', (e) => (e.CNI_IFNAME = 'a/b'), conf(), 4, /CNI_IFNAME/],
    ['unknown command', (e) => (e.CNI_COMMAND = 'FROB'), conf(), 4, /FROB/],
    ['invalid CNI_ARGS', (e) => (e.CNI_ARGS = 'A=1;'), conf(), 4, /invalid pair/],
    ['malformed JSON', () => undefined, '{"cniVersion":', 6, /decode/],
    ['unsupported version', () => undefined, conf({ cniVersion: '3.0.0' }), 1, /incompatible/],
    ['invalid network name', () => undefined, conf({ name: 'has space' }), 7, /name/],
    ['missing type', () => undefined, JSON.stringify({ cniVersion: '1.0.0', name: 'n' }), 7, /type/],
    ['CHECK on 0.3.1', (e) => (e.CNI_COMMAND = 'CHECK'), conf({ cniVersion: '0.3.1' }), 1, /CHECK/],
    ['STATUS on 1.0.0', (e) => (e.CNI_COMMAND = 'STATUS'), conf(), 1, /STATUS/],
    ['its own netns as CNI_NETNS', (e) => (e.CNI_NETNS = `/proc/${process.pid}/ns/net`), conf(), 8, /own network namespace/],
  ];
  for (const [what, mutate, stdin, code, detail] of table) {
    it(`${what} → code ${code}, error JSON on stdout, exit 1`, () => {
      const env = fullEnv();
      mutate(env);
      const r = exec(env, stdin);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.equal(r.json?.code, code, r.stdout);
      assert.match(`${String(r.json?.msg)} ${String(r.json?.details ?? '')}`, detail);
    });
  }

  it('DEL does not need CNI_NETNS', () => {
    const env = { ...fullEnv(), CNI_COMMAND: 'DEL' } as Record<string, string>;
    delete env.CNI_NETNS;
    assert.equal(exec(env, conf()).status, 0);
  });

  it('STATUS and GC need only CNI_COMMAND (+ CNI_PATH for GC) on 1.1.0', () => {
    assert.equal(exec({ CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0' })).status, 0);
    assert.equal(exec({ CNI_COMMAND: 'GC' }, conf({ cniVersion: '1.1.0' })).json?.code, 4);
    assert.equal(exec({ CNI_COMMAND: 'GC', CNI_PATH: '/usr/lib/cni' }, conf({ cniVersion: '1.1.0' })).status, 0);
  });
});

describe('errors as the spec codes them', () => {
  it('a file system call failing on a path is an I/O failure (code 5) naming it, anything else stays 999', async () => {
    const { readFileSync } = await import('node:fs');
    const { CniError } = await import('../../src/cni/errors.js');
    let fsError: unknown;
    try {
      readFileSync('/plx-no-such-dir/file');
    } catch (err) {
      fsError = err;
    }
    const e = CniError.from(fsError);
    assert.equal(e.code, 5);
    assert.match(e.msg, /I\/O failure \(ENOENT\)/);
    assert.match(String(e.details), /\/plx-no-such-dir\/file/);
    assert.equal(CniError.from(new Error('netlink: EADDRNOTAVAIL')).code, 999);
  });
});
