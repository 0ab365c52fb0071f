/** `plexus`: the meta CNI plugin, executed by the container runtime once per pod operation. */
import { processIO, runPlugin } from '../cni/skel.js';
import { metaPlugin } from '../meta/plugin.js';

process.exitCode = await runPlugin(metaPlugin, processIO());
