/** `sriov`'s ESM bundle: the SR-IOV CNI plugin, run by its CommonJS front (src/cmd/sriov-front.ts) for every command but VERSION. */
import { processIO, runPlugin } from '../cni/skel.js';
import { HOST_ROOT_ENV } from '../sriov/host.js';
import { sriovPluginWith } from '../sriov/plugin.js';
import { openSriovHost } from './sriov-host.js';

// The runtime's environment is the operator's (a tenant writes NADs and CNI_ARGS, not this).
process.exitCode = await runPlugin(
  sriovPluginWith(() => openSriovHost(process.env[HOST_ROOT_ENV] || '/')),
  processIO(),
);
