// open(2) flags as FUSE passes them (Linux values, node's fs.constants) to
// SFTP v3 pflags (ssh2's OPEN_MODE).
import { constants as fsc } from 'node:fs';
import { utils } from 'ssh2';

const M = utils.sftp.OPEN_MODE;
/** Node has no O_ACCMODE: the access-mode bits are those of the three modes. */
const O_ACCMODE = fsc.O_RDONLY | fsc.O_WRONLY | fsc.O_RDWR;

export interface OpenPlan {
  /** pflags of the OPEN sent now. */
  pflags: number;
  /** pflags to reopen with after a reconnect: no CREAT/TRUNC/EXCL (they must not act twice). */
  reopen: number;
  /** The handle may be read through (not O_WRONLY). */
  readable: boolean;
  /** The open changes the file (write access or O_TRUNC): refused on a read-only mount. */
  writes: boolean;
}

export function planOpen(flags: number, create: boolean): OpenPlan {
  const acc = flags & O_ACCMODE;
  let base = acc === fsc.O_RDWR ? M.READ | M.WRITE : acc === fsc.O_WRONLY ? M.WRITE : M.READ;
  if (flags & fsc.O_APPEND) base |= M.APPEND;
  let pflags = base | (create ? M.CREAT : 0);
  if (create && flags & fsc.O_EXCL) pflags |= M.EXCL;
  if (flags & fsc.O_TRUNC) pflags |= M.TRUNC;
  return { pflags, reopen: base, readable: acc !== fsc.O_WRONLY, writes: create || acc !== fsc.O_RDONLY || (flags & fsc.O_TRUNC) !== 0 };
}

export const TRUNCATES = M.TRUNC;

/** What create gets when fuse-native passes no flags (libfuse 2 without them). */
export const DEFAULT_CREATE_FLAGS = fsc.O_WRONLY | fsc.O_CREAT;
