/**
 * Work serialized per key: each run starts after the previous run of the same key settled (whatever
 * its outcome), runs of different keys go side by side, and a key's entry goes once its last run
 * settled. The daemon's per-sandbox operations, the SR-IOV CNI's per-VF lock and the policy engine's
 * per-sandbox table installs all queue this way.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const next = (this.tails.get(key) ?? Promise.resolve()).catch(() => undefined).then(work);
    this.tails.set(key, next);
    // Cleanup on either outcome, without a second promise that rejects when next does (unhandled).
    const settle = () => {
      if (this.tails.get(key) === next) this.tails.delete(key);
    };
    next.then(settle, settle);
    return next;
  }

  /** Settles once every run queued so far has settled. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.tails.values()]);
  }

  /** Keys with work queued or running. */
  get size(): number {
    return this.tails.size;
  }
}
