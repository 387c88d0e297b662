// One error type from src/sftp through src/fs and the volume to the API: a
// message written for the user (dockerd shows it verbatim as `Err`) and a
// code saying which kind of failure it is, for the request log line, Status
// and tests. A layer that adds context wraps with a new message and keeps
// the code (and the original as `cause`), never re-wraps in a plain Error.

export class TsfsError extends Error {
  constructor(
    message: string,
    /**
     * Kind of failure, e.g. 'options', 'no-such-volume', 'in-use',
     * 'link-down', 'fuse-mount', or a connection cause from src/sftp
     * ('auth', 'host-key-mismatch', 'no-such-directory', ...).
     */
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The code of any thrown value: a TsfsError's own, else 'internal' (a bug, or an error nobody explained yet). */
export function codeOf(e: unknown): string {
  return e instanceof TsfsError ? e.code : 'internal';
}
