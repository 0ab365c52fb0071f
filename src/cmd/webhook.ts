/** `plexusctl webhook`: the admission webhook (validate NADs and pods' network requests, inject device resources). */
import type { Command } from 'commander';
import { type ApiConfig, inClusterConfig, loadKubeconfig } from '../k8s/kubeconfig.js';
import { integerOption } from './options.js';

interface WebhookOptions {
  address: string;
  tlsCertFile?: string;
  tlsPrivateKeyFile?: string;
  selfSignedCa?: string;
  dnsName: string[];
  ip: string[];
  webhookConfig: string[];
  kubeconfig?: string;
  namespace: string;
  namespaceIsolation: boolean;
  globalNamespaces: string;
  multusNamespace: string;
  networksBefore: number;
  missingNad: string;
  podnetinfo: boolean;
  hugepagesDownwardApi: boolean;
  certCheckSeconds: number;
  logLevel: string;
}

const collect = (v: string, prev: string[]): string[] => [...prev, ...v.split(',').filter(Boolean)];

export function registerWebhook(program: Command): void {
  program
    .command('webhook')
    .description('serve the admission webhook over HTTPS: /validate (NADs, pod network requests), /mutate (device resources, podnetinfo, NAD nodeSelector), /healthz, /readyz, /metrics')
    .option('--address <host:port>', 'listen address', '0.0.0.0:8443')
    .option('--tls-cert-file <file>', 'serving certificate (PEM), read again when it changes')
    .option('--tls-private-key-file <file>', 'its private key (PEM)')
    .option('--self-signed-ca <dir>', 'instead of the two files: keep a CA and serving certificate in this dir and write the CA into the caBundle of --webhook-config')
    .option('--dns-name <name>', 'DNS name of the serving certificate made with --self-signed-ca (repeatable)', collect, [])
    .option('--ip <address>', 'IP address of that certificate (repeatable)', collect, [])
    .option('--webhook-config <kind/name>', 'mutating/<name> or validating/<name> whose caBundle --self-signed-ca keeps (repeatable)', collect, [])
    .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster credentials)')
    .option('--namespace <ns>', 'the webhook\'s own namespace, where the "nri-control-switches" ConfigMap is read', process.env.POD_NAMESPACE ?? 'plexus-system')
    .option('--namespace-isolation', 'pods may select only NADs of their own namespace and --global-namespaces (as the node conf says)', false)
    .option('--global-namespaces <list>', 'with --namespace-isolation: namespaces any pod may select from', '')
    .option('--multus-namespace <ns>', 'where a default-network annotation without a namespace points', 'kube-system')
    .option('--networks-before <n>', "networks the node conf attaches before a pod's selections (cluster network + defaultNetworks): the first automatic name is net<n>", integerOption(1), 1)
    .option('--missing-nad <deny|warn>', 'a selection naming a NAD that does not exist: deny the pod, or admit it with a warning', 'deny')
    .option('--no-podnetinfo', 'do not add the podnetinfo downward-API volume to pods that get devices')
    .option('--hugepages-downward-api', 'add hugepages requests and limits per container to podnetinfo (NRI injectHugepageDownApi)', false)
    .option('--cert-check-seconds <s>', 'how often the certificate files are checked for a change', integerOption(1), 10)
    .option('--log-level <level>', 'pino log level (JSON logs on stderr)', 'info')
    .action(async (o: WebhookOptions) => {
      if (o.missingNad !== 'deny' && o.missingNad !== 'warn') throw new Error(`--missing-nad must be deny or warn, got ${JSON.stringify(o.missingNad)}`);
      if (!o.selfSignedCa && !(o.tlsCertFile && o.tlsPrivateKeyFile)) throw new Error('give --tls-cert-file and --tls-private-key-file, or --self-signed-ca <dir>');
      const api: ApiConfig | undefined = o.kubeconfig ? await loadKubeconfig(o.kubeconfig) : inClusterConfig(process.env);
      if (!api) throw new Error('no API credentials: --kubeconfig, or run in a pod (KUBERNETES_SERVICE_HOST/PORT)');
      const pino = (await import('pino')).default;
      const { InformerCatalog } = await import('../webhook/catalog.js');
      const { Admission } = await import('../webhook/admission.js');
      const { WebhookServer } = await import('../webhook/server.js');
      const log = pino({ level: o.logLevel, base: { component: 'plexus-webhook' } }, pino.destination(2));
      const catalog = new InformerCatalog(api, { namespace: o.namespace, onError: (informer, err) => log.warn({ informer, error: err.message }, 'list/watch failed; retrying') });
      let { tlsCertFile: certFile, tlsPrivateKeyFile: keyFile } = o;
      if (o.selfSignedCa) {
        const { selfManagedCertificate, publishCaBundle } = await import('../webhook/selfca.js');
        const made = selfManagedCertificate(o.selfSignedCa, o.dnsName, o.ip);
        ({ certFile, keyFile } = made);
        const publish = () =>
          publishCaBundle(catalog.api, made.caPem, o.webhookConfig).then(
            (changed) => changed && log.info({ configs: o.webhookConfig }, 'caBundle written'),
            (err: Error) => log.warn({ error: err.message }, 'caBundle not written; retrying'),
          );
        await publish();
        setInterval(() => void publish(), 30_000).unref();
      }
      const base = { userInjections: new Map<string, Record<string, string>>(), podNetInfo: o.podnetinfo, hugepages: o.hugepagesDownwardApi };
      const policy = {
        namespaceIsolation: o.namespaceIsolation,
        globalNamespaces: o.globalNamespaces.split(',').filter(Boolean),
        multusNamespace: o.multusNamespace,
        attachmentsBefore: o.networksBefore,
        missingNad: o.missingNad,
      } as const;
      const admission = new Admission(catalog, policy, () => catalog.injectOptions(base));
      const server = new WebhookServer(admission, {
        certFile: certFile!,
        keyFile: keyFile!,
        certCheckMs: o.certCheckSeconds * 1000,
        ready: () => catalog.ready,
        cacheSizes: () => catalog.sizes(),
        log: (level, msg, fields) => log[level](fields ?? {}, msg),
      });
      const at = o.address.lastIndexOf(':');
      const url = await server.listen(o.address.slice(0, at) || '0.0.0.0', Number(o.address.slice(at + 1)));
      log.info({ url }, 'serving');
      await catalog.start();
      log.info({ nads: catalog.nadCount, ready: catalog.ready }, 'informers started');
      const stop = async () => {
        await server.close();
        await catalog.stop();
        process.exit(0);
      };
      process.once('SIGTERM', () => void stop());
      process.once('SIGINT', () => void stop());
    });
}
