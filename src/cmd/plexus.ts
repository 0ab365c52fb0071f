/** `plexus`: the meta CNI plugin, executed by the container runtime once per pod operation. */
import { answerVersion, processIO } from '../cni/process-io.js';
import { SUPPORTED_VERSIONS } from '../cni/types.js';

const io = processIO();
// VERSION (every runtime probes with it) loads nothing more; the plugin core only when there is work.
if (io.env.CNI_COMMAND === 'VERSION') process.exitCode = await answerVersion(SUPPORTED_VERSIONS, io);
else {
  const [{ runPlugin }, { metaPlugin }] = await Promise.all([import('../cni/skel.js'), import('../meta/plugin.js')]);
  process.exitCode = await runPlugin(metaPlugin, io);
}
