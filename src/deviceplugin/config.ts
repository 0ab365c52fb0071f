/**
 * The device plugin's config: sriov-network-device-plugin's `config.json` unchanged, plus Plexus
 * extensions, validated against `device-plugin/config.schema.json`. Keys match case-insensitively
 * (as Go's JSON decoding does), hex ids are normalised (`0x`, case), VF ranges (`pf#0-3,7`) parsed.
 */
import AjvModule from 'ajv';
import schema from '../../device-plugin/config.schema.json' with { type: 'json' };

const Ajv = AjvModule as unknown as typeof AjvModule.default;

export type DeviceType = 'netDevice' | 'accelerator' | 'auxNetDevice';
export type AllocationPolicy = 'none' | 'pack-pf' | 'spread-pf' | 'numa';

/** `name` or `name#0-3,7`: the VF indexes, or undefined for all of them. */
export interface RangedName {
  name: string;
  vfIndexes?: Set<number>;
}

export interface Selector {
  vendors?: string[];
  devices?: string[];
  drivers?: string[];
  pciAddresses?: string[];
  acpiIndexes?: string[];
  pfNames?: RangedName[];
  rootDevices?: RangedName[];
  linkTypes?: string[];
  ddpProfiles?: string[];
  pKeys?: string[];
  auxTypes?: string[];
  isRdma?: boolean;
  needVhostNet?: boolean;
  vdpaType?: 'vhost' | 'virtio';
  numaNodes?: number[];
}

export interface PoolConfig {
  resourceName: string;
  resourcePrefix: string;
  deviceType: DeviceType;
  excludeTopology: boolean;
  selectors: Selector[];
  additionalInfo: Record<string, Record<string, string>>;
  allocationPolicy: AllocationPolicy;
  bindDriver?: 'vfio-pci';
  pfLinkHealth: boolean;
}

export interface DevicePluginConfig {
  pools: PoolConfig[];
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const DEFAULT_RESOURCE_PREFIX = 'intel.com';

let compiled: ReturnType<InstanceType<typeof Ajv>['compile']> | undefined;
function validator(): ReturnType<InstanceType<typeof Ajv>['compile']> {
  compiled ??= new Ajv({ allErrors: false, strict: false }).compile(schema);
  return compiled;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
const defs = schema.definitions as Record<string, { properties?: Record<string, unknown> }>;
const KEYS = {
  top: Object.keys(schema.properties),
  pool: Object.keys(defs.pool!.properties!),
  selector: Object.keys(defs.selector!.properties!),
};

/** Renames keys to their canonical spelling (Go matches JSON keys case-insensitively). */
function canonical(value: Json, keys: string[]): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries(value)) out[keys.find((c) => c.toLowerCase() === k.toLowerCase()) ?? k] = v;
  return out;
}

function normalise(raw: Json): Json {
  const top = canonical(raw, KEYS.top) as Record<string, Json>;
  if (top && Array.isArray(top.resourceList)) {
    top.resourceList = top.resourceList.map((p) => {
      const pool = canonical(p, KEYS.pool) as Record<string, Json>;
      if (pool && typeof pool === 'object' && pool.selectors !== undefined) {
        pool.selectors = Array.isArray(pool.selectors) ? pool.selectors.map((s) => canonical(s, KEYS.selector)) : canonical(pool.selectors, KEYS.selector);
      }
      return pool;
    });
  }
  return top;
}

/** `8086`, `0x8086`, `0X8086 ` → `8086`. */
export function normaliseHex(text: string, where: string): string {
  const t = text.trim().toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]{1,4}$/.test(t)) throw new ConfigError(`${where}: "${text}" is not a 16-bit hex id`);
  return t.padStart(4, '0');
}

export function parseRanged(text: string, where: string): RangedName {
  const parts = text.split('#');
  if (parts.length > 2 || !parts[0]) throw new ConfigError(`${where}: "${text}" must be <name> or <name>#<ranges>`);
  if (parts.length === 1) return { name: parts[0] };
  const vfIndexes = new Set<number>();
  for (const item of parts[1]!.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(item.trim());
    if (!m) throw new ConfigError(`${where}: "${item}" in "${text}" is not an index or a range a-b`);
    const [a, b] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (b < a || b > 4095) throw new ConfigError(`${where}: range "${item}" in "${text}" is empty or beyond 4095`);
    for (let i = a; i <= b; i++) vfIndexes.add(i);
  }
  return { name: parts[0], vfIndexes };
}

function parseSelector(s: Record<string, Json>, where: string): Selector {
  const strings = (k: string): string[] | undefined => (s[k] as string[] | undefined)?.map((x) => x.trim());
  const sel: Selector = {};
  const vendors = strings('vendors');
  if (vendors) sel.vendors = vendors.map((v, i) => normaliseHex(v, `${where}.vendors[${i}]`));
  const devices = strings('devices');
  if (devices) sel.devices = devices.map((v, i) => normaliseHex(v, `${where}.devices[${i}]`));
  const drivers = strings('drivers');
  if (drivers) sel.drivers = drivers;
  const pci = strings('pciAddresses');
  if (pci) sel.pciAddresses = pci.map((a) => a.toLowerCase());
  for (const k of ['acpiIndexes', 'linkTypes', 'ddpProfiles', 'pKeys', 'auxTypes'] as const) {
    const v = strings(k);
    if (v) sel[k] = k === 'linkTypes' ? v.map((x) => x.toLowerCase()) : v;
  }
  const pfNames = strings('pfNames');
  if (pfNames) sel.pfNames = pfNames.map((v, i) => parseRanged(v, `${where}.pfNames[${i}]`));
  const roots = strings('rootDevices');
  if (roots) sel.rootDevices = roots.map((v, i) => ({ ...parseRanged(v, `${where}.rootDevices[${i}]`) })).map((r) => ({ ...r, name: r.name.toLowerCase() }));
  if (typeof s.isRdma === 'boolean') sel.isRdma = s.isRdma;
  if (typeof s.needVhostNet === 'boolean') sel.needVhostNet = s.needVhostNet;
  if (s.vdpaType === 'vhost' || s.vdpaType === 'virtio') sel.vdpaType = s.vdpaType;
  if (sel.isRdma && sel.vdpaType) throw new ConfigError(`${where}: isRdma and vdpaType exclude each other`);
  if (Array.isArray(s.numaNodes)) sel.numaNodes = s.numaNodes as number[];
  return sel;
}

/** Parses config.json text; throws ConfigError naming the offending field. */
export function parseConfig(text: string, defaultPrefix = DEFAULT_RESOURCE_PREFIX): DevicePluginConfig {
  let raw: Json;
  try {
    raw = JSON.parse(text) as Json;
  } catch (err) {
    throw new ConfigError(`config is not JSON: ${(err as Error).message}`);
  }
  const value = normalise(raw);
  const validate = validator();
  if (!validate(value)) {
    const e = validate.errors?.[0];
    const where = e?.instancePath ? e.instancePath.replace(/^\//, '').replace(/\//g, '.') : '(root)';
    const detail =
      e?.keyword === 'additionalProperties'
        ? `unknown key "${String(e.params.additionalProperty)}"`
        : e?.keyword === 'required'
          ? `missing "${String(e.params.missingProperty)}"`
          : e?.keyword === 'enum'
            ? `must be one of ${(e.params.allowedValues as string[]).join(', ')}`
            : (e?.message ?? 'invalid');
    throw new ConfigError(`config ${where}: ${detail}`);
  }
  const pools = ((value as { resourceList: Record<string, Json>[] }).resourceList ?? []).map((p, i): PoolConfig => {
    const where = `resourceList[${i}]`;
    const selectors = p.selectors === undefined ? [] : Array.isArray(p.selectors) ? (p.selectors as Record<string, Json>[]) : [p.selectors as Record<string, Json>];
    const pool: PoolConfig = {
      resourceName: p.resourceName as string,
      resourcePrefix: (p.resourcePrefix as string | undefined) ?? defaultPrefix,
      deviceType: (p.deviceType as DeviceType | undefined) ?? 'netDevice',
      excludeTopology: p.excludeTopology === true,
      selectors: selectors.map((s, k) => parseSelector(s, `${where}.selectors[${k}]`)),
      additionalInfo: (p.additionalInfo as Record<string, Record<string, string>> | undefined) ?? {},
      allocationPolicy: (p.allocationPolicy as AllocationPolicy | undefined) ?? 'none',
      pfLinkHealth: p.pfLinkHealth !== false,
    };
    if (p.bindDriver === 'vfio-pci') pool.bindDriver = 'vfio-pci';
    return pool;
  });
  const seen = new Set<string>();
  for (const [i, p] of pools.entries()) {
    const full = `${p.resourcePrefix}/${p.resourceName}`;
    if (seen.has(full)) throw new ConfigError(`config resourceList[${i}]: duplicate resource ${full}`);
    seen.add(full);
  }
  return { pools };
}

export function resourceFullName(pool: PoolConfig): string {
  return `${pool.resourcePrefix}/${pool.resourceName}`;
}

/**
 * `PCIDEVICE_<PREFIX>_<NAME>`, upper case. sriov-network-device-plugin replaces only `.`; the
 * shell-safe variant replaces every character that is not [A-Z0-9_] (a `-` in a name) too.
 */
export function resourceEnvName(pool: PoolConfig, shellSafe = false): string {
  const name = `PCIDEVICE_${pool.resourcePrefix}_${pool.resourceName}`.toUpperCase();
  return shellSafe ? name.replace(/[^A-Z0-9_]/g, '_') : name.replace(/\./g, '_');
}
