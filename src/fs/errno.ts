// SFTP status codes to POSIX errno. SFTP v3 has only seven failure codes and
// OpenSSH's sftp-server folds EEXIST, ENOTEMPTY, ENOSPC, EISDIR... into the
// generic FAILURE; callers that can tell those apart (with a stat) do so in
// ops.ts. Servers that send strerror() texts (gesftpserver, rclone) get a
// second chance here through the message.

import { constants } from 'node:os';
import { utils } from 'ssh2';

/** Linux errno values by name (positive; negated at the FUSE boundary). */
export const Errno = constants.errno;

const S = utils.sftp.STATUS_CODE;

/** An error carrying the errno a FUSE op returns (positive; negated at the FUSE boundary). */
export class FsError extends Error {
  constructor(readonly errno: number, message?: string) {
    super(message ?? `errno ${errno}`);
  }
}

export const SFTP_FAILURE = S.FAILURE;

const BY_STATUS: Record<number, number> = {
  [S.NO_SUCH_FILE]: Errno.ENOENT,
  [S.PERMISSION_DENIED]: Errno.EACCES,
  [S.BAD_MESSAGE]: Errno.EIO,
  [S.NO_CONNECTION]: Errno.EIO,
  [S.CONNECTION_LOST]: Errno.EIO,
  [S.OP_UNSUPPORTED]: Errno.EOPNOTSUPP,
  // SFTP v4-v6 codes (draft-ietf-secsh-filexfer-13 9.1; ssh2 names only v3's), sent by some servers even in a v3 session.
  9: Errno.EBADF, // INVALID_HANDLE
  10: Errno.ENOENT, // NO_SUCH_PATH
  11: Errno.EEXIST, // FILE_ALREADY_EXISTS
  12: Errno.EROFS, // WRITE_PROTECT
  13: Errno.ENODEV, // NO_MEDIA
  14: Errno.ENOSPC, // NO_SPACE_ON_FILESYSTEM
  15: Errno.EDQUOT, // QUOTA_EXCEEDED
  18: Errno.ENOTEMPTY, // DIR_NOT_EMPTY
  19: Errno.ENOTDIR, // NOT_A_DIRECTORY
  20: Errno.ENAMETOOLONG, // INVALID_FILENAME
  21: Errno.ELOOP, // LINK_LOOP
  24: Errno.EISDIR, // FILE_IS_A_DIRECTORY
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
