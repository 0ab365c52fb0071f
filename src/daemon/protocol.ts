/** The shim ↔ daemon protocol: HTTP/1.1 on a unix socket (mode 0600). */

export const DEFAULT_DAEMON_SOCKET = '/run/plexus/plexus.sock';

/** POST /cni: one CNI invocation exactly as the runtime made it. */
export interface CniRequestBody {
  /** The runtime's whole environment (delegates get it too). */
  env: Record<string, string>;
  /** The runtime's stdin, base64. */
  stdin: string;
}

/** 200 reply: what the plugin would have printed, and its exit code. */
export interface CniReplyBody {
  exitCode: number;
  stdout: string;
  stderr: string;
}
