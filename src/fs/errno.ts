// SFTP status codes to POSIX errno. SFTP v3 has only seven failure codes and
// OpenSSH's sftp-server folds EEXIST, ENOTEMPTY, ENOSPC, EISDIR... into the
// generic FAILURE; callers that can tell those apart (with a stat) do so in
// ops.ts. Servers that send strerror() texts (gesftpserver, rclone) get a
// second chance here through the message.

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EACCES: 13,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  EOPNOTSUPP: 95,
  ENOTCONN: 107,
  EDQUOT: 122,
} as const;

/** An error carrying the errno a FUSE op returns (positive; negated at the FUSE boundary). */
export class FsError extends Error {
  constructor(readonly errno: number, message?: string) {
    super(message ?? `errno ${errno}`);
  }
}

export const SFTP_FAILURE = 4;

const BY_STATUS: Record<number, number> = {
  2: Errno.ENOENT, // NO_SUCH_FILE
  3: Errno.EACCES, // PERMISSION_DENIED
  5: Errno.EIO, // BAD_MESSAGE
  6: Errno.EIO, // NO_CONNECTION
  7: Errno.EIO, // CONNECTION_LOST
  8: Errno.EOPNOTSUPP, // OP_UNSUPPORTED
  // SFTP v4-v6 codes, sent by some servers even in a v3 session.
  9: Errno.EBADF,
  10: Errno.ENOENT,
  11: Errno.EEXIST,
  12: Errno.EROFS,
  13: Errno.ENODEV,
  14: Errno.ENOSPC,
  15: Errno.EDQUOT,
  18: Errno.ENOTEMPTY,
  19: Errno.ENOTDIR,
  20: Errno.ENAMETOOLONG,
  21: Errno.ELOOP,
  24: Errno.EISDIR,
};

const BY_MESSAGE: [RegExp, number][] = [
  [/file exists|already exists/i, Errno.EEXIST],
  [/not empty/i, Errno.ENOTEMPTY],
  [/no space/i, Errno.ENOSPC],
  [/quota/i, Errno.EDQUOT],
  [/is a directory/i, Errno.EISDIR],
  [/not a directory/i, Errno.ENOTDIR],
  [/read-only/i, Errno.EROFS],
  [/too many (levels of )?symbolic links/i, Errno.ELOOP],
  [/name too long/i, Errno.ENAMETOOLONG],
  [/operation not permitted/i, Errno.EPERM],
  [/permission denied/i, Errno.EACCES],
  [/no such file/i, Errno.ENOENT],
];

/** errno for an error from ssh2's SFTP client (status errors carry a numeric `code`). */
export function errnoOf(err: unknown): number {
  if (err instanceof FsError) return err.errno;
  const e = err as { code?: unknown; message?: string };
  if (typeof e?.code === 'number') {
    const byStatus = BY_STATUS[e.code];
    if (byStatus !== undefined && e.code !== SFTP_FAILURE) return byStatus;
    for (const [re, n] of BY_MESSAGE) if (e.message && re.test(e.message)) return n;
    return Errno.EIO;
  }
  // No status code: the channel or connection went away mid-request.
  return Errno.EIO;
}

/** True for the generic FAILURE status whose real cause a stat may reveal. */
export function isGenericFailure(err: unknown): boolean {
  return errnoOf(err) === Errno.EIO && (err as { code?: unknown })?.code === SFTP_FAILURE;
}
