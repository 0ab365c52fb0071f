/** What the node daemon's CNI endpoint, plugin core and policy engine report, into its metrics and log. */
import type { Observer } from '../meta/context.js';
import type { PolicyObserver } from '../policy/engine.js';
import type { Log } from '../util/service.js';
import type { DaemonMetrics } from './metrics.js';
import type { DaemonHooks } from './server.js';

/** Each request served or refused: a histogram sample, an error count, a log line. */
export function daemonHooks(metrics: DaemonMetrics, log: Log): Pick<DaemonHooks, 'served' | 'overloaded' | 'inFlight'> {
  return {
    served: (command, exitCode, code, seconds, env) => {
      metrics.requests.observe({ command, code: String(code) }, seconds);
      if (code) metrics.errors.inc({ command, code: String(code) });
      const args = Object.fromEntries((env.CNI_ARGS ?? '').split(';').map((kv) => kv.split('=') as [string, string]));
      const pod = args.K8S_POD_NAMESPACE && args.K8S_POD_NAME ? `${args.K8S_POD_NAMESPACE}/${args.K8S_POD_NAME}` : undefined;
      log[exitCode === 0 ? 'info' : 'warn'](
        { command, containerID: env.CNI_CONTAINERID, pod, ifname: env.CNI_IFNAME, code, ms: Math.round(seconds * 1000) },
        `${command} ${exitCode === 0 ? 'done' : 'failed'}`,
      );
    },
    overloaded: (command, reason) => {
      metrics.overloaded.inc({ command, reason });
      log.warn({ command, reason }, 'overloaded: answered try again later');
    },
    inFlight: (n) => metrics.inFlight.set(n),
  };
}

/** The plugin core's observer: delegate timings, API requests (component `cni`), network-status writes. */
export function coreObserver(metrics: DaemonMetrics, log: Log): Observer {
  return {
    delegate: (network, command, seconds, ok) => metrics.delegate(network, command, seconds, ok),
    apiRequest: (method, path) => metrics.apiRequest(method, path),
    statusWrite: (result, pod, detail) => {
      metrics.statusWrites.inc({ result });
      if (result === 'failed') log.warn({ pod, error: detail }, 'network-status not written');
      else if (result === 'stale') log.info({ pod, reason: detail }, 'network-status dropped: the pod is gone or was replaced');
    },
  };
}

/** The policy engine's observer. */
export function policyObserver(metrics: DaemonMetrics, log: Log): PolicyObserver {
  return {
    synced: (pod, seconds, rules) => {
      metrics.policySync.observe(seconds);
      metrics.policyRules.set({ pod }, rules);
    },
    failed: (pod, error) => {
      metrics.policyErrors.inc();
      log.warn({ pod, error }, 'network policy table not replaced (retried)');
    },
    forgot: (pod) => metrics.policyRules.remove({ pod }),
    unfilterable: (p, sandbox, ifName, why) => {
      metrics.policyUnfilterable.inc();
      log.warn({ policy: `${p.namespace}/${p.name}`, pod: `${sandbox.namespace}/${sandbox.name}`, ifname: ifName, why }, 'policy not enforced on an interface');
    },
    log: (msg, fields) => log.warn(fields, msg),
  };
}
