/**
 * The meta CNI plugin `plexus`: its commands. ADD, top to bottom:
 *   stdin → meta conf → plan (invocation.ts, plan.ts: pod annotations, cluster network, default networks,
 *   selected NADs, devices) → store record → delegates in order → default route → network-status +
 *   events (report.ts) → the cluster network's result, in the runtime's version. A failed ADD is
 *   rolled back right here. DEL, CHECK, STATUS and GC work from the store record: they need no API.
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { argsForDelegates } from '../cni/args.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { parseNetworkConfig } from '../cni/conf.js';
import type { RuntimeConf } from '../cni/runtime.js';
import type { Plugin, PluginRequest } from '../cni/skel.js';
import { type AnyResult, type Attachment, type NetworkConfigList, SUPPORTED_VERSIONS, versionAtLeast } from '../cni/types.js';
import { nativeAddon } from '../util/native.js';
import type { MetaConf } from './conf.js';
import { type MetaContext, observed } from './context.js';
import { copyDpDeviceInfo, removeDeviceInfo } from './deviceinfo.js';
import { MetaInvocation, type PlannedAttachment } from './invocation.js';
import { inlineDelegate } from './nad.js';
import { waitForAddsInFlight } from './orphans.js';
import { planAttachments } from './plan.js';
import { addedEvents, applyDefaultRoute, claimNetworkData, event, policyNetworks, reportAdd, statusEntries, writeStatus } from './report.js';
import type { AttachmentRecord, StoredAttachment } from './store.js';

/** How long the daemon's ADD waits for the network-status PATCH before answering with the status owed. */
export const STATUS_IN_ADD_MS = 3000;

/** Names of the interfaces in the pod netns, read there by the addon in one call (no netlink module). */
function interfacesInNetns(netns: string): Set<string> {
  try {
    return new Set(nativeAddon().linkNames(netns));
  } catch (err) {
    throw new CniError(ErrorCode.UnknownContainer, 'cannot open the pod network namespace', `${netns}: ${(err as Error).message}`);
  }
}

function toStored(a: PlannedAttachment, list: NetworkConfigList): StoredAttachment {
  const s: StoredAttachment = { network: a.network, ifName: a.ifName, config: list.bytes.toString(), capabilityArgs: a.capabilityArgs, isDefault: a.isDefault, state: 'planned' };
  if (a.deviceID) s.deviceID = a.deviceID;
  if (a.claim) s.claim = a.claim;
  if (a.deviceInfoFile) s.deviceInfoFile = a.deviceInfoFile;
  if (a.selection?.defaultRoute) s.defaultRoute = a.selection.defaultRoute;
  if (a.auxiliary) s.auxiliary = true;
  return s;
}

function storedList(s: StoredAttachment): NetworkConfigList {
  return parseNetworkConfig(Buffer.from(s.config), s.network);
}

function readinessCheck(conf: MetaConf): void {
  if (conf.readinessindicatorfile && !existsSync(conf.readinessindicatorfile)) {
    throw new CniError(ErrorCode.TryAgainLater, 'cluster network not ready', `readiness indicator ${conf.readinessindicatorfile} does not exist yet`);
  }
}

/** A record of this sandbox with nothing attached (yet, or any more). */
function emptyRecord(inv: MetaInvocation): AttachmentRecord {
  const { req, pod } = inv;
  return {
    containerID: req.containerID,
    netns: req.netns,
    ifName: req.ifName,
    args: req.args,
    podNamespace: pod?.namespace ?? '',
    podName: pod?.name ?? '',
    podUID: pod?.uid ?? '',
    cniVersion: req.conf.cniVersion,
    attachments: [],
  };
}

/** How long a record that lists nothing stays, so that a repeated DEL is still exact. */
const EMPTY_RECORD_TTL_MS = 24 * 3600 * 1000;
const EMPTY_RECORD_PRUNE_EVERY_MS = 3600 * 1000;
/** Longest wait of a DEL for delegates an interrupted ADD of the sandbox left running. */
const ORPHAN_WAIT_MS = 10_000;

/**
 * Runs work after the plugin has answered the runtime. The node daemon passes one (it outlives the
 * request and orders the work before the sandbox's next operation); the one-shot plugin awaits instead.
 */
export type DeferredRunner = (containerID: string, work: () => Promise<void>) => void;

export async function cmdAdd(req: PluginRequest, ctx: MetaContext = {}, runner?: DeferredRunner): Promise<AnyResult> {
  const inv = new MetaInvocation(req, ctx);
  const record = emptyRecord(inv);
  let attachments: PlannedAttachment[];
  let lists: NetworkConfigList[];
  try {
    if (req.argsError) throw req.argsError;
    readinessCheck(inv.conf);
    attachments = (await planAttachments(inv)).attachments;
    lists = attachments.map((a) => inv.delegateList(a));
  } catch (err) {
    // Nothing was attached. The record says so, so that the DEL the runtime sends after every failed
    // ADD is exact and cheap instead of reconstructing from config that may be what is broken.
    inv.store.write(record);
    throw err;
  }
  record.attachments = attachments.map((a, i) => toStored(a, lists[i]!));
  // Written before the first delegate runs: a crash from here on leaves DEL everything it needs.
  inv.store.write(record);
  let tried = 0;
  try {
    const existing = interfacesInNetns(req.netns);
    for (const [i, a] of attachments.entries()) {
      if (existing.has(a.ifName)) throw new CniError(ErrorCode.InvalidNetworkConfig, `interface "${a.ifName}" already exists in the pod`, `requested for ${a.network} in ${req.netns}`);
      if (a.deviceID && a.resourceName && a.deviceInfoFile) copyDpDeviceInfo(inv.conf.deviceInfoDir, a.resourceName, a.deviceID, a.deviceInfoFile);
      tried = i + 1;
      const chained = a.auxiliary ? { prevResult: { cniVersion: lists[i]!.cniVersion, interfaces: [], ips: [] } } : undefined;
      const result = await observed(inv.ctx.observer, a.network, 'ADD', () => inv.runtime.addNetworkList(lists[i]!, inv.runtimeConf(a.ifName, a.capabilityArgs), chained)).catch((err: unknown) => {
        // The delegate's code and message, and which attachment it was: the runtime shows only this.
        const e = CniError.from(err);
        const where = `network ${a.network} (${a.isDefault ? 'the cluster network' : 'NAD'}) as ${a.ifName}`;
        throw new CniError(e.code, e.msg, e.details ? `${e.details}; ${where}` : where);
      });
      record.attachments[i] = { ...record.attachments[i]!, state: 'added', result };
      existing.add(a.ifName);
      inv.log(`ADD ${req.containerID} ${a.network} as ${a.ifName}: ok`);
    }
    const carrier = record.attachments.find((s) => s.defaultRoute !== undefined);
    if (carrier)
      await applyDefaultRoute(
        req.netns,
        carrier,
        record.attachments.filter((s) => s !== carrier),
      );
    if (inv.ctx.policy && inv.pod) await installPolicy(inv, record);
  } catch (err) {
    const failing = record.attachments[tried - 1];
    if (failing && failing.state === 'planned') record.attachments[tried - 1] = { ...failing, state: 'failed' };
    inv.log(`ADD failed, rolling back ${tried} attachment(s): ${(err as Error).message}`, 'error');
    await rollback(inv, record, lists, tried);
    await event(inv, 'Warning', 'NetworkAttachFailed', (err as Error).message);
    throw err;
  }
  const status = JSON.stringify(statusEntries(record, inv.conf.multusStatusCompat));
  if (runner && inv.pod && (await inv.apiClient().catch(() => undefined))) {
    // Node daemon: network-status is part of the ADD (the pod is networked for its users once it is
    // there), Events follow the reply. A status the API did not take is owed: retried after the reply,
    // and recorded, so a daemon that dies before the API acknowledges it sends it when it starts again.
    // An API server that hangs delays the ADD by STATUS_IN_ADD_MS at most: the PATCH then finishes, or is
    // retried, after the reply.
    inv.store.write(record);
    const patching = writeStatus(inv, status, 1);
    const written = await Promise.race([patching, sleep(STATUS_IN_ADD_MS).then(() => false)]);
    if (!written) {
      record.pendingStatus = status;
      inv.store.write(record);
    }
    runner(req.containerID, async () => {
      if (!written && ((await patching) || (await writeStatus(inv, status, 3)))) inv.store.settlePendingStatus(req.containerID, status);
      await Promise.all([addedEvents(inv, record), claimNetworkData(inv, record)]);
    });
  } else {
    inv.store.write(record);
    await reportAdd(inv, record, status);
  }
  const cluster = record.attachments[0]?.result;
  if (!cluster) throw new CniError(ErrorCode.Internal, 'cluster network returned no result');
  // In the delegate's version: the skel prints it in the runtime's, as for any plugin.
  return cluster;
}

/** The daemon's network policy for the new sandbox, in place before the ADD returns (no unprotected moment). */
async function installPolicy(inv: MetaInvocation, record: AttachmentRecord): Promise<void> {
  const pod = inv.pod!;
  const networks = policyNetworks(record);
  try {
    await inv.ctx.policy!.attached({ containerID: record.containerID, netns: record.netns, namespace: pod.namespace, name: pod.name, ...(pod.uid ? { uid: pod.uid } : {}), networks });
  } catch (err) {
    throw new CniError(ErrorCode.TryAgainLater, 'network policy not installed', (err as Error).message);
  }
}

/**
 * Partial ADD failure: DEL the attachments that were tried, in reverse (the failing one too: it may
 * have done part of its work). The record keeps only what could not be undone, so the runtime's
 * DEL that follows a failed ADD retries exactly that, without reconstructing anything.
 */
async function rollback(inv: MetaInvocation, record: AttachmentRecord, lists: NetworkConfigList[], tried: number): Promise<void> {
  const failed = await deleteInReverse(record.attachments.slice(0, tried), async (s, i) => {
    await inv.runtime.delNetworkList(lists[i]!, inv.runtimeConf(s.ifName, s.capabilityArgs), { prevResult: s.result });
    removeDeviceInfo(s.deviceInfoFile);
  });
  for (const { item: s, reason } of failed) inv.log(`rollback DEL of ${s.network} (${s.ifName}) failed: ${reason}`, 'error');
  for (const s of record.attachments.slice(tried)) removeDeviceInfo(s.deviceInfoFile);
  inv.store.write({ ...record, attachments: failed.map((f) => f.item) });
}

/** DELs each item, last first, every one tried whatever the others do; those that failed, in their own order, with why. */
async function deleteInReverse<T>(items: readonly T[], del: (item: T, index: number) => Promise<void>): Promise<{ item: T; reason: string }[]> {
  const failed: { item: T; reason: string }[] = [];
  for (let i = items.length - 1; i >= 0; i--) {
    try {
      await del(items[i]!, i);
    } catch (err) {
      failed.unshift({ item: items[i]!, reason: (err as Error).message });
    }
  }
  return failed;
}

export async function cmdDel(req: PluginRequest, ctx: MetaContext = {}): Promise<void> {
  const inv = new MetaInvocation(req, ctx);
  ctx.policy?.detached(req.containerID);
  const read = inv.store.read(req.containerID);
  if (read.kind === 'ok') {
    await delRecord(inv, read.record);
    inv.store.pruneEmpty(EMPTY_RECORD_TTL_MS, EMPTY_RECORD_PRUNE_EVERY_MS);
    return;
  }
  // No usable record: rebuild the plan from config and annotations, DEL every delegate it yields.
  // A delegate whose DEL fails fails this DEL (the runtime retries). What cannot be rebuilt at all (a
  // NAD gone, an annotation that does not parse: most often an ADD refused before it recorded
  // anything) cannot get better by retrying: said in the log and an Event, and the DEL converges.
  const { attachments, problems, retryable } = await planAttachments(inv, true);
  const failed = await deleteInReverse(attachments, async (a) => {
    await inv.runtime.delNetworkList(inv.delegateList(a), inv.runtimeConf(a.ifName, a.capabilityArgs), { prevResult: undefined });
    removeDeviceInfo(a.deviceInfoFile);
  });
  const errors = [...retryable, ...failed.map(({ item: a, reason }) => `DEL ${a.network} (${a.ifName}): ${reason}`)];
  if (!errors.length) {
    if (problems.length) {
      const message = `DEL without ${read.kind === 'corrupt' ? 'a readable' : 'an'} attachment record: could not rebuild ${problems.join('; ')}; whatever an earlier ADD attached for them is left as it is`;
      inv.log(message, 'error');
      await event(inv, 'Warning', 'NetworkAttachmentAbandoned', message);
    }
    inv.store.write(emptyRecord(inv));
    return;
  }
  errors.push(...problems.filter((p) => !retryable.includes(p)));
  const why = read.kind === 'corrupt' ? `the attachment record is corrupt (${read.reason})` : 'there is no attachment record';
  throw new CniError(ErrorCode.Internal, `DEL: ${why}; deleted ${attachments.length} reconstructed attachment(s), could not clean everything`, errors.join('; '));
}

async function delRecord(inv: MetaInvocation, record: AttachmentRecord): Promise<void> {
  if (record.attachments.some((a) => a.state === 'planned')) {
    // An ADD that never finished: delegates its dead invocation started may still be running.
    const left = await waitForAddsInFlight(record.containerID, ORPHAN_WAIT_MS);
    if (left.length) inv.log(`DEL: processes still adding ${record.containerID} after ${ORPHAN_WAIT_MS} ms: ${left.join(', ')}; deleting anyway`, 'error');
  }
  const errors: string[] = [];
  const abandoned: NonNullable<AttachmentRecord['abandoned']> = [];
  const kept: StoredAttachment[] = [];
  const failed = await deleteInReverse(record.attachments, async (s) => {
    const rt: RuntimeConf = { containerID: record.containerID, netns: inv.req.netns, ifName: s.ifName, args: argsForDelegates(inv.req.args), capabilityArgs: s.capabilityArgs };
    await observed(inv.ctx.observer, s.network, 'DEL', () => inv.runtime.delNetworkList(storedList(s), rt, { prevResult: s.result }));
    removeDeviceInfo(s.deviceInfoFile);
  });
  for (const { item: s, reason } of failed) {
    if (s.state === 'failed') {
      // Its ADD failed, the rollback's DEL failed and the runtime's DEL fails the same way: the reason
      // (a config its plugin refuses, a master or netns gone) will not change. Given up on, said where.
      abandoned.push({ network: s.network, ifName: s.ifName, reason, at: new Date().toISOString() });
      inv.log(
        `DEL: abandoned ${s.network} (${s.ifName}) of ${record.containerID}, whose ADD failed: its DEL keeps failing (${reason}); what it may have left is in netns ${record.netns || '(gone)'} and its plugin's state`,
        'error',
      );
    } else {
      kept.push(s);
      errors.push(`DEL ${s.network} (${s.ifName}): ${reason}`);
    }
  }
  if (abandoned.length) {
    await event(inv, 'Warning', 'NetworkAttachmentAbandoned', abandoned.map((a) => `${a.network} (${a.ifName}): its ADD failed and its DEL keeps failing: ${a.reason}`).join('; '));
  }
  // NPWG §7.2: try every attachment, then return a final error; the record keeps what to retry.
  if (errors.length) {
    inv.store.write({ ...record, attachments: kept, abandoned: [...(record.abandoned ?? []), ...abandoned] });
    throw new CniError(ErrorCode.Internal, `DEL failed for ${errors.length} of ${record.attachments.length} attachments`, errors.join('; '));
  }
  // The record stays, listing nothing, so that a repeated DEL (containerd sends them) is exact.
  // A status still owed to a pod that is being torn down is owed no more.
  const { pendingStatus: _dropped, ...rest } = record;
  if (record.attachments.length || _dropped !== undefined) inv.store.write({ ...rest, attachments: [], ...(abandoned.length ? { abandoned: [...(record.abandoned ?? []), ...abandoned] } : {}) });
}

export async function cmdCheck(req: PluginRequest, ctx: MetaContext = {}): Promise<void> {
  if (req.argsError) throw req.argsError;
  const inv = new MetaInvocation(req, ctx);
  const read = inv.store.read(req.containerID);
  if (read.kind !== 'ok') throw new CniError(ErrorCode.UnknownContainer, 'no attachment record for this container', read.kind === 'corrupt' ? read.reason : req.containerID);
  for (const s of read.record.attachments) {
    const list = storedList(s);
    if (list.disableCheck || !versionAtLeast(list.cniVersion, '0.4.0')) continue;
    if (s.state !== 'added') throw new CniError(ErrorCode.UnknownContainer, `${s.network} (${s.ifName}) was never added`);
    await observed(inv.ctx.observer, s.network, 'CHECK', () => inv.runtime.checkNetworkList(list, inv.runtimeConf(s.ifName, s.capabilityArgs), { prevResult: s.result }));
  }
}

/** Every network in use: the cluster network plus each distinct delegate config in the store. */
function networksInUse(inv: MetaInvocation, records: AttachmentRecord[]): Map<string, { list: NetworkConfigList; valid: Attachment[] }> {
  const out = new Map<string, { list: NetworkConfigList; valid: Attachment[] }>();
  for (const r of records) {
    for (const s of r.attachments) {
      const entry = out.get(s.config) ?? { list: storedList(s), valid: [] };
      entry.valid.push({ containerID: r.containerID, ifname: s.ifName });
      out.set(s.config, entry);
    }
  }
  return out;
}

function readRecords(inv: MetaInvocation): AttachmentRecord[] {
  return inv.store
    .list()
    .map((id) => inv.store.read(id))
    .flatMap((r) => (r.kind === 'ok' ? [r.record] : []));
}

export async function cmdStatus(req: PluginRequest, ctx: MetaContext = {}): Promise<void> {
  const inv = new MetaInvocation(req, ctx);
  try {
    readinessCheck(inv.conf);
  } catch (err) {
    throw new CniError(ErrorCode.PluginNotAvailable, 'cluster network not ready', (err as CniError).details);
  }
  const lists = [...networksInUse(inv, readRecords(inv)).values()].map((n) => n.list);
  const clusterNetwork = inv.conf.delegates ? inlineDelegate(inv.conf.delegates[0]!, 0, inv.conf) : (await inv.resolveNamed(inv.conf.clusterNetwork!)).list;
  const seen = new Set<string>();
  for (const list of [clusterNetwork, ...lists]) {
    const key = list.bytes.toString();
    if (seen.has(key)) continue;
    seen.add(key);
    await inv.runtime.statusNetworkList(list);
  }
}

export async function cmdGc(req: PluginRequest, ctx: MetaContext = {}): Promise<void> {
  const inv = new MetaInvocation(req, ctx);
  const valid = (req.conf['cni.dev/valid-attachments'] ?? []) as Attachment[];
  const keep = new Set(valid.map((a) => `${a.containerID}\u0000${a.ifname}`));
  const errors: string[] = [];
  const kept: AttachmentRecord[] = [];
  for (const id of inv.store.list()) {
    const read = inv.store.read(id);
    if (read.kind !== 'ok') {
      errors.push(`record ${id}: ${read.kind === 'corrupt' ? read.reason : 'vanished'}`);
      continue;
    }
    if (keep.has(`${read.record.containerID}\u0000${read.record.ifName}`)) {
      kept.push(read.record);
      continue;
    }
    try {
      // Stale attachment: usually its netns is gone and plugins release what they hold without it;
      // if the netns is still there, DEL inside it so its interfaces go too.
      const netns = read.record.netns && existsSync(read.record.netns) ? read.record.netns : '';
      const gcInv = new MetaInvocation({ ...req, command: 'DEL', containerID: read.record.containerID, netns, ifName: read.record.ifName, args: read.record.args }, ctx);
      await delRecord(gcInv, read.record);
      inv.store.delete(id);
    } catch (err) {
      errors.push(`DEL ${id}: ${(err as Error).message}`);
    }
  }
  for (const { list, valid: delegateValid } of networksInUse(inv, kept).values()) {
    try {
      await inv.runtime.gcNetworkList(list, delegateValid);
    } catch (err) {
      errors.push(`GC ${list.name}: ${(err as Error).message}`);
    }
  }
  if (errors.length) throw new CniError(ErrorCode.Internal, `GC had ${errors.length} error(s)`, errors.join('; '));
}

/** The meta plugin as hosted by `ctx` (the daemon's); `runner` defers reporting until after the reply. */
export function metaPluginWith(ctx: MetaContext, runner?: DeferredRunner): Plugin {
  return {
    refusesBadArgs: true,
    about: 'Plexus meta CNI plugin (NPWG multi-network)',
    supportedVersions: SUPPORTED_VERSIONS,
    add: (req) => cmdAdd(req, ctx, runner),
    del: (req) => cmdDel(req, ctx),
    check: (req) => cmdCheck(req, ctx),
    status: (req) => cmdStatus(req, ctx),
    gc: (req) => cmdGc(req, ctx),
  };
}

/** The one-shot plugin: hosted by nothing. */
export const metaPlugin: Plugin = metaPluginWith({});
