/** `plexus` as the runtime execs it (dist/plexus.cjs): VERSION here, everything else in dist/plexus.mjs. */
import { runFront } from './oneshot-front.js';

runFront('plexus.mjs');
