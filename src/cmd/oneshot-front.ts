/**
 * The front of an exec'd plugin (`plexus`, `sriov`), built as CommonJS: starting Node's ESM loader costs
 * ~7 ms, as much as the rest of a VERSION answer. It answers VERSION itself (every runtime probes each
 * plugin with it) and hands any other command to the plugin's ESM bundle beside it.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { answerVersion, processIO } from '../cni/process-io.js';
import { SUPPORTED_VERSIONS } from '../cni/types.js';

export function runFront(bundle: string): void {
  const io = processIO();
  if (io.env.CNI_COMMAND === 'VERSION') {
    void answerVersion(SUPPORTED_VERSIONS, io).then((code) => (process.exitCode = code));
    return;
  }
  // The bundle reads the command again and runs the plugin (its own top-level await sets the exit code).
  void import(pathToFileURL(join(__dirname, bundle)).href);
}
