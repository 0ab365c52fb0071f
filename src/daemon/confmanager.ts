/**
 * The node daemon's config manager: keeps `00-plexus.conflist` in the runtime's conf dir in step
 * with the cluster network's conf (first in the dir), rewriting it by temp + rename when that
 * changes. It never removes it: with the meta conf gone a runtime would silently use the cluster
 * network alone (Multus's fallback defect); while the daemon is down the shim answers code 11.
 */
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../cni/cache.js';
import { META_CONF_NAME, type MetaConfOptions, clusterNetworkConf, metaConflist } from '../meta/install.js';

export class ConfManager {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly confDir: string,
    private readonly opts: MetaConfOptions,
    private readonly log: (msg: string, fields?: Record<string, unknown>) => void = () => undefined,
  ) {}

  /** Writes the meta conf if needed; returns the cluster network conf it follows, if any. */
  reconcile(): string | undefined {
    const cluster = clusterNetworkConf(this.confDir);
    if (!cluster) {
      this.log('no cluster network conf yet: the meta conf is left as it is', { confDir: this.confDir });
      return undefined;
    }
    let text: string;
    try {
      text = metaConflist(cluster, this.opts);
    } catch (err) {
      // A cluster conf being written, or broken: keep serving with the meta conf we have.
      this.log('cluster network conf unreadable: the meta conf is left as it is', { cluster, error: (err as Error).message });
      return cluster;
    }
    const target = join(this.confDir, META_CONF_NAME);
    let current: string | undefined;
    try {
      current = readFileSync(target, 'utf8');
    } catch {
      current = undefined;
    }
    if (current !== text) {
      writeFileAtomic(target, text, { mode: 0o644 });
      this.log('meta conf written', { conf: target, cluster });
    }
    return cluster;
  }

  start(): void {
    this.reconcile();
    // Our own rename triggers an event too: reconcile then finds nothing to change.
    this.watcher = watch(this.confDir, () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.reconcile(), 200);
    });
  }

  stop(): void {
    clearTimeout(this.timer);
    this.watcher?.close();
  }
}
