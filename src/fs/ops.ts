// FUSE operations (fuse-native's callback API) mapped onto SFTP.
// Results follow what the same syscall gives on a local filesystem: the
// kernel already answers most errors itself from getattr (default_permissions,
// lookups), and where OpenSSH's sftp-server answers only the generic FAILURE
// a stat on the metadata channel tells which errno a local fs would give.
import { posix } from 'node:path';
import type { Logger } from 'pino';
import type { Stats } from 'ssh2';
import { sftpCall, type Channels, type SftpSession } from '../sftp/session';
import { AttrCache, type RemoteAttrs } from './attr-cache';
import { Errno, FsError, errnoOf, isGenericFailure } from './errno';
import { FileHandle, HandleTable } from './handles';

// Linux open(2) flags as FUSE passes them.
const O_ACCMODE = 0o3;
const O_WRONLY = 0o1;
const O_RDWR = 0o2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_TRUNC = 0o1000;
const O_APPEND = 0o2000;
// SFTP v3 pflags.
const F_READ = 0x01;
const F_WRITE = 0x02;
const F_APPEND = 0x04;
const F_CREAT = 0x08;
const F_TRUNC = 0x10;
const F_EXCL = 0x20;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
/** fuse-native passes uid/gid -1 ("leave unchanged") as an unsigned 32-bit number. */
const KEEP_ID = 0xffffffff;
/** The patched binding sends UTIME_OMIT as 2^64 - 1. */
const OMIT_MS = 2 ** 63;
/** st_blksize: what `cp`, `dd` and stdio size their buffers by; matches max_write. */
const BLKSIZE = 128 * 1024;

export interface OpsOptions {
  root: string;
  uid?: number;
  gid?: number;
  umask?: number;
  readOnly: boolean;
  cache: AttrCache;
  log: Logger;
}

type Cb = (code: number, ...rest: unknown[]) => void;

const isDir = (a: { mode: number }) => (a.mode & S_IFMT) === S_IFDIR;

function attrsOf(s: Pick<Stats, "mode" | "uid" | "gid" | "size" | "atime" | "mtime">, longname?: string): RemoteAttrs {
  // OpenSSH's READDIR longname is `ls -l` output: the second field is the link count.
  const nlink = longname ? Number(longname.split(/\s+/)[1]) : NaN;
  return { mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, atime: s.atime, mtime: s.mtime, ...(Number.isInteger(nlink) && nlink > 0 && { nlink }) };
}

export class SftpOps {
  readonly handles = new HandleTable();
  /**
   * Hidden names (.fuse_hiddenNNN) of files unlinked while open. libfuse 2
   * renames such a file instead of removing it and removes the hidden name
   * when the last handle closes, but RELEASE is asynchronous: a listing right
   * after close(2) showed the hidden file (CI, gesftpserver), and a daemon
   * crash would leave it on the server. tsfs removes the file on the server
   * at once; the hidden name lives only here (see rename, unlink, getattr).
   */
  private readonly ghosts = new Set<string>();
  private readonly cache: AttrCache;
  private readonly log: Logger;

  constructor(private readonly session: SftpSession, private readonly o: OpsOptions) {
    this.cache = o.cache;
    this.log = o.log;
  }

  private remote(path: string): string {
    return path === '/' ? this.o.root : posix.join(this.o.root, path);
  }

  private ch(): Promise<Channels> {
    return this.session.channels();
  }

  private writable(): void {
    if (this.o.readOnly) throw new FsError(Errno.EROFS);
  }

  /** The stat FUSE is given for remote attributes (uid/gid/umask options applied). */
  toStat(a: RemoteAttrs) {
    const perm = this.o.umask !== undefined ? a.mode & ~this.o.umask & 0o7777 : a.mode & 0o7777;
    return {
      mode: (a.mode & S_IFMT) | perm,
      uid: this.o.uid ?? a.uid,
      gid: this.o.gid ?? a.gid,
      size: a.size,
      nlink: a.nlink ?? 1,
      atime: a.atime * 1000,
      mtime: a.mtime * 1000,
      ctime: a.mtime * 1000, // SFTP has no ctime
      blksize: BLKSIZE,
      blocks: Math.ceil(a.size / 512),
    };
  }

  private async drainPath(path: string): Promise<void> {
    await Promise.all(this.handles.forPath(path).map((h) => h.drain()));
  }

  private dropReadahead(path: string): void {
    for (const h of this.handles.forPath(path)) h.dropReadahead();
  }

  /** lstat without the cache; undefined for a missing path. */
  private async lstatRaw(path: string): Promise<RemoteAttrs | undefined> {
    const { meta } = await this.ch();
    try {
      return attrsOf(await sftpCall.lstat(meta, this.remote(path)));
    } catch (e) {
      if (errnoOf(e) === Errno.ENOENT) return undefined;
      throw e;
    }
  }

  async attrs(path: string): Promise<RemoteAttrs> {
    if (this.handles.forPath(path).some((h) => h.writesPending)) await this.drainPath(path);
    const hit = this.cache.lookup(path);
    if (hit.kind === 'hit') return hit.attrs;
    if (hit.kind === 'absent') throw new FsError(Errno.ENOENT);
    const a = await this.lstatRaw(path);
    if (!a) throw new FsError(Errno.ENOENT);
    this.cache.put(path, a);
    return a;
  }

  // ---- errno disambiguation for OpenSSH's generic FAILURE ----

  private async explain(e: unknown, path: string, op: 'mkdir' | 'rmdir' | 'unlink' | 'open' | 'create' | 'link' | 'write'): Promise<FsError> {
    if (!isGenericFailure(e)) return new FsError(errnoOf(e));
    try {
      if (op === 'write') {
        const { meta, ext } = await this.ch();
        if (ext.has('statvfs@openssh.com')) {
          const v = await sftpCall.statvfs(meta, this.o.root);
          if (v.bavail === 0) return new FsError(Errno.ENOSPC);
        }
        return new FsError(Errno.EIO);
      }
      const a = await this.lstatRaw(path);
      const parent = await this.lstatRaw(posix.dirname(path));
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
            const { meta } = await this.ch();
            if ((await sftpCall.readdir(meta, this.remote(path))).length > 0) return new FsError(Errno.ENOTEMPTY);
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

  private async explainRename(e: unknown, src: string, dst: string): Promise<FsError> {
    if (!isGenericFailure(e) && errnoOf(e) !== Errno.EEXIST) return new FsError(errnoOf(e));
    const s = await this.lstatRaw(src).catch(() => undefined);
    if (!s) return new FsError(Errno.ENOENT);
    const d = await this.lstatRaw(dst).catch(() => undefined);
    if (d) {
      if (isDir(s) && !isDir(d)) return new FsError(Errno.ENOTDIR);
      if (!isDir(s) && isDir(d)) return new FsError(Errno.EISDIR);
      if (isDir(s) && isDir(d)) return new FsError(Errno.ENOTEMPTY);
    }
    const parent = await this.lstatRaw(posix.dirname(dst)).catch(() => undefined);
    if (!parent) return new FsError(Errno.ENOENT);
    if (!isDir(parent)) return new FsError(Errno.ENOTDIR);
    return new FsError(errnoOf(e));
  }

  // ---- operations ----

  async getattr(path: string) {
    // A stat of a file unlinked while open arrives by its hidden name (for an
    // fstat too: fuse-native passes fgetattr on as getattr of the path), and
    // only the handle still reaches the file.
    const ghost = this.ghosts.has(path) ? this.handles.forPath(path)[0] : undefined;
    if (ghost) return this.toStat(await ghost.fstat());
    return this.toStat(await this.attrs(path));
  }

  async fgetattr(path: string, fd: number) {
    const h = this.handles.get(fd);
    if (h) await h.drain();
    try {
      return await this.getattr(path);
    } catch (e) {
      // Open but unlinked: only the handle still reaches the file.
      if (!h || errnoOf(e) !== Errno.ENOENT) throw e;
      return this.toStat(await h.fstat());
    }
  }

  async access(path: string): Promise<void> {
    // default_permissions: the kernel checks mode bits itself; here only existence.
    await this.attrs(path);
  }

  /**
   * Names with their stats: libfuse 2 turns each mode into the entry's d_type,
   * so `find -type f` and friends need no lookup per name (measured: find over
   * 10,000 files went from 10,000 LOOKUPs to none).
   */
  async readdir(path: string): Promise<{ names: string[]; stats: ReturnType<SftpOps['toStat']>[] }> {
    const { meta } = await this.ch();
    const list = await sftpCall.readdir(meta, this.remote(path));
    const entries = list.map((e) => ({ name: e.filename, attrs: attrsOf(e.attrs, e.longname) }));
    this.cache.putListing(path, entries);
    const dir = this.toStat({ mode: S_IFDIR | 0o755, uid: 0, gid: 0, size: 0, atime: 0, mtime: 0 });
    return { names: ['.', '..', ...entries.map((e) => e.name)], stats: [dir, dir, ...entries.map((e) => this.toStat(e.attrs))] };
  }

  async statfs(): Promise<Record<string, number>> {
    const { meta, ext } = await this.ch();
    // No statvfs extension (or one that answers OP_UNSUPPORTED, as rclone's
    // does): report a large, mostly free filesystem, as libfuse does for a
    // filesystem without statfs, so that df and tools checking free space work.
    const unknown = { bsize: BLKSIZE, frsize: 4096, blocks: 2 ** 30, bfree: 2 ** 30, bavail: 2 ** 30, files: 2 ** 24, ffree: 2 ** 24, favail: 2 ** 24, fsid: 0, flag: 0, namemax: NAME_MAX };
    if (!ext.has('statvfs@openssh.com')) return unknown;
    let v: Awaited<ReturnType<typeof sftpCall.statvfs>>;
    try {
      v = await sftpCall.statvfs(meta, this.o.root);
    } catch (e) {
      if (errnoOf(e) === Errno.EOPNOTSUPP) return unknown;
      throw e;
    }
    // fuse-native passes 32-bit counts: scale the block size up until they fit.
    let { frsize, blocks, bfree, bavail } = v;
    frsize ||= v.bsize;
    while (blocks > 0xffffffff) {
      frsize *= 2;
      blocks = Math.floor(blocks / 2);
      bfree = Math.floor(bfree / 2);
      bavail = Math.floor(bavail / 2);
    }
    const cap = (n: number) => Math.min(n, 0xffffffff);
    return { bsize: v.bsize, frsize, blocks, bfree, bavail, files: cap(v.files), ffree: cap(v.ffree), favail: cap(v.favail), fsid: 0, flag: 0, namemax: v.namemax };
  }

  async readlink(path: string): Promise<string> {
    const { meta } = await this.ch();
    return sftpCall.readlink(meta, this.remote(path));
  }

  async mkdir(path: string, mode: number): Promise<void> {
    this.writable();
    const { meta } = await this.ch();
    try {
      await sftpCall.mkdir(meta, this.remote(path), mode & 0o7777);
    } catch (e) {
      throw await this.explain(e, path, 'mkdir');
    }
    this.cache.added(path);
    // Just made, so empty: lookups of new names in it (every file created
    // there) are answered ENOENT without a round trip.
    this.cache.putListing(path, []);
  }

  async rmdir(path: string): Promise<void> {
    this.writable();
    const { meta } = await this.ch();
    try {
      await sftpCall.rmdir(meta, this.remote(path));
    } catch (e) {
      throw await this.explain(e, path, 'rmdir');
    }
    this.cache.removed(path);
  }

  async unlink(path: string): Promise<void> {
    this.writable();
    // libfuse removing the hidden name after the last close: already gone.
    if (this.ghosts.delete(path)) return;
    const { meta } = await this.ch();
    const before = this.cache.lookup(path);
    try {
      await sftpCall.unlink(meta, this.remote(path));
    } catch (e) {
      throw await this.explain(e, path, 'unlink');
    }
    this.cache.removed(path);
    this.dropReadahead(path);
    // Other names of the file now have one link fewer.
    if (before.kind === 'hit' && (before.attrs.nlink ?? 1) > 1) this.cache.clear();
  }

  async symlink(target: string, path: string): Promise<void> {
    this.writable();
    const { meta } = await this.ch();
    try {
      await sftpCall.symlink(meta, target, this.remote(path));
    } catch (e) {
      throw await this.explain(e, path, 'link');
    }
    this.cache.added(path);
  }

  async link(src: string, dst: string): Promise<void> {
    this.writable();
    const { meta, ext } = await this.ch();
    // Without hardlink@openssh.com: EPERM, what link(2) gives on a local
    // filesystem that does not support hard links (vfat).
    if (!ext.has('hardlink@openssh.com')) throw new FsError(Errno.EPERM);
    try {
      await sftpCall.hardlink(meta, this.remote(src), this.remote(dst));
    } catch (e) {
      throw await this.explain(e, dst, 'link');
    }
    this.cache.added(dst);
    this.cache.invalidate(src);
    // SFTP v3 stat carries no link count; OpenSSH's listing does: refresh the
    // listings holding both names so their st_nlink is right at once.
    if (this.cache.enabled) {
      for (const d of new Set([posix.dirname(src), posix.dirname(dst)])) await this.readdir(d).catch(() => undefined);
    }
  }

  async rename(src: string, dst: string): Promise<void> {
    this.writable();
    const { meta, ext } = await this.ch();
    const from = this.remote(src);
    const to = this.remote(dst);
    // libfuse hiding a file unlinked while open: remove it on the server now
    // instead; the open SFTP handles keep reaching it, as a local fd does.
    // Only where fsync@openssh.com shows that each handle is a file
    // descriptor on the server (OpenSSH, gesftpserver), which outlives the
    // name. rclone serve sftp (no fsync extension) cannot reach a removed
    // file through its handles (checked), so there libfuse's hidden file
    // stays. Where the removal fails, hide it as libfuse asked.
    if (posix.basename(dst).startsWith('.fuse_hidden') && ext.has('fsync@openssh.com') && this.handles.forPath(src).length > 0) {
      if (await sftpCall.unlink(meta, from).then(() => true, () => false)) {
        this.ghosts.add(dst);
        this.cache.removed(src);
        this.handles.renamed(src, dst);
        return;
      }
    }
    try {
      if (ext.has('posix-rename@openssh.com')) await sftpCall.posixRename(meta, from, to);
      else await this.renameReplacing(meta, from, to, src, dst);
    } catch (e) {
      throw e instanceof FsError ? e : await this.explainRename(e, src, dst);
    }
    this.cache.removed(src);
    this.cache.removed(dst);
    this.cache.added(dst);
    this.handles.renamed(src, dst);
  }

  /**
   * SFTP v3 RENAME refuses an existing target. Without posix-rename the old
   * target is removed first (a file with unlink, an empty directory with
   * rmdir), then the rename retried: NOT atomic, another client can see
   * neither name for one round trip, and a crash in between loses the target.
   */
  private async renameReplacing(meta: Channels['meta'], from: string, to: string, src: string, dst: string): Promise<void> {
    try {
      await sftpCall.rename(meta, from, to);
      return;
    } catch (e) {
      const d = await this.lstatRaw(dst);
      const s = await this.lstatRaw(src);
      if (!d || !s) throw e;
      if (isDir(s) !== isDir(d)) throw new FsError(isDir(s) ? Errno.ENOTDIR : Errno.EISDIR);
      if (from === to) return;
      if (isDir(d)) {
        try {
          await sftpCall.rmdir(meta, to);
        } catch {
          throw new FsError(Errno.ENOTEMPTY);
        }
      } else await sftpCall.unlink(meta, to);
      await sftpCall.rename(meta, from, to);
    }
  }

  /** Changing the volume root's owner/mode/times must not fail a container start. */
  private async setattr(path: string, attrs: Parameters<typeof sftpCall.setstat>[2]): Promise<void> {
    this.writable();
    await this.drainPath(path);
    const { meta } = await this.ch();
    try {
      await sftpCall.setstat(meta, this.remote(path), attrs);
    } catch (e) {
      const n = errnoOf(e);
      if (path === '/') {
        // Docker copies image content into an empty volume and then chowns,
        // chmods and utimes its root; a server that refuses (chown as non-root)
        // must not fail the container.
        this.log.debug({ attrs, errno: n }, 'server refused to change the volume root; ignored');
        return;
      }
      throw new FsError(n === Errno.EACCES ? Errno.EPERM : n);
    } finally {
      this.cache.invalidate(path);
    }
  }

  chmod(path: string, mode: number): Promise<void> {
    return this.setattr(path, { mode: mode & 0o7777 });
  }

  async chown(path: string, uid: number, gid: number): Promise<void> {
    if (uid === KEEP_ID || gid === KEEP_ID) {
      // SFTP sets uid and gid together.
      const a = await this.lstatRaw(path);
      if (!a) throw new FsError(Errno.ENOENT);
      if (uid === KEEP_ID) uid = a.uid;
      if (gid === KEEP_ID) gid = a.gid;
    }
    return this.setattr(path, { uid, gid });
  }

  /** SFTP v3 carries whole seconds: sub-second parts of atime and mtime are dropped. */
  async utimens(path: string, atimeMs: number, mtimeMs: number): Promise<void> {
    if (atimeMs >= OMIT_MS || mtimeMs >= OMIT_MS) {
      const a = await this.lstatRaw(path);
      if (!a) throw new FsError(Errno.ENOENT);
      if (atimeMs >= OMIT_MS) atimeMs = a.atime * 1000;
      if (mtimeMs >= OMIT_MS) mtimeMs = a.mtime * 1000;
    }
    return this.setattr(path, { atime: Math.floor(atimeMs / 1000), mtime: Math.floor(mtimeMs / 1000) });
  }

  async truncate(path: string, size: number): Promise<void> {
    this.dropReadahead(path);
    await this.setattr(path, { size });
  }

  async ftruncate(path: string, fd: number, size: number): Promise<void> {
    const h = this.handles.get(fd);
    if (!h) return this.truncate(path, size);
    this.writable();
    this.dropReadahead(path);
    try {
      await h.ftruncate(size);
    } catch (e) {
      throw new FsError(errnoOf(e));
    } finally {
      this.cache.invalidate(path);
    }
  }

  async open(path: string, flags: number): Promise<number> {
    const acc = flags & O_ACCMODE;
    if (this.o.readOnly && (acc !== 0 || flags & O_TRUNC)) throw new FsError(Errno.EROFS);
    let pflags = acc === O_RDWR ? F_READ | F_WRITE : acc === O_WRONLY ? F_WRITE : F_READ;
    if (flags & O_APPEND) pflags |= F_APPEND;
    const reopen = pflags;
    if (flags & O_TRUNC) pflags |= F_TRUNC;
    return this.openRemote(path, pflags, reopen, acc !== O_WRONLY, {}, 'open');
  }

  async create(path: string, mode: number, flags: number): Promise<number> {
    this.writable();
    const acc = flags & O_ACCMODE;
    let pflags = F_CREAT | (acc === O_RDWR ? F_READ | F_WRITE : acc === O_WRONLY ? F_WRITE : F_READ);
    if (flags & O_APPEND) pflags |= F_APPEND;
    const reopen = pflags & ~F_CREAT;
    if (flags & O_EXCL) pflags |= F_EXCL;
    if (flags & O_TRUNC) pflags |= F_TRUNC;
    const fd = await this.openRemote(path, pflags, reopen, acc !== O_WRONLY, { mode: mode & 0o7777 }, 'create');
    return fd;
  }

  private async openRemote(path: string, pflags: number, reopenFlags: number, readable: boolean, attrs: { mode?: number }, op: 'open' | 'create'): Promise<number> {
    const ch = await this.ch();
    let remote: Buffer;
    const opening = sftpCall.open(ch.data, this.remote(path), pflags, attrs);
    // After create the kernel asks for the new file's attributes at once. An
    // LSTAT queued right behind the OPEN on the same channel (sftp-server
    // answers in order) gets them in the same round trip.
    const stat = op === 'create' && this.cache.enabled ? sftpCall.lstat(ch.data, this.remote(path)) : undefined;
    stat?.catch(() => undefined);
    try {
      remote = await opening;
    } catch (e) {
      throw await this.explain(e, path, op);
    }
    if (pflags & F_TRUNC) {
      this.cache.invalidate(path);
      this.dropReadahead(path);
    }
    if (op === 'create') {
      this.cache.added(path);
      const a = await stat?.catch(() => undefined);
      // A server free to reorder could have answered the LSTAT first: then
      // it saw no file (ENOENT, ignored) or the old one, whose size a TRUNC
      // has since made 0.
      if (a && (!(pflags & F_TRUNC) || a.size === 0)) this.cache.put(path, attrsOf(a));
    }
    const h = this.handles.add((id) => new FileHandle(id, path, { path, reopenFlags, readable, toRemote: (p) => this.remote(p) }, remote, ch.gen, this.session));
    return h.id;
  }

  private handle(fd: number): FileHandle {
    const h = this.handles.get(fd);
    if (!h) throw new FsError(Errno.EBADF);
    return h;
  }

  read(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    return this.handle(fd).read(buf, len, pos);
  }

  async write(path: string, fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    this.writable();
    const h = this.handle(fd);
    for (const other of this.handles.forPath(path)) if (other !== h) other.dropReadahead();
    await h.write(buf, len, pos);
    this.cache.invalidate(path);
    return len;
  }

  /** close(2): every write of this handle answered; the first failure is close's error. */
  async flush(path: string, fd: number): Promise<void> {
    const h = this.handle(fd);
    await h.drain();
    this.cache.invalidate(path);
    if (h.error) throw h.error;
  }

  async fsync(fd: number): Promise<void> {
    const h = this.handle(fd);
    const { ext } = await this.ch();
    try {
      await h.fsync(ext.has('fsync@openssh.com'));
    } catch (e) {
      throw new FsError(errnoOf(e));
    }
  }

  async release(path: string, fd: number): Promise<void> {
    const h = this.handles.get(fd);
    if (!h) return;
    this.handles.delete(fd);
    await h.close();
    this.cache.invalidate(path);
    if (h.error) throw h.error;
  }

  /** Wait for every open file's queued writes (unmount). */
  async drainAll(): Promise<void> {
    await Promise.all(this.handles.all().map((h) => h.drain()));
  }

  /** fuse-native's ops object: promise results to callbacks, FsError to -errno. */
  fuseOps(): Record<string, unknown> {
    const run = <T>(name: string, path: string, f: () => Promise<T>, cb: Cb, ok: (v: T) => unknown[] = () => []) => {
      // The kernel looks every name up (getattr) before acting on it, so this
      // one check gives ENAMETOOLONG where a local filesystem would; OpenSSH's
      // sftp-server would answer BAD_MESSAGE, which maps to EIO.
      if (nameTooLong(path)) return cb(-Errno.ENAMETOOLONG);
      (IDEMPOTENT.has(name) ? this.session.idempotent(f) : f()).then(
        (v) => cb(0, ...ok(v)),
        (e) => {
          const n = errnoOf(e);
          if (n === Errno.EIO) this.log.warn({ op: name, path, err: (e as Error).message }, 'I/O error');
          cb(-n);
        },
      );
    };
    // read/write report their byte count in the first callback argument.
    const io = (name: string, path: string, f: () => Promise<number>, cb: (n: number) => void) =>
      (IDEMPOTENT.has(name) ? this.session.idempotent(f) : f()).then(cb, (e) => {
        const n = errnoOf(e);
        if (n === Errno.EIO) this.log.warn({ op: name, path, err: (e as Error).message }, 'I/O error');
        cb(-n);
      });
    return {
      getattr: (p: string, cb: Cb) => run('getattr', p, () => this.getattr(p), cb, (s) => [s]),
      fgetattr: (p: string, fd: number, cb: Cb) => run('fgetattr', p, () => this.fgetattr(p, fd), cb, (s) => [s]),
      access: (p: string, _mode: number, cb: Cb) => run('access', p, () => this.access(p), cb),
      readdir: (p: string, cb: Cb) => run('readdir', p, () => this.readdir(p), cb, (r) => [r.names, r.stats]),
      statfs: (p: string, cb: Cb) => run('statfs', p, () => this.statfs(), cb, (s) => [s]),
      readlink: (p: string, cb: Cb) => run('readlink', p, () => this.readlink(p), cb, (t) => [t]),
      mkdir: (p: string, mode: number, cb: Cb) => run('mkdir', p, () => this.mkdir(p, mode), cb),
      rmdir: (p: string, cb: Cb) => run('rmdir', p, () => this.rmdir(p), cb),
      unlink: (p: string, cb: Cb) => run('unlink', p, () => this.unlink(p), cb),
      symlink: (target: string, p: string, cb: Cb) => run('symlink', p, () => this.symlink(target, p), cb),
      link: (src: string, dst: string, cb: Cb) => run('link', dst, () => this.link(src, dst), cb),
      rename: (src: string, dst: string, cb: Cb) => run('rename', src, () => this.rename(src, dst), cb),
      chmod: (p: string, mode: number, cb: Cb) => run('chmod', p, () => this.chmod(p, mode), cb),
      chown: (p: string, uid: number, gid: number, cb: Cb) => run('chown', p, () => this.chown(p, uid, gid), cb),
      utimens: (p: string, atime: number, mtime: number, cb: Cb) => run('utimens', p, () => this.utimens(p, atime, mtime), cb),
      truncate: (p: string, size: number, cb: Cb) => run('truncate', p, () => this.truncate(p, size), cb),
      ftruncate: (p: string, fd: number, size: number, cb: Cb) => run('ftruncate', p, () => this.ftruncate(p, fd, size), cb),
      open: (p: string, flags: number, cb: Cb) => run('open', p, () => this.open(p, flags), cb, (fd) => [fd]),
      create: (p: string, mode: number, cb: Cb, flags = O_WRONLY | O_CREAT) =>
        run('create', p, () => this.create(p, mode, flags), cb, (fd) => [fd]),
      read: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => io('read', p, () => this.read(fd, buf, len, pos), cb),
      write: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) =>
        io('write', p, () => this.write(p, fd, buf, len, pos), cb),
      flush: (p: string, fd: number, cb: Cb) => run('flush', p, () => this.flush(p, fd), cb),
      fsync: (p: string, _datasync: number, fd: number, cb: Cb) => run('fsync', p, () => this.fsync(fd), cb),
      release: (p: string, fd: number, cb: Cb) => run('release', p, () => this.release(p, fd), cb),
    };
  }
}

/**
 * Requests that give the same answer when sent twice, so they are re-issued
 * after a reconnect instead of failing. open (never O_CREAT/O_EXCL: that is
 * create) may truncate twice, before any write through the new handle.
 * Writes, creates, renames and removals are not: a repeat could act twice or
 * hide that the first one landed.
 */
const IDEMPOTENT = new Set(['getattr', 'fgetattr', 'access', 'readdir', 'statfs', 'readlink', 'read', 'open']);

/** NAME_MAX of Linux's local filesystems, in bytes per path component. */
const NAME_MAX = 255;

function nameTooLong(path: string): boolean {
  if (Buffer.byteLength(path) <= NAME_MAX) return false;
  return path.split('/').some((c) => Buffer.byteLength(c) > NAME_MAX);
}
