/**
 * A CNI plugin built on Plexus' skel for tests: records every call (env + stdin) as a JSON line in
 * conf.recordFile, returns a result naming CNI_IFNAME with conf.address, and fails on demand
 * (conf.failOn = {command, code, msg}).
 */
import { appendFileSync } from 'node:fs';
import { CniError } from '../../src/cni/errors.js';
import { type PluginRequest, processIO, runPlugin } from '../../src/cni/skel.js';
import { SUPPORTED_VERSIONS } from '../../src/cni/types.js';

interface RecordConf {
  recordFile?: string;
  address?: string;
  failOn?: { command: string; code: number; msg: string };
}

function record(req: PluginRequest): void {
  const conf = req.conf as unknown as RecordConf;
  if (conf.recordFile) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('CNI_')));
    appendFileSync(conf.recordFile, `${JSON.stringify({ type: req.conf.type, command: req.command, env, conf: req.conf })}\n`);
  }
  if (conf.failOn && conf.failOn.command === req.command) throw new CniError(conf.failOn.code, conf.failOn.msg, `${req.conf.type} was told to fail`);
}

process.exitCode = await runPlugin(
  {
    about: 'Plexus test record plugin',
    supportedVersions: SUPPORTED_VERSIONS,
    async add(req) {
      record(req);
      const conf = req.conf as unknown as RecordConf;
      const prev = req.conf.prevResult;
      if (prev) return prev;
      return {
        cniVersion: '1.1.0',
        interfaces: [{ name: req.ifName, sandbox: req.netns, mac: '02:00:00:00:00:01' }],
        ips: [{ address: conf.address ?? '10.200.0.2/24', gateway: '10.200.0.1', interface: 0 }],
      };
    },
    async del(req) {
      record(req);
    },
    async check(req) {
      record(req);
    },
    async status(req) {
      record(req);
    },
    async gc(req) {
      record(req);
    },
  },
  processIO(),
);
