// Which errno a local filesystem would give for a failure that OpenSSH's
// sftp-server reports only as the generic FAILURE (it folds EEXIST,
// ENOTEMPTY, EISDIR, ENOSPC, EFBIG... into one status): a stat or two on the
// metadata channel, or statvfs, tells them apart. Anything that cannot be
// told stays EIO.
import { constants as fsc } from 'node:fs';
import { posix } from 'node:path';
import { sftpCall, type Channels } from '../sftp/session';
import type { RemoteAttrs } from './attr-cache';
import { Errno, FsError, errnoOf, isGenericFailure } from './errno';

const { S_IFMT, S_IFDIR, S_IFREG } = fsc;
const isDir = (a: { mode: number }) => (a.mode & S_IFMT) === S_IFDIR;

export interface ExplainContext {
  /** lstat without the cache; undefined for a missing path. */
  lstat(path: string): Promise<RemoteAttrs | undefined>;
  channels(): Promise<Channels>;
  /** The server-side path of a mount path. */
  remote(path: string): string;
  /** The volume's root on the server (where statvfs asks). */
  root: string;
}

export class Explain {
  constructor(private readonly c: ExplainContext) {}

  async failure(e: unknown, path: string, op: 'mkdir' | 'rmdir' | 'unlink' | 'open' | 'create' | 'link'): Promise<FsError> {
    if (!isGenericFailure(e)) return new FsError(errnoOf(e));
    try {
      const a = await this.c.lstat(path);
      const parent = await this.c.lstat(posix.dirname(path));
      if (parent && !isDir(parent)) return new FsError(Errno.ENOTDIR);
      switch (op) {
        case 'mkdir':
        case 'link':
          if (a) return new FsError(Errno.EEXIST);
          break;
        case 'create':
          if (a) return new FsError(isDir(a) ? Errno.EISDIR : Errno.EEXIST);
          break;
        case 'open':
        case 'unlink':
          if (a && isDir(a)) return new FsError(Errno.EISDIR);
          break;
        case 'rmdir':
          if (a && !isDir(a)) return new FsError(Errno.ENOTDIR);
          if (a) {
            const { meta } = await this.c.channels();
            if ((await sftpCall.readdir(meta, this.c.remote(path))).length > 0) return new FsError(Errno.ENOTEMPTY);
          }
          break;
      }
      if (!a && op !== 'mkdir' && op !== 'create' && op !== 'link') return new FsError(Errno.ENOENT);
      if (!parent) return new FsError(Errno.ENOENT);
    } catch {
      /* fall through to EIO */
    }
    return new FsError(Errno.EIO);
  }

  /**
   * A failed WRITE (or a truncate that grows): OpenSSH answers ENOSPC and
   * EDQUOT with the generic FAILURE, so ask the store whether it has room
   * for what was refused. Without statvfs@openssh.com the failure stays EIO.
   */
  async write(e: unknown, bytes: number): Promise<FsError> {
    if (!isGenericFailure(e)) return new FsError(errnoOf(e), (e as Error).message);
    try {
      const { meta, ext } = await this.c.channels();
      if (ext.has('statvfs@openssh.com')) {
        const v = await sftpCall.statvfs(meta, this.c.root);
        const unit = v.frsize || v.bsize;
        // bavail for the SSH user, bfree for root (which may use the reserve): full for either.
        if (Math.min(v.bavail, v.bfree) * unit < Math.max(bytes, unit)) {
          return new FsError(Errno.ENOSPC, `the store is full (${v.bavail * unit} bytes available): ${(e as Error).message}`);
        }
      }
    } catch {
      /* the question failed too: stay with EIO */
    }
    return new FsError(Errno.EIO, (e as Error).message);
  }

  async rename(e: unknown, src: string, dst: string): Promise<FsError> {
    if (!isGenericFailure(e) && errnoOf(e) !== Errno.EEXIST) return new FsError(errnoOf(e));
    const s = await this.c.lstat(src).catch(() => undefined);
    if (!s) return new FsError(Errno.ENOENT);
    const d = await this.c.lstat(dst).catch(() => undefined);
    if (d) {
      if (isDir(s) && !isDir(d)) return new FsError(Errno.ENOTDIR);
      if (!isDir(s) && isDir(d)) return new FsError(Errno.EISDIR);
      if (isDir(s) && isDir(d)) return new FsError(Errno.ENOTEMPTY);
    }
    const parent = await this.c.lstat(posix.dirname(dst)).catch(() => undefined);
    if (!parent) return new FsError(Errno.ENOENT);
    if (!isDir(parent)) return new FsError(Errno.ENOTDIR);
    return new FsError(errnoOf(e));
  }

  /** A truncate the server refused with FAILURE: growing a regular file past the largest size it takes is EFBIG. */
  async truncate(e: unknown, path: string, size: number): Promise<FsError> {
    if (!isGenericFailure(e)) return new FsError(errnoOf(e));
    const a = await this.c.lstat(path).catch(() => undefined);
    if (a && (a.mode & S_IFMT) === S_IFREG && size > a.size) return new FsError(Errno.EFBIG, `the server refused to grow ${path} to ${size} bytes`);
    return this.write(e, 0);
  }
}
