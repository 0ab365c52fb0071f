/**
 * The admission webhook through the real kube-apiserver (control plane of `plexusctl cluster`, no
 * kubelet: admitted pods stay Pending, which is all admission needs). In one run:
 * - pod CREATE latency at 100 creates/s, seen by the client, for pods that select two networks (mutated
 *   and validated by the webhook; one SR-IOV network, so resources and podnetinfo are injected) against
 *   the same pods without a networks annotation (skipped by the configurations' CEL matchConditions);
 * - the webhook's resident memory with the example NADs only and with 10 000 NADs, and after a restart
 *   that lists those 10 000 again;
 * - LIST requests of pods the API server served during the run (kube-apiserver's own counter).
 * Run: npm run bench (after sh scripts/build-cluster.sh; writes docs/benchmarks-webhook.md)
 */
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from '../src/k8s/client.js';
import { loadKubeconfig } from '../src/k8s/kubeconfig.js';
import { Pki } from '../src/k8s/pki.js';
import { LocalCluster } from '../src/sim/cluster.js';
import { kubectlFor, preparePlexus } from '../src/sim/cluster-plexus.js';
import { repoRoot } from '../src/sim/simnode.js';
import { startWebhook, stopWebhook, webhookConfigurations, webhookCredentials } from '../test/support/webhook.js';
import { besidePrevious } from './history.js';
import { quantile, rssMiB } from './stats.js';

const RATE = 100;
const SECONDS = Number(process.env.BENCH_WEBHOOK_SECONDS ?? 10);
const NADS = Number(process.env.BENCH_WEBHOOK_NADS ?? 10_000);
const NS = 'wb';
const RESOURCE = 'intel.com/bench_vf';

const nad = (name: string, resourceName?: string) => ({
  apiVersion: 'k8s.cni.cncf.io/v1',
  kind: 'NetworkAttachmentDefinition',
  metadata: { name, namespace: NS, ...(resourceName ? { annotations: { 'k8s.v1.cni.cncf.io/resourceName': resourceName } } : {}) },
  spec: { config: JSON.stringify({ cniVersion: '1.0.0', name, type: resourceName ? 'sriov' : 'macvlan', master: 'eth0', ipam: { type: 'host-local', ranges: [[{ subnet: '10.90.0.0/16' }]] } }) },
});

/** `count` pods created at RATE per second; each request's latency in ms. */
async function createPods(api: ApiClient, label: string, annotations: Record<string, string>, count: number): Promise<number[]> {
  const latencies: number[] = [];
  const pending: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const body = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `${label}-${i}`, namespace: NS, annotations },
      spec: { automountServiceAccountToken: false, containers: [{ name: 'app', image: 'localhost/plexus-pause:1' }] },
    };
    const start = performance.now();
    pending.push(api.post(`/api/v1/namespaces/${NS}/pods`, body).then(() => void latencies.push(performance.now() - start)));
  }
  await Promise.all(pending);
  return latencies;
}

/** kube-apiserver's count of LIST requests of pods so far. */
async function podLists(kubectl: ReturnType<typeof kubectlFor>): Promise<number> {
  const text = await kubectl(['get', '--raw', '/metrics']);
  return [...text.matchAll(/^apiserver_request_total\{([^}]*)\} (\d+)$/gm)]
    .filter((m) => /resource="pods"/.test(m[1]!) && /verb="LIST"/.test(m[1]!) && /subresource=""/.test(m[1]!))
    .reduce((n, m) => n + Number(m[2]), 0);
}

/** Creates `count` NADs, 32 at a time. */
async function createNads(api: ApiClient, count: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < count) {
        const i = next++;
        await api.post(`/apis/k8s.cni.cncf.io/v1/namespaces/${NS}/network-attachment-definitions`, nad(`many-${i}`, i % 4 === 0 ? RESOURCE : undefined));
      }
    }),
  );
}

/** Waits until the webhook's cache holds `n` NADs or more (its metrics), then lets it settle; its RSS. */
async function settledRss(webhook: ChildProcess, url: string, ca: Buffer, n: number): Promise<number> {
  const { get } = await import('node:https');
  const cached = (): Promise<number> =>
    new Promise((resolve, reject) =>
      get(`${url}/metrics`, { ca }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(Number(/^plexus_webhook_cached_objects\{kind="nads"\} (\d+)$/m.exec(text)?.[1] ?? 0)));
      }).on('error', reject),
    );
  for (let i = 0; (await cached()) < n; i++) {
    if (i > 600) throw new Error(`the webhook cached ${await cached()} NADs of ${n}`);
    await sleep(500);
  }
  await sleep(10_000);
  return rssMiB(webhook.pid!);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-webhook-'));
  const cluster = new LocalCluster({ dir: join(work, 'cluster'), kubelet: false });
  const kubectl = kubectlFor(cluster);
  const logs: string[] = [];
  let webhook: ChildProcess | undefined;
  const out: Record<string, number> = {};
  try {
    await cluster.up();
    await preparePlexus(cluster, kubectl, work);
    const api = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 60_000);
    const kubeconfig = await webhookCredentials(cluster, kubectl, join(work, 'webhook.kubeconfig'));
    const pki = new Pki(join(work, 'pki'));
    const pair = pki.issue({ name: 'serving', cn: 'localhost', ips: ['127.0.0.1'], usage: 'server' });
    mkdirSync(join(work, 'tls'));
    copyFileSync(pair.cert, join(work, 'tls', 'tls.crt'));
    copyFileSync(pair.key, join(work, 'tls', 'tls.key'));
    const args = ['--kubeconfig', kubeconfig, '--namespace', 'plexus-system', '--tls-cert-file', join(work, 'tls', 'tls.crt'), '--tls-private-key-file', join(work, 'tls', 'tls.key')];
    const ca = readFileSync(pki.ca.cert);
    let url: string;
    ({ child: webhook, url } = await startWebhook(args, logs));
    out.rssFew = await settledRss(webhook, url, ca, 1);
    await kubectl(['create', 'namespace', NS]);
    for (let i = 0; i < 600 && !(await kubectl(['get', 'serviceaccount', 'default', '-n', NS, '-o', 'name']).catch(() => '')); i++) await sleep(250);
    await kubectl(['apply', '-f', '-'], webhookConfigurations(url, ca.toString('base64')));
    for (const n of [nad('wb-mv'), nad('wb-vf', RESOURCE)]) await api.post(`/apis/k8s.cni.cncf.io/v1/namespaces/${NS}/network-attachment-definitions`, n);
    await sleep(2000);

    const lists0 = await podLists(kubectl);
    const count = RATE * SECONDS;
    // Warm both paths (connections, JIT), then the two measured rounds.
    await createPods(api, 'warm-net', { 'k8s.v1.cni.cncf.io/networks': 'wb-mv,wb-vf' }, 50);
    await createPods(api, 'warm-plain', {}, 50);
    const plain = await createPods(api, 'plain', {}, count);
    const networks = await createPods(api, 'net', { 'k8s.v1.cni.cncf.io/networks': 'wb-mv,wb-vf' }, count);
    out.podLists = (await podLists(kubectl)) - lists0;
    const injected = await api.get<{ spec: { containers: { resources?: { limits?: Record<string, string> } }[] } }>(`/api/v1/namespaces/${NS}/pods/net-0`);
    if (injected.spec.containers[0]?.resources?.limits?.[RESOURCE] !== '1') throw new Error('the webhook did not inject the device: the measured path is not the real one');
    Object.assign(out, {
      plainP50: quantile(plain, 0.5),
      plainP99: quantile(plain, 0.99),
      netP50: quantile(networks, 0.5),
      netP99: quantile(networks, 0.99),
    });
    await kubectl(['delete', 'pods', '--all', '-n', NS, '--wait=false']);

    await createNads(api, NADS);
    out.rssMany = await settledRss(webhook, url, ca, NADS);
    await stopWebhook(webhook);
    ({ child: webhook, url } = await startWebhook(args, logs));
    out.rssManyRestart = await settledRss(webhook, url, ca, NADS);
  } finally {
    await stopWebhook(webhook);
    await cluster.down();
    rmSync(work, { recursive: true, force: true });
  }
  const load = loadavg();
  const ms = (v: number) => v.toFixed(1);
  const table = [
    `# Admission webhook through the real API server`,
    ``,
    `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}, load average ${load.map((l) => l.toFixed(2)).join(' ')}. kube-apiserver v1.37.2 with etcd`,
    `(\`plexusctl cluster\`, control plane only), deploy/plexus-webhook.yaml's configurations pointed at \`plexusctl webhook\` on the host`,
    `(TLS, AdmissionReview v1). Pods created at ${RATE}/s for ${SECONDS} s per round by one client over one keep-alive pool; latency is the`,
    `client's, create request to answer. "2 networks" pods select a macvlan and an SR-IOV NAD: the mutating webhook injects`,
    `the device request and podnetinfo, the validating one checks the result; "no networks" pods are skipped by the CEL matchConditions.`,
    ``,
    `| ${RATE} creates/s | p50 (ms) | p99 (ms) |`,
    `|---|---|---|`,
    `| no networks (webhooks skipped) | ${ms(out.plainP50!)} | ${ms(out.plainP99!)} |`,
    `| 2 networks (mutate + validate) | ${ms(out.netP50!)} | ${ms(out.netP99!)} |`,
    ``,
    `Admission cost: p50 +${ms(out.netP50! - out.plainP50!)} ms (${(out.netP50! / out.plainP50!).toFixed(2)}×), p99 +${ms(out.netP99! - out.plainP99!)} ms (${(out.netP99! / out.plainP99!).toFixed(2)}×).`,
    `LIST requests of pods served by the API server during both rounds: ${out.podLists} (the webhook has no access to pods at all).`,
    ``,
    `| webhook resident memory | MiB |`,
    `|---|---|`,
    `| example NADs only | ${out.rssFew!.toFixed(1)} |`,
    `| ${NADS} NADs arrived by watch | ${out.rssMany!.toFixed(1)} |`,
    `| restarted with ${NADS} NADs (listed in pages of 500) | ${out.rssManyRestart!.toFixed(1)} |`,
    ``,
    `Beside the previous run:`,
    ``,
    ...besidePrevious(
      'webhook',
      {
        'create p50, 2 networks ÷ none': out.netP50! / out.plainP50!,
        'create p99, 2 networks ÷ none': out.netP99! / out.plainP99!,
        [`RSS MiB with ${NADS} NADs`]: out.rssManyRestart!,
        'pod LISTs': out.podLists!,
      },
      load,
    ),
    ``,
    `Reproduce: \`npm run bench\` (BENCH_WEBHOOK_SECONDS, BENCH_WEBHOOK_NADS to change the round length and the NAD count).`,
    ``,
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-webhook.md'), table);
  process.stdout.write(`${table}\n`);
}

await main();
