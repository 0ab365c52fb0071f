/** `sriov`: the SR-IOV CNI plugin, executed by the meta plugin (or any runtime) once per attachment. */
import { processIO, runPlugin } from '../cni/skel.js';
import { sriovPlugin } from '../sriov/plugin.js';

process.exitCode = await runPlugin(sriovPlugin, processIO());
