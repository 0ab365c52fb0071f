import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cachePath, readCacheEntry } from '../../src/cni/cache.js';
import { parseNetworkConfig } from '../../src/cni/conf.js';
import { CniError } from '../../src/cni/errors.js';
import { CniRuntime, type RuntimeConf, buildPluginConf } from '../../src/cni/runtime.js';
import { installRecordPlugin, installShellPlugin } from '../support/plugins.js';
import { Rig } from '../support/rig.js';

interface Call {
  type: string;
  command: string;
  env: Record<string, string>;
  conf: Record<string, unknown>;
}

describe('runtime side (libcni behaviour) with recording plugins', () => {
  const rig = new Rig();
  let bin: string;
  let cacheDir: string;
  let record: string;
  let ns: { name: string; path: string };
  before(() => {
    bin = rig.dir('bin');
    installRecordPlugin(bin, 'first');
    installRecordPlugin(bin, 'second');
    ns = rig.netns('rt');
  });
  beforeEach(() => {
    const d = rig.dir('rt');
    cacheDir = join(d, 'cache');
    record = join(d, 'calls.jsonl');
  });
  after(() => rig.cleanup());

  const calls = (): Call[] =>
    existsSync(record)
      ? readFileSync(record, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Call)
      : [];
  const list = (version = '1.1.0', extra: object = {}) =>
    parseNetworkConfig(
      Buffer.from(
        JSON.stringify({
          cniVersion: version,
          name: 'rtnet',
          plugins: [
            { type: 'first', recordFile: record, capabilities: { portMappings: true, mac: true, 'io.kubernetes.cri.pod-annotations': true }, ...extra },
            { type: 'second', recordFile: record, capabilities: { bandwidth: true } },
          ],
        }),
      ),
    );
  const rt = (): RuntimeConf => ({
    containerID: 'ctr1',
    netns: ns.path,
    ifName: 'eth0',
    args: [['K8S_POD_NAME', 'p1']],
    // containerd's capitalised spelling
    capabilityArgs: { PortMappings: [{ HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '127.0.0.1' }], 'io.kubernetes.cri.pod-annotations': { A: 'b' }, ips: ['10.0.0.1/24'] },
  });

  it('ADD runs plugins in order with name, cniVersion, filtered runtimeConfig and prevResult; caches the result', async () => {
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir });
    const result = await runtime.addNetworkList(list(), rt());
    const [a, b] = calls();
    assert.equal(a?.type, 'first');
    assert.equal(a?.conf.name, 'rtnet');
    assert.equal(a?.conf.cniVersion, '1.1.0');
    assert.equal(a?.conf.prevResult, undefined);
    assert.deepEqual(a?.conf.runtimeConfig, {
      portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }],
      'io.kubernetes.cri.pod-annotations': { A: 'b' },
    });
    assert.equal(a?.env.CNI_ARGS, 'IgnoreUnknown=1;K8S_POD_NAME=p1');
    assert.equal(a?.env.CNI_PATH, bin);
    assert.equal(b?.type, 'second');
    assert.equal(b?.conf.runtimeConfig, undefined, 'no runtimeConfig when no declared capability is offered');
    assert.deepEqual(b?.conf.prevResult, result);
    const read = readCacheEntry(cacheDir, { networkName: 'rtnet', containerId: 'ctr1', ifName: 'eth0' });
    assert.equal(read.kind, 'entry');
    if (read.kind === 'entry') {
      assert.deepEqual(Object.keys(read.entry), ['kind', 'containerId', 'config', 'ifName', 'networkName', 'netns', 'cniArgs', 'capabilityArgs', 'result']);
      assert.deepEqual(JSON.parse(Buffer.from(read.entry.config, 'base64').toString()).name, 'rtnet');
      assert.deepEqual(read.entry.result, result);
    }
  });

  it('DEL runs plugins in reverse with the cached result, then removes the cache entry; a repeated DEL succeeds', async () => {
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir });
    const result = await runtime.addNetworkList(list(), rt());
    await runtime.delNetworkList(list(), rt());
    const dels = calls().filter((c) => c.command === 'DEL');
    assert.deepEqual(
      dels.map((c) => c.type),
      ['second', 'first'],
    );
    for (const d of dels) assert.deepEqual(d.conf.prevResult, result);
    assert.equal(existsSync(cachePath(cacheDir, { networkName: 'rtnet', containerId: 'ctr1', ifName: 'eth0' })), false);
    await runtime.delNetworkList(list(), rt());
    assert.equal(calls().filter((c) => c.command === 'DEL' && c.conf.prevResult === undefined).length, 2);
  });

  it('a failed ADD is deleted again (in reverse) and returns the failing plugin error unchanged', async () => {
    const bad = parseNetworkConfig(
      Buffer.from(
        JSON.stringify({
          cniVersion: '1.0.0',
          name: 'rtnet',
          plugins: [
            { type: 'first', recordFile: record },
            { type: 'second', recordFile: record, failOn: { command: 'ADD', code: 117, msg: 'second is broken' } },
          ],
        }),
      ),
    );
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir, onStderr: () => undefined });
    await assert.rejects(runtime.addNetworkList(bad, rt()), (e: unknown) => e instanceof CniError && e.code === 117 && e.msg === 'second is broken');
    assert.deepEqual(
      calls().map((c) => `${c.command} ${c.type}`),
      ['ADD first', 'ADD second', 'DEL second', 'DEL first'],
    );
    assert.equal(readCacheEntry(cacheDir, { networkName: 'rtnet', containerId: 'ctr1', ifName: 'eth0' }).kind, 'missing');
  });

  it('CHECK sends the cached result; refuses disableCheck, pre-0.4.0 lists, and unknown attachments', async () => {
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir });
    await assert.rejects(runtime.checkNetworkList(list(), rt()), (e: unknown) => e instanceof CniError && e.code === 3);
    const result = await runtime.addNetworkList(list(), rt());
    await runtime.checkNetworkList(list(), rt());
    assert.deepEqual(
      calls()
        .filter((c) => c.command === 'CHECK')
        .map((c) => [c.type, c.conf.prevResult]),
      [
        ['first', result],
        ['second', result],
      ],
    );
    const disabled = parseNetworkConfig(Buffer.from(JSON.stringify({ cniVersion: '1.0.0', name: 'rtnet', disableCheck: true, plugins: [{ type: 'first' }] })));
    await assert.rejects(runtime.checkNetworkList(disabled, rt()), /disables CHECK/);
    await assert.rejects(runtime.checkNetworkList(list('0.3.1'), rt()), (e: unknown) => e instanceof CniError && e.code === 1);
  });

  it('GC deletes cached attachments not in the valid list, then sends GC with valid-attachments to every plugin', async () => {
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir });
    await runtime.addNetworkList(list(), rt());
    await runtime.addNetworkList(list(), { ...rt(), containerID: 'ctr2' });
    await runtime.gcNetworkList(list(), [{ containerID: 'ctr2', ifname: 'eth0' }]);
    const after = calls().filter((c) => c.command !== 'ADD');
    assert.deepEqual(
      after.map((c) => `${c.command} ${c.type} ${c.env.CNI_CONTAINERID}`),
      ['DEL second ctr1', 'DEL first ctr1', 'GC first ', 'GC second '],
    );
    assert.deepEqual(after[2]?.conf['cni.dev/valid-attachments'], [{ containerID: 'ctr2', ifname: 'eth0' }]);
    assert.deepEqual(after[2]?.conf['cni.dev/attachments'], [{ containerID: 'ctr2', ifname: 'eth0' }]);
    assert.equal(readCacheEntry(cacheDir, { networkName: 'rtnet', containerId: 'ctr2', ifName: 'eth0' }).kind, 'entry');
    assert.equal(readCacheEntry(cacheDir, { networkName: 'rtnet', containerId: 'ctr1', ifName: 'eth0' }).kind, 'missing');
  });

  it('GC and STATUS are skipped for lists before 1.1.0; disableGC skips GC entirely', async () => {
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir });
    await runtime.statusNetworkList(list('1.0.0'));
    await runtime.gcNetworkList(list('1.0.0'), []);
    await runtime.gcNetworkList(parseNetworkConfig(Buffer.from(JSON.stringify({ cniVersion: '1.1.0', name: 'rtnet', disableGC: true, plugins: [{ type: 'first', recordFile: record }] }))), []);
    assert.deepEqual(calls(), []);
    await runtime.statusNetworkList(list('1.1.0'));
    assert.deepEqual(
      calls().map((c) => `${c.command} ${c.type}`),
      ['STATUS first', 'STATUS second'],
    );
  });

  it('STATUS returns the first plugin error unchanged (code 50)', async () => {
    const failing = parseNetworkConfig(
      Buffer.from(
        JSON.stringify({
          cniVersion: '1.1.0',
          name: 'rtnet',
          plugins: [
            { type: 'first', recordFile: record, failOn: { command: 'STATUS', code: 50, msg: 'not ready' } },
            { type: 'second', recordFile: record },
          ],
        }),
      ),
    );
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir });
    await assert.rejects(runtime.statusNetworkList(failing), (e: unknown) => e instanceof CniError && e.code === 50);
    assert.equal(calls().length, 1);
  });

  it("reads a plugin's stderr when stdout is empty, as libcni does", async () => {
    installShellPlugin(bin, 'stderronly', 'echo "it broke" >&2; exit 3');
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir, onStderr: () => undefined });
    const l = parseNetworkConfig(Buffer.from(JSON.stringify({ cniVersion: '1.0.0', name: 'x', type: 'stderronly' })));
    await assert.rejects(runtime.addNetworkList(l, rt()), (e: unknown) => e instanceof CniError && e.code === 999 && /netplugin failed: "it broke"/.test(e.msg));
  });

  it('buildPluginConf strips reserved keys from admin config', () => {
    const l = parseNetworkConfig(Buffer.from(JSON.stringify({ cniVersion: '1.1.0', name: 'x', plugins: [{ type: 'a', runtimeConfig: { x: 1 }, 'cni.dev/foo': 1, keep: 2 }] })));
    const conf = buildPluginConf(l, l.plugins[0]!, undefined, undefined);
    assert.deepEqual(conf, { type: 'a', keep: 2, name: 'x', cniVersion: '1.1.0' });
  });

  it('a corrupt cache entry fails DEL with code 6 instead of pretending', async () => {
    const runtime = new CniRuntime({ cniPath: [bin], cacheDir });
    await runtime.addNetworkList(list(), rt());
    writeFileSync(cachePath(cacheDir, { networkName: 'rtnet', containerId: 'ctr1', ifName: 'eth0' }), '{"kind":"cniCacheV1",');
    await assert.rejects(runtime.delNetworkList(list(), rt()), (e: unknown) => e instanceof CniError && e.code === 6);
  });
});
