/**
 * A small PKI for a local cluster and the API server double: a CA and the certificates it signs
 * (ECDSA P-256), made with the openssl CLI because Node can parse X.509 but not issue it. Used by
 * tooling only (`plexusctl cluster`, the simulated node), never on a per-pod path.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface KeyPair {
  cert: string;
  key: string;
}

export interface CertRequest {
  /** File name stem under the PKI dir. */
  name: string;
  cn: string;
  /** Subject organisations (Kubernetes groups, e.g. system:masters). */
  orgs?: string[];
  dnsNames?: string[];
  ips?: string[];
  usage: 'server' | 'client' | 'both';
}

function openssl(args: string[], input?: string): void {
  execFileSync('openssl', args, { stdio: ['pipe', 'ignore', 'pipe'], input });
}

function newKey(path: string): void {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
}

export class Pki {
  readonly ca: KeyPair;

  /** Opens the PKI in `dir`, making its CA if there is none yet. */
  constructor(
    readonly dir: string,
    caName = 'plexus-ca',
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.ca = { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
    try {
      readFileSync(this.ca.cert);
    } catch {
      newKey(this.ca.key);
      openssl([
        'req',
        '-x509',
        '-new',
        '-key',
        this.ca.key,
        '-subj',
        `/CN=${caName}`,
        '-days',
        '3650',
        '-out',
        this.ca.cert,
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
      ]);
    }
  }

  /** A key and a certificate signed by the CA. */
  issue(req: CertRequest): KeyPair {
    const out = { cert: join(this.dir, `${req.name}.crt`), key: join(this.dir, `${req.name}.key`) };
    newKey(out.key);
    const subject = `${(req.orgs ?? []).map((o) => `/O=${o}`).join('')}/CN=${req.cn}`;
    const sans = [...(req.dnsNames ?? []).map((d) => `DNS:${d}`), ...(req.ips ?? []).map((i) => `IP:${i}`)];
    const eku = { server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' }[req.usage];
    const ext = join(this.dir, `${req.name}.ext`);
    writeFileSync(
      ext,
      [`basicConstraints=critical,CA:FALSE`, `keyUsage=critical,digitalSignature,keyEncipherment`, `extendedKeyUsage=${eku}`, ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : [])].join('\n') +
        '\n',
    );
    const csr = join(this.dir, `${req.name}.csr`);
    openssl(['req', '-new', '-key', out.key, '-subj', subject, '-out', csr]);
    openssl(['x509', '-req', '-in', csr, '-CA', this.ca.cert, '-CAkey', this.ca.key, '-CAcreateserial', '-days', '825', '-extfile', ext, '-out', out.cert]);
    return out;
  }

  /** A bare key pair (service-account token signing): private key and public key files. */
  keyPair(name: string): { key: string; pub: string } {
    const key = join(this.dir, `${name}.key`);
    const pub = join(this.dir, `${name}.pub`);
    newKey(key);
    openssl(['pkey', '-in', key, '-pubout', '-out', pub]);
    return { key, pub };
  }
}
