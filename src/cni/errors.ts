/** CNI error codes (spec 1.1.0 §"Error"), plus the two libcni library codes every Go runtime knows. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodingFailure: 6,
  InvalidNetworkConfig: 7,
  InvalidNetNS: 8,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  PluginNotAvailableLimitedConnectivity: 51,
  Internal: 999,
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode] | number;

/** The error object of the spec; `cniVersion` is added when printed to a runtime. */
export class CniError extends Error {
  constructor(
    readonly code: ErrorCodeValue,
    readonly msg: string,
    readonly details?: string,
  ) {
    super(details ? `${msg}: ${details}` : msg);
    this.name = 'CniError';
  }

  toJSON(cniVersion?: string): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    if (cniVersion) out.cniVersion = cniVersion;
    out.code = this.code;
    out.msg = this.msg;
    if (this.details) out.details = this.details;
    return out;
  }

  /** Any thrown value as a CniError: our own pass through, anything else is code 999 like Go's skel. */
  static from(err: unknown): CniError {
    if (err instanceof CniError) return err;
    const message = err instanceof Error ? err.message : String(err);
    // A file system call that failed on a path (Node sets `path` and `syscall`): the spec's I/O failure.
    const fs = err as { code?: unknown; path?: unknown; syscall?: unknown };
    if (typeof fs.code === 'string' && typeof fs.path === 'string' && typeof fs.syscall === 'string') {
      return new CniError(ErrorCode.IOFailure, `I/O failure (${fs.code})`, `${message}; check that the path exists, is the right kind of file and is writable`);
    }
    return new CniError(ErrorCode.Internal, message);
  }
}
