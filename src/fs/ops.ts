// POSIX filesystem operations mapped onto SFTP (the FUSE callbacks around
// them are in fuse-adapter.ts). Results follow what the same syscall gives on
// a local filesystem: the kernel already answers most errors itself from
// getattr (default_permissions, lookups), and where OpenSSH's sftp-server
// answers only the generic FAILURE a stat on the metadata channel tells which
// errno a local fs would give.
import { constants as fsc } from 'node:fs';
import { posix } from 'node:path';
import type { Logger } from 'pino';
import type { InputAttributes, Stats } from 'ssh2';
import { sftpCall, type Channels, type SftpSession } from '../sftp/session';
import { AttrCache, type CacheLimits, type RemoteAttrs } from './attr-cache';
import { Errno, FsError, errnoOf } from './errno';
import { Explain } from './explain';
import { FileHandle, HandleTable } from './handles';
import { TRUNCATES, planOpen } from './open-flags';

const { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK } = fsc;
/** setgid and setuid (node's fs.constants has no S_ISGID/S_ISUID). */
const S_ISGID = 0o2000;
const S_ISUID = 0o4000;
/** fuse-native passes uid/gid -1 ("leave unchanged") as an unsigned 32-bit number. */
const KEEP_ID = 0xffffffff;
/** The patched binding sends UTIME_OMIT as 2^64 - 1. */
const OMIT_MS = 2 ** 63;
/** st_blksize: what `cp`, `dd` and stdio size their buffers by; matches max_write. */
const BLKSIZE = 128 * 1024;
/** NAME_MAX of Linux's local filesystems, in bytes per path component. */
export const NAME_MAX = 255;

/** Who made the request (fuse_get_context), as the binding reports it. */
export interface Caller {
  uid: number;
  gid: number;
  pid?: number;
  umask?: number;
}

export interface OpsOptions {
  root: string;
  uid?: number;
  gid?: number;
  umask?: number;
  readOnly: boolean;
  /** Milliseconds a cached attribute or listing may be served (0: no cache). */
  cacheTtlMs: number;
  cacheLimits?: CacheLimits;
  log: Logger;
}

const isDir = (a: { mode: number }) => (a.mode & S_IFMT) === S_IFDIR;
const isLink = (a: { mode: number }) => (a.mode & S_IFMT) === S_IFLNK;

function attrsOf(s: Pick<Stats, "mode" | "uid" | "gid" | "size" | "atime" | "mtime">, longname?: string): RemoteAttrs {
  // OpenSSH's READDIR longname is `ls -l` output: the second field is the link count.
  const nlink = longname ? Number(longname.split(/\s+/)[1]) : NaN;
  return { mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, atime: s.atime, mtime: s.mtime, ...(Number.isInteger(nlink) && nlink > 0 && { nlink }) };
}

export class SftpOps {
  readonly handles = new HandleTable();
  readonly cache: AttrCache;
  /**
   * Hidden names (.fuse_hiddenNNN) of files unlinked while open. libfuse 2
   * renames such a file instead of removing it and removes the hidden name
   * when the last handle closes, but RELEASE is asynchronous: a listing right
   * after close(2) showed the hidden file (CI, gesftpserver), and a daemon
   * crash would leave it on the server. tsfs removes the file on the server
   * at once; the hidden name lives only here (see rename, unlink, getattr).
   */
  private readonly ghosts = new Set<string>();
  private readonly log: Logger;
  /**
   * Whether the SSH user may chown (root on the store): learnt from the first
   * attempt to give a new file its creator's owner. false: new files stay
   * the SSH user's (docs/options.md says what containers see then).
   */
  private canChown?: boolean;
  /** Which errno a local filesystem would give for a failure the server reported only as FAILURE. */
  private readonly why: Explain;

  constructor(readonly session: SftpSession, private readonly o: OpsOptions) {
    this.log = o.log;
    this.why = new Explain({ lstat: (p) => this.lstatRaw(p), channels: () => this.ch(), remote: (p) => this.remote(p), root: o.root });
    this.cache = new AttrCache(o.cacheTtlMs, { limits: o.cacheLimits, busy: (p) => this.handles.writing(p) });
  }

  private remote(path: string): string {
    return path === '/' ? this.o.root : posix.join(this.o.root, path);
  }

  /** For metadata requests (they go on `meta`); file handles take `data` in openRemote. */
  private ch(): Promise<Channels> {
    return this.session.channelsForMetadata();
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

  /** Writes to the path queued before this call answered (not the ones queued after). */
  private async settlePath(path: string): Promise<void> {
    await Promise.all(this.handles.forPath(path).map((h) => h.settle()));
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
    await this.settlePath(path);
    const hit = this.cache.lookup(path);
    if (hit.kind === 'hit') return hit.attrs;
    if (hit.kind === 'absent') throw new FsError(Errno.ENOENT);
    return this.refresh(path);
  }

  /** lstat the path now and remember the answer (if nothing raced it, see AttrCache.beginFetch). */
  private async refresh(path: string): Promise<RemoteAttrs> {
    const since = this.cache.beginFetch();
    try {
      const a = await this.lstatRaw(path);
      if (!a) throw new FsError(Errno.ENOENT);
      return this.cache.put(path, a, since);
    } finally {
      this.cache.endFetch();
    }
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
    if (h) await h.settle();
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
   * Names with their stats: each mode becomes the entry's d_type, so `find
   * -type f` and friends need no lookup per name (docs/performance.md).
   * `plus` marks the stats that are what a lookup of the name answers now
   * (the cache took them): the kernel takes those as the names' attributes
   * (READDIRPLUS), so `ls -l` needs no LOOKUP per name. A name whose answer
   * raced a change or whose writes are still queued is not cached, and the
   * kernel looks it up as before.
   */
  async readdir(path: string): Promise<{ names: string[]; stats: ReturnType<SftpOps['toStat']>[]; plus: boolean[] }> {
    const { meta } = await this.ch();
    const since = this.cache.beginFetch();
    let entries: { name: string; attrs: RemoteAttrs }[];
    try {
      const list = await sftpCall.readdir(meta, this.remote(path));
      entries = list.map((e) => ({ name: e.filename, attrs: attrsOf(e.attrs, e.longname) }));
      this.cache.putListing(path, entries, since);
    } finally {
      this.cache.endFetch();
    }
    const dir = this.toStat({ mode: S_IFDIR | 0o755, uid: 0, gid: 0, size: 0, atime: 0, mtime: 0 });
    const names = ['.', '..'];
    const stats = [dir, dir];
    const plus = [false, false];
    const prefix = path === '/' ? '/' : `${path}/`;
    for (const e of entries) {
      const hit = this.cache.lookup(prefix + e.name);
      names.push(e.name);
      stats.push(this.toStat(hit.kind === 'hit' ? hit.attrs : e.attrs));
      plus.push(hit.kind === 'hit');
    }
    return { names, stats, plus };
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

  async mkdir(path: string, mode: number, caller?: Caller): Promise<void> {
    this.writable();
    const { meta } = await this.ch();
    const made = sftpCall.mkdir(meta, this.remote(path), mode & 0o7777);
    // Answered in order right behind the MKDIR: its owner and mode as the server made them.
    const stat = sftpCall.lstat(meta, this.remote(path));
    stat.catch(() => undefined);
    try {
      await made;
    } catch (e) {
      throw await this.why.failure(e, path, 'mkdir');
    }
    this.cache.added(path);
    const a = await this.finishNew(path, await stat.catch(() => undefined), mode, caller);
    if (a) this.cache.putOwn(path, a);
    // Just made, so empty: lookups of new names in it (every file created
    // there) are answered ENOENT without a round trip.
    this.cache.putEmptyDir(path);
  }

  /**
   * Make a node just created look as it would on a local filesystem: owned
   * by its creator (when the SSH user may chown) and with the mode asked
   * for (the server's umask removed bits the caller's umask kept: 0777 ->
   * 0755, 04777 -> 04755). The owner goes first, in its own SETSTAT: a chown
   * clears setuid/setgid, and one SETSTAT with both applies them in an
   * order the server picks. `a` is the node as the server made it.
   */
  private async finishNew(path: string, a: Stats | undefined, mode: number, caller: Caller | undefined, link = false): Promise<RemoteAttrs | undefined> {
    if (!a) return undefined;
    const { meta, ext } = await this.ch();
    const at = attrsOf(a);
    const remote = this.remote(path);
    // With uid=/gid= the mount shows one fixed owner; the store keeps the SSH user's.
    const mapped = this.o.uid !== undefined || this.o.gid !== undefined;
    if (caller && !mapped && this.canChown !== false && (!link || ext.has('lsetstat@openssh.com'))) {
      // A setgid parent gives its group to new entries (the server did so already).
      const parent = await this.attrs(posix.dirname(path)).catch(() => undefined);
      const gid = parent && parent.mode & S_ISGID ? at.gid : caller.gid;
      if (at.uid !== caller.uid || at.gid !== gid) {
        try {
          const owner = { uid: caller.uid, gid };
          await (link ? sftpCall.lsetstat(meta, remote, owner) : sftpCall.setstat(meta, remote, owner));
          this.canChown = true;
          at.uid = owner.uid;
          at.gid = owner.gid;
          // The server's chown cleared setuid/setgid of a file: set below with the mode.
          if (!isDir(at)) at.mode &= ~(S_ISUID | S_ISGID);
        } catch (e) {
          const n = errnoOf(e);
          if (n !== Errno.EPERM && n !== Errno.EACCES) throw new FsError(n, (e as Error).message);
          this.canChown = false;
          this.log.info({ uid: caller.uid, gid: caller.gid, owner: `${at.uid}:${at.gid}` }, 'the SSH user cannot chown on the store: new files stay owned by it (see uid=/gid= in docs/options.md)');
        }
      }
    }
    // The caller's umask, where the binding reports it: the kernel applies it
    // unless libfuse asked it not to (FUSE_CAP_DONT_MASK); applying it twice changes nothing.
    const want = mode & 0o7777 & ~(caller?.umask ?? 0);
    if (!link && (at.mode & 0o7777) !== want) {
      await sftpCall.setstat(meta, remote, { mode: want });
      at.mode = (at.mode & S_IFMT) | want;
    }
    return at;
  }

  async rmdir(path: string): Promise<void> {
    this.writable();
    const { meta } = await this.ch();
    try {
      await sftpCall.rmdir(meta, this.remote(path));
    } catch (e) {
      throw await this.why.failure(e, path, 'rmdir');
    }
    this.cache.removed(path);
  }

  async unlink(path: string): Promise<void> {
    this.writable();
    // libfuse removing the hidden name after the last close: already gone.
    if (this.ghosts.delete(path)) return;
    const { meta } = await this.ch();
    try {
      await sftpCall.unlink(meta, this.remote(path));
    } catch (e) {
      throw await this.why.failure(e, path, 'unlink');
    }
    this.cache.removed(path);
    this.dropReadahead(path);
    // Other names of the file (if any) now have one link fewer.
    this.cache.dropLinked();
  }

  async symlink(target: string, path: string, caller?: Caller): Promise<void> {
    this.writable();
    const { meta } = await this.ch();
    try {
      await sftpCall.symlink(meta, target, this.remote(path));
    } catch (e) {
      throw await this.why.failure(e, path, 'link');
    }
    this.cache.added(path);
    if (caller && this.canChown !== false && this.o.uid === undefined && this.o.gid === undefined) {
      await this.finishNew(path, await sftpCall.lstat(meta, this.remote(path)).catch(() => undefined), 0o777, caller, true);
    }
  }

  /**
   * Special files (FIFOs, sockets, devices): SFTP has no request that makes
   * them. EPERM is what mknod(2) answers on a filesystem that does not
   * support the node type (and what mkfifo and bind then report), logged
   * so the reason can be found. libfuse only calls mknod for a regular file
   * when there is no create, which tsfs has.
   */
  async mknod(path: string, mode: number, caller?: Caller): Promise<void> {
    this.writable();
    if ((mode & S_IFMT) === S_IFREG) {
      const fd = await this.create(path, mode, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, caller);
      return this.release(path, fd);
    }
    const kind = { [fsc.S_IFIFO]: 'FIFO', [fsc.S_IFSOCK]: 'socket', [fsc.S_IFCHR]: 'character device', [fsc.S_IFBLK]: 'block device' }[mode & S_IFMT] ?? 'special file';
    this.log.info({ path, kind }, `cannot make a ${kind} on an SFTP store (SFTP has no request for special files): EPERM`);
    throw new FsError(Errno.EPERM);
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
      throw await this.why.failure(e, dst, 'link');
    }
    this.cache.added(dst);
    this.cache.invalidate(src);
    this.cache.dropLinked();
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
      throw e instanceof FsError ? e : await this.why.rename(e, src, dst);
    }
    this.cache.renamed(src, dst);
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

  /**
   * SETSTAT, or lsetstat@openssh.com for owner and times: chown and
   * utimens reach FUSE for the node itself (lchown, lutimes, or a link
   * already resolved by the kernel), and SETSTAT would follow a symlink to
   * its target. Changing the volume root's owner/mode/times must not fail a
   * container start when the server refuses.
   */
  private async setattr(path: string, attrs: InputAttributes, noFollow = false): Promise<void> {
    this.writable();
    await this.settlePath(path);
    const { meta, ext } = await this.ch();
    const remote = this.remote(path);
    try {
      if (noFollow && ext.has('lsetstat@openssh.com')) await sftpCall.lsetstat(meta, remote, attrs);
      else {
        if (noFollow && isLink(await this.attrs(path))) {
          this.log.info({ path, attrs }, 'the server has no lsetstat@openssh.com: cannot change a symlink itself, and its target must not change instead');
          throw new FsError(Errno.EOPNOTSUPP);
        }
        await sftpCall.setstat(meta, remote, attrs);
      }
    } catch (e) {
      if (e instanceof FsError) throw e;
      const n = errnoOf(e);
      // Docker copies image content into an empty volume and then chowns,
      // chmods and utimes its root; a server that refuses (chown as
      // non-root) must not fail the container. A refusal carries an SFTP
      // status; a lost link does not, and is an error like anywhere else.
      if (path === '/' && typeof (e as { code?: unknown }).code === 'number') {
        this.log.debug({ attrs, errno: n }, 'server refused to change the volume root; ignored');
        return;
      }
      if (attrs.size !== undefined) throw await this.why.truncate(e, path, attrs.size);
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
    return this.setattr(path, { uid, gid }, true);
  }

  /** SFTP v3 carries whole seconds: sub-second parts of atime and mtime are dropped. */
  async utimens(path: string, atimeMs: number, mtimeMs: number): Promise<void> {
    if (atimeMs >= OMIT_MS || mtimeMs >= OMIT_MS) {
      const a = await this.lstatRaw(path);
      if (!a) throw new FsError(Errno.ENOENT);
      if (atimeMs >= OMIT_MS) atimeMs = a.atime * 1000;
      if (mtimeMs >= OMIT_MS) mtimeMs = a.mtime * 1000;
    }
    return this.setattr(path, { atime: Math.floor(atimeMs / 1000), mtime: Math.floor(mtimeMs / 1000) }, true);
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
      throw e instanceof FsError ? e : await this.why.truncate(e, path, size);
    } finally {
      this.cache.invalidate(path);
    }
  }

  async open(path: string, flags: number): Promise<number> {
    const plan = planOpen(flags, false);
    if (this.o.readOnly && plan.writes) throw new FsError(Errno.EROFS);
    return this.openRemote(path, plan.pflags, plan.reopen, plan.readable, {}, 'open');
  }

  async create(path: string, mode: number, flags: number, caller?: Caller): Promise<number> {
    this.writable();
    const plan = planOpen(flags, true);
    return this.openRemote(path, plan.pflags, plan.reopen, plan.readable, { mode: mode & 0o7777 }, 'create', caller);
  }

  private async openRemote(path: string, pflags: number, reopenFlags: number, readable: boolean, attrs: { mode?: number }, op: 'open' | 'create', caller?: Caller): Promise<number> {
    const ch = await this.session.channels();
    // The channel is fixed here for the handle's life (SFTP handles belong
    // to the channel that opened them).
    const data = ch.data;
    let remote: Buffer;
    const opening = sftpCall.open(data, this.remote(path), pflags, attrs);
    // A stat queued right behind the OPEN on the same channel (sftp-server
    // answers in order) sees the file just opened, in the same round trip:
    // after create the kernel asks for its attributes at once, and the
    // handle keeps size and mtime to recognise the file after a reconnect.
    // OPEN follows symlinks, so the identity comes from STAT.
    const stat = (op === 'create' ? sftpCall.lstat : sftpCall.stat)(data, this.remote(path));
    stat.catch(() => undefined);
    try {
      remote = await opening;
    } catch (e) {
      throw await this.why.failure(e, path, op);
    }
    if (pflags & TRUNCATES) {
      this.cache.invalidate(path);
      this.dropReadahead(path);
    }
    let a = await stat.catch(() => undefined);
    // A server free to reorder could have answered the stat first: then
    // it saw no file (ENOENT) or the old one, whose size a TRUNC has since made 0.
    if (a && pflags & TRUNCATES && a.size !== 0) a = undefined;
    let seen: RemoteAttrs | undefined = a && attrsOf(a);
    if (op === 'create') {
      this.cache.added(path, a?.mtime);
      seen = await this.finishNew(path, a, attrs.mode ?? 0o644, caller).catch(async (e) => {
        await sftpCall.close(data, remote).catch(() => undefined);
        throw e;
      });
      if (seen) this.cache.putOwn(path, seen);
    }
    const h = this.handles.add(
      (id) =>
        new FileHandle(id, path, { path, reopenFlags, readable, toRemote: (p) => this.remote(p), explainWrite: (e, n) => this.why.write(e, n) }, remote, ch.gen, this.session, data),
    );
    h.pipeline.onActivity = () => this.cache.changed(h.path);
    if (seen) h.observe(seen);
    return h.id;
  }

  private handle(fd: number): FileHandle {
    const h = this.handles.get(fd);
    if (!h) throw new FsError(Errno.EBADF);
    return h;
  }

  async read(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    const h = this.handle(fd);
    // What another descriptor wrote before this read must be read back.
    if (this.handles.writing(h.path)) await this.settlePath(h.path);
    return h.read(buf, len, pos);
  }

  async write(path: string, fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    this.writable();
    const h = this.handle(fd);
    // Writes made through two descriptors of one file must reach it in the
    // order they were made (an O_APPEND write lands at the end the earlier
    // ones left). A WRITE is answered to the kernel once queued, so that
    // order is the server's: one channel of OpenSSH's sftp-server keeps it,
    // but a threaded server (gesftpserver) runs WRITEs on different handles
    // at once, and handles opened on different channels reach different
    // server processes. So a write first waits for the other descriptors'
    // queued writes to be answered; one writer per file pays nothing.
    const others = this.handles.forPath(path).filter((o) => o !== h);
    for (const other of others) other.dropReadahead();
    if (others.some((o) => o.writesPending)) await Promise.all(others.map((o) => o.settle()));
    await h.write(buf, len, pos);
    this.cache.invalidate(path);
    return len;
  }

  /** close(2): every write of this handle answered; the first failure is close's error. */
  async flush(path: string, fd: number): Promise<void> {
    const h = this.handle(fd);
    await h.settle();
    if (h.takeChanged()) this.cache.invalidate(path);
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
    // Only a handle that changed the file: RELEASE arrives asynchronously,
    // after close(2) has returned, and dropping a read-only file's entry then
    // can undo what a later link or listing learnt (its link count).
    if (h.takeChanged()) this.cache.invalidate(path);
    if (h.error) throw h.error;
  }

  /** Wait for every open file's queued writes (unmount). */
  async drainAll(): Promise<void> {
    await Promise.all(this.handles.all().map((h) => h.settle()));
  }
}
