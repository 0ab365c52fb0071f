/** `plexus`'s ESM bundle: the meta CNI plugin, run by its CommonJS front (src/cmd/plexus-front.ts) for every command but VERSION. */
import { processIO, runPlugin } from '../cni/skel.js';
import { metaPlugin } from '../meta/plugin.js';

process.exitCode = await runPlugin(metaPlugin, processIO());
