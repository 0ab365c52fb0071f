/**
 * The one kubeconfig reader of Plexus (one-shot plugin, node daemon, informers): every form kubectl and
 * kubeadm write (YAML block or flow style, JSON), resolved the way kubectl resolves it, and never a
 * guess about which credentials go to which server.
 * - `current-context` (or the only context there is) must exist, and so must the cluster and user it
 *   names: a missing one is an error naming it, never the first entry of the list (that would send one
 *   user's credentials to another server).
 * - Relative file paths (`certificate-authority`, `client-certificate`, `client-key`, `tokenFile`) are
 *   resolved from the kubeconfig's directory, as kubectl does.
 * - `tls-server-name`, a server URL with a path prefix, `token`, `tokenFile`/`token-file`, client
 *   certificates (files and `-data`), `username`/`password` and `insecure-skip-tls-verify` are honoured;
 *   credential plugins (`exec`, `auth-provider`) and `proxy-url` are refused by name, not ignored.
 * Errors are CNI code 7 and name the file and the entry.
 */
import type { ApiTransport } from './transport.js';
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.js';
import { isObject } from '../util/object.js';

/** What a client needs to talk to one API server as one user. */
export interface ApiConfig {
  /** Scheme, host, port and any path prefix, without a trailing slash. */
  server: string;
  token?: string;
  tokenFile?: string;
  username?: string;
  password?: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** TLS SNI and the name the server certificate is checked against (`tls-server-name`). */
  serverName?: string;
  insecureSkipTLSVerify?: boolean;
  /** How requests are sent: set to share connections among clients (the daemon's HTTP/2); unset, HTTP/1.1. */
  transport?: ApiTransport;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** In-cluster config from the service environment and the mounted service-account files. */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env, saDir = SA_DIR): ApiConfig | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let ca: Buffer | undefined;
  try {
    ca = readFileSync(`${saDir}/ca.crt`);
  } catch {
    ca = undefined;
  }
  return { server, tokenFile: `${saDir}/token`, ...(ca ? { ca } : {}) };
}

type Obj = Record<string, unknown>;

/** YAML, and JSON without loading the YAML parser (flow-style YAML also starts with "{"). */
async function parseDocument(text: string): Promise<unknown> {
  if (text.trimStart().startsWith('{')) {
    try {
      return JSON.parse(text);
    } catch {
      /* flow-style YAML */
    }
  }
  // yaml is CommonJS: bundled, its dynamic import has the module as `default` only.
  const yaml = (await import('yaml')).default;
  return yaml.parse(text);
}

/** Reads the kubeconfig at `path` and returns its current context's server and credentials. */
export async function loadKubeconfig(path: string): Promise<ApiConfig> {
  const fail = (msg: string, details?: string): CniError => new CniError(ErrorCode.InvalidNetworkConfig, `kubeconfig ${path}: ${msg}`, details);
  let doc: unknown;
  try {
    doc = await parseDocument(readFileSync(path, 'utf8'));
  } catch (err) {
    throw fail('cannot be read', (err as Error).message);
  }
  return kubeconfigToApiConfig(doc, path);
}

/** The current context of a parsed kubeconfig; `path` names it in errors and anchors relative paths. */
export function kubeconfigToApiConfig(doc: unknown, path: string): ApiConfig {
  const fail = (msg: string, details?: string): CniError => new CniError(ErrorCode.InvalidNetworkConfig, `kubeconfig ${path}: ${msg}`, details);
  if (!isObject(doc)) throw fail('is not a kubeconfig', 'expected a mapping with clusters, contexts and users');
  const named = (list: string): Map<string, Obj> => {
    const v = doc[list];
    if (v === undefined || v === null) return new Map();
    if (!Array.isArray(v)) throw fail(`"${list}" must be a list`);
    const out = new Map<string, Obj>();
    for (const [i, e] of v.entries()) {
      if (!isObject(e) || typeof e.name !== 'string') throw fail(`${list}[${i}] has no name`);
      out.set(e.name, e);
    }
    return out;
  };
  const contexts = named('contexts');
  const clusters = named('clusters');
  const users = named('users');
  const current = doc['current-context'];
  if (current !== undefined && current !== null && typeof current !== 'string') throw fail('"current-context" must be a string');
  let ctxName = current || undefined;
  if (!ctxName) {
    if (contexts.size !== 1) throw fail('no current-context', contexts.size ? `set current-context to one of: ${[...contexts.keys()].join(', ')}` : 'there is no context');
    ctxName = [...contexts.keys()][0]!;
  }
  const ctxEntry = contexts.get(ctxName);
  if (!ctxEntry) throw fail(`current-context "${ctxName}" does not exist`, `contexts: ${[...contexts.keys()].join(', ') || 'none'}`);
  const ctx = isObject(ctxEntry.context) ? ctxEntry.context : {};
  if (typeof ctx.cluster !== 'string' || !ctx.cluster) throw fail(`context "${ctxName}" names no cluster`);
  const clusterEntry = clusters.get(ctx.cluster);
  if (!clusterEntry) throw fail(`cluster "${ctx.cluster}" of context "${ctxName}" does not exist`, `clusters: ${[...clusters.keys()].join(', ') || 'none'}`);
  let userEntry: Obj | undefined;
  if (ctx.user !== undefined && ctx.user !== '') {
    if (typeof ctx.user !== 'string') throw fail(`context "${ctxName}": "user" must be a string`);
    userEntry = users.get(ctx.user);
    if (!userEntry) throw fail(`user "${ctx.user}" of context "${ctxName}" does not exist`, `users: ${[...users.keys()].join(', ') || 'none'}`);
  }
  const cluster = isObject(clusterEntry.cluster) ? clusterEntry.cluster : {};
  const user = userEntry && isObject(userEntry.user) ? userEntry.user : {};
  const where = (kind: string, name: string, key: string) => `${kind} "${name}": ${key}`;
  const str = (o: Obj, key: string, at: string): string | undefined => {
    const v = o[key];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw fail(`${at} must be a string`);
    return v;
  };
  const base = dirname(resolve(path));
  const file = (o: Obj, key: string, at: string): Buffer | undefined => {
    const p = str(o, key, at);
    if (p === undefined) return undefined;
    const abs = isAbsolute(p) ? p : resolve(base, p);
    try {
      return readFileSync(abs);
    } catch (err) {
      throw fail(`${at}: cannot read ${abs}`, (err as Error).message);
    }
  };
  const data = (o: Obj, key: string, at: string): Buffer | undefined => {
    const d = str(o, key, at);
    if (d === undefined) return undefined;
    if (!/^[A-Za-z0-9+/=\s]+$/.test(d)) throw fail(`${at} is not base64`);
    return Buffer.from(d, 'base64');
  };

  const cName = ctx.cluster;
  const server = str(cluster, 'server', where('cluster', cName, 'server'));
  if (!server) throw fail(`cluster "${cName}" has no server`);
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw fail(`cluster "${cName}": server "${server}" is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw fail(`cluster "${cName}": server "${server}" is not http(s)`);
  if (str(cluster, 'proxy-url', where('cluster', cName, 'proxy-url'))) throw fail(`cluster "${cName}": proxy-url is not supported`, 'reach the API server directly');
  const cfg: ApiConfig = { server: `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}` };
  const ca =
    data(cluster, 'certificate-authority-data', where('cluster', cName, 'certificate-authority-data')) ?? file(cluster, 'certificate-authority', where('cluster', cName, 'certificate-authority'));
  if (ca) cfg.ca = ca;
  const serverName = str(cluster, 'tls-server-name', where('cluster', cName, 'tls-server-name'));
  if (serverName) cfg.serverName = serverName;
  if (cluster['insecure-skip-tls-verify'] === true) {
    // kubectl refuses the combination: a CA that is then not checked is a mistake, not a choice.
    if (ca) throw fail(`cluster "${cName}": certificate-authority and insecure-skip-tls-verify together`, 'drop one of them');
    cfg.insecureSkipTLSVerify = true;
  }

  if (userEntry) {
    const uName = userEntry.name as string;
    for (const unsupported of ['exec', 'auth-provider']) {
      if (user[unsupported] !== undefined && user[unsupported] !== null)
        throw fail(`user "${uName}": ${unsupported} credential plugins are not supported`, 'use a token, a tokenFile or a client certificate');
    }
    const cert = data(user, 'client-certificate-data', where('user', uName, 'client-certificate-data')) ?? file(user, 'client-certificate', where('user', uName, 'client-certificate'));
    const key = data(user, 'client-key-data', where('user', uName, 'client-key-data')) ?? file(user, 'client-key', where('user', uName, 'client-key'));
    if (!cert !== !key) throw fail(`user "${uName}": a client certificate needs its key and the key its certificate`);
    if (cert && key) Object.assign(cfg, { cert, key });
    const token = str(user, 'token', where('user', uName, 'token'));
    const tokenFile = str(user, 'tokenFile', where('user', uName, 'tokenFile')) ?? str(user, 'token-file', where('user', uName, 'token-file'));
    if (token) cfg.token = token;
    else if (tokenFile) cfg.tokenFile = isAbsolute(tokenFile) ? tokenFile : resolve(base, tokenFile);
    const username = str(user, 'username', where('user', uName, 'username'));
    const password = str(user, 'password', where('user', uName, 'password'));
    if (username !== undefined && password !== undefined) Object.assign(cfg, { username, password });
  }
  return cfg;
}
