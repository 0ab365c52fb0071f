/**
 * JSON Schemas for what CNI reads from outside: network configs, plugin configs, results. Data
 * only: scripts/gen-validators.mjs compiles them at build time (see validate.ts).
 */

export const NAME_PATTERN = '^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$';
const VERSION_PATTERN = '^\\d+\\.\\d+\\.\\d+$';
const boolish = { anyOf: [{ type: 'boolean' }, { enum: ['true', 'false', 'True', 'False', 'TRUE', 'FALSE'] }] };

const pluginSchema = {
  type: 'object',
  required: ['type'],
  properties: {
    type: { type: 'string', minLength: 1, pattern: '^[^/\\\\]+$' },
    capabilities: { type: 'object', additionalProperties: { type: 'boolean' } },
    ipam: { type: 'object', properties: { type: { type: 'string' } } },
    dns: {
      type: 'object',
      properties: {
        nameservers: { type: 'array', items: { type: 'string' } },
        domain: { type: 'string' },
        search: { type: 'array', items: { type: 'string' } },
        options: { type: 'array', items: { type: 'string' } },
      },
    },
  },
} as const;

export const confListSchema = {
  type: 'object',
  required: ['name', 'plugins'],
  properties: {
    cniVersion: { type: 'string', pattern: VERSION_PATTERN },
    cniVersions: { type: 'array', items: { type: 'string', pattern: VERSION_PATTERN } },
    name: { type: 'string', pattern: NAME_PATTERN },
    disableCheck: boolish,
    disableGC: boolish,
    loadOnlyInlinedPlugins: boolish,
    plugins: { type: 'array', items: pluginSchema },
  },
} as const;

/** Legacy single-plugin conf: a plugin object with `name` and (optionally) `cniVersion` on top. */
export const singleConfSchema = {
  type: 'object',
  required: ['name', 'type'],
  properties: {
    ...pluginSchema.properties,
    cniVersion: { type: 'string', pattern: VERSION_PATTERN },
    name: { type: 'string', pattern: NAME_PATTERN },
  },
} as const;

/** A plugin object in its own file under `<confdir>/<network name>/`. */
export const pluginFileSchema = { ...singleConfSchema, required: ['type'] } as const;

/** What a plugin receives on stdin for ADD/DEL/CHECK/STATUS/GC. */
export const pluginStdinSchema = {
  type: 'object',
  required: ['cniVersion', 'type'],
  properties: {
    ...pluginSchema.properties,
    cniVersion: { type: 'string', pattern: VERSION_PATTERN },
    name: { type: 'string', pattern: NAME_PATTERN },
    runtimeConfig: { type: 'object' },
    args: { type: 'object' },
    prevResult: { type: 'object' },
  },
} as const;

const ipConfig = {
  type: 'object',
  required: ['address'],
  properties: {
    address: { type: 'string' },
    gateway: { type: 'string' },
    interface: { type: 'integer', minimum: 0 },
    version: { enum: ['4', '6'] },
  },
} as const;
const route = {
  type: 'object',
  required: ['dst'],
  properties: {
    dst: { type: 'string' },
    gw: { type: 'string' },
    mtu: { type: 'integer', minimum: 0 },
    advmss: { type: 'integer', minimum: 0 },
    priority: { type: 'integer', minimum: 0 },
    table: { type: 'integer', minimum: 0 },
    scope: { type: 'integer', minimum: 0 },
  },
} as const;
const ip020 = {
  type: 'object',
  required: ['ip'],
  properties: { ip: { type: 'string' }, gateway: { type: 'string' }, routes: { type: 'array', items: route } },
} as const;

export const resultSchema = {
  type: 'object',
  required: ['cniVersion'],
  properties: {
    cniVersion: { type: 'string', pattern: VERSION_PATTERN },
    interfaces: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name'],
        properties: {
          name: { type: 'string' },
          mac: { type: 'string' },
          mtu: { type: 'integer', minimum: 0 },
          sandbox: { type: 'string' },
          socketPath: { type: 'string' },
          pciID: { type: 'string' },
        },
      },
    },
    ips: { type: 'array', items: ipConfig },
    routes: { type: 'array', items: route },
    ip4: ip020,
    ip6: ip020,
    dns: pluginSchema.properties.dns,
  },
} as const;
