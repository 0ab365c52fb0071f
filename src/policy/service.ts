/** MultiNetworkPolicy as a node daemon service: the engine started, the node's sandboxes adopted once it knows the policies. */
import type { PolicySandbox } from './model.js';
import type { Log, Service } from '../util/service.js';
import type { PolicyEngine } from './engine.js';

export class PolicyService implements Service {
  readonly name = 'network-policy';

  constructor(
    readonly engine: PolicyEngine,
    /** The node's sandboxes with attachments (from the attachment store): their tables are reconciled at start. */
    private readonly sandboxes: () => Promise<PolicySandbox[]>,
    private readonly log: Log,
  ) {}

  start(): Promise<void> {
    // Not awaited: DEL serves while the API server is away; an ADD waits for the policies (engine.ready).
    void this.engine
      .start()
      .then(async () => {
        const sandboxes = await this.sandboxes();
        this.engine.adopt(sandboxes);
        this.log.info({ sandboxes: sandboxes.length, ready: this.engine.ready }, 'network policy: the sandboxes of the node adopted, their tables reconciled');
      })
      .catch((err: Error) => this.log.error({ error: err.message }, 'network policy not started'));
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return this.engine.stop();
  }

  ready(): boolean {
    return this.engine.ready;
  }
}
