/** The shim ↔ daemon protocol: HTTP/1.1 on a unix socket (mode 0600). */

export const DEFAULT_DAEMON_SOCKET = '/run/plexus/plexus.sock';

/** POST /cni: one CNI invocation exactly as the runtime made it. */
export interface CniRequestBody {
  /** The runtime's whole environment (delegates get it too). */
  env: Record<string, string>;
  /** The runtime's stdin, base64. */
  stdin: string;
}

/**
 * 200 reply, simple enough for a small native shim to read without a JSON parser: the plugin's exit
 * code and the length of its stderr in headers, then its stderr followed by its stdout as the body.
 */
export const EXIT_CODE_HEADER = 'x-cni-exit-code';
export const STDERR_LENGTH_HEADER = 'x-cni-stderr-length';

export interface CniReply {
  exitCode: number;
  stdout: string;
  stderr: string;
}
