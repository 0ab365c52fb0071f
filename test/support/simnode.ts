/** One simulated node per suite: started before its tests, stopped (links and API double gone) after. */
import { SimNode } from '../../src/sim/simnode.js';
import type { Rig } from './rig.js';

/** Registers the suite's hooks (call it before the suite's own `after`, which then runs later). */
export function useSimNode(rig: Rig, name: string): SimNode {
  const node = new SimNode(rig.dir(name));
  before(() => node.start());
  after(() => node.stop());
  return node;
}
