/** The CNI toolkit: plugin side (skel), runtime side (runtime, invoke, cache), types and conversion. */
export * from './args.js';
export * from './cache.js';
export * from './conf.js';
export * from './errors.js';
export * from './invoke.js';
export * from './runtime.js';
export * from './skel.js';
export * from './types.js';
export * from './version.js';
