/** Root hooks: fail loudly if a test left netns or links behind, and remove them. */
import { sweepLeftovers } from './rig.js';

export const mochaHooks = {
  afterAll(): void {
    const left = sweepLeftovers();
    if (left.length) throw new Error(`tests left these behind (now removed): ${left.join(', ')}`);
  },
};
