/** `sriov`: the SR-IOV CNI plugin, executed by the meta plugin (or any runtime) once per attachment. */
import { processIO, runPlugin } from '../cni/skel.js';
import { HOST_ROOT_ENV } from '../sriov/host.js';
import { sriovPluginWith } from '../sriov/plugin.js';
import { openSriovHost } from './sriov-host.js';

// The runtime's environment is the operator's (a tenant writes NADs and CNI_ARGS, not this).
process.exitCode = await runPlugin(
  sriovPluginWith(() => openSriovHost(process.env[HOST_ROOT_ENV] || '/')),
  processIO(),
);
