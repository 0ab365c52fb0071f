/** plexusctl: the Plexus command line. */
import { Command, CommanderError } from 'commander';
import { CniError, ErrorCode } from '../cni/errors.js';
import { registerApiServer } from './apiserver.js';
import { registerCluster } from './cluster.js';
import { registerCni } from './cni.js';
import { registerDaemon } from './daemon.js';
import { registerDemo } from './demo.js';
import { registerExplain } from './explain.js';
import { registerImage } from './image.js';
import { registerInstall, registerUninstall } from './install.js';
import { registerSriov } from './sriov.js';
import { registerDevicePlugin } from './deviceplugin.js';
import { registerWebhook } from './webhook.js';
import { registerIpam } from './ipam.js';
import { registerPolicy } from './policy.js';
import { registerDra } from './dra.js';
import { errorLine } from './options.js';

// Set by the bundler (scripts/build.mjs) from package.json and the git commit.
declare const PLEXUS_VERSION: string | undefined;
const version = typeof PLEXUS_VERSION === 'string' ? PLEXUS_VERSION : 'development build';

const program = new Command('plexusctl')
  .description('Plexus: multi-network attachments for Kubernetes pods')
  .version(`plexusctl ${version}; CNI spec 1.1.0, NPWG v1.3, device-info 1.1.0, kubelet device plugin v1beta1`, '-V, --version')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });
registerCni(program);
registerCluster(program);
registerApiServer(program);
registerDaemon(program);
registerDemo(program);
registerExplain(program);
registerImage(program);
registerInstall(program);
registerUninstall(program);
registerSriov(program);
registerDevicePlugin(program);
registerWebhook(program);
registerIpam(program);
registerPolicy(program);
registerDra(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; usage errors answer like a plugin does.
    if (err.exitCode !== 0) {
      process.stdout.write(`${JSON.stringify(new CniError(ErrorCode.InvalidEnvironment, 'invalid arguments', err.message).toJSON(), null, 2)}\n`);
    }
    process.exitCode = err.exitCode === 0 ? 0 : 1;
  } else {
    // A failed command says what failed in one line, not a stack trace (PLEXUS_DEBUG=1 shows it).
    const command = process.argv.slice(2).find((a) => !a.startsWith('-')) ?? '';
    process.stderr.write(`plexusctl${command ? ` ${command}` : ''}: ${errorLine(err)}\n`);
    process.exitCode = 1;
  }
}
