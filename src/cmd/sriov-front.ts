/** `sriov` as the runtime execs it (dist/sriov.cjs): VERSION here, everything else in dist/sriov.mjs. */
import { runFront } from './oneshot-front.js';

runFront('sriov.mjs');
