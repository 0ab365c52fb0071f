/** `sriov`: the SR-IOV CNI plugin, executed by the meta plugin (or any runtime) once per attachment. */
import { answerVersion, processIO } from '../cni/process-io.js';
import { SUPPORTED_VERSIONS } from '../cni/types.js';
import { HOST_ROOT_ENV } from '../sriov/host.js';

const io = processIO();
if (io.env.CNI_COMMAND === 'VERSION') process.exitCode = await answerVersion(SUPPORTED_VERSIONS, io);
else {
  const [{ runPlugin }, { sriovPluginWith }, { openSriovHost }] = await Promise.all([import('../cni/skel.js'), import('../sriov/plugin.js'), import('./sriov-host.js')]);
  // The runtime's environment is the operator's (a tenant writes NADs and CNI_ARGS, not this).
  process.exitCode = await runPlugin(
    sriovPluginWith(() => openSriovHost(process.env[HOST_ROOT_ENV] || '/')),
    io,
  );
}
