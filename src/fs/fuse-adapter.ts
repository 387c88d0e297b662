// fuse-native's callback API over SftpOps: promise results to callbacks,
// FsError to -errno, the caller's identity taken where the binding offers it,
// and requests that may be re-sent after a reconnect marked as such.
import type { Logger } from 'pino';
import type { SftpSession } from '../sftp/session';
import { Errno, errnoOf } from './errno';
import { DEFAULT_CREATE_FLAGS } from './open-flags';
import { NAME_MAX, type Caller, type SftpOps } from './ops';

type Cb = (code: number, ...rest: unknown[]) => void;

/**
 * Where per-op figures (#13's Status counters) hook in: called once per
 * finished request with the op name, 0 or the errno returned, and the bytes
 * moved for read/write.
 */
export type OpObserver = (op: string, errno: number, bytes: number, path: string) => void;

export interface AdapterOptions {
  session: Pick<SftpSession, 'idempotent'>;
  log: Logger;
  /**
   * The requesting process's identity (libfuse's fuse_get_context), valid
   * only synchronously at a handler's entry: fuse-native's
   * `fuse.callerContext()` where the binding has it.
   */
  callerContext?: () => Caller | undefined;
  observe?: OpObserver;
}


/**
 * Requests that give the same answer when sent twice, so they are re-issued
 * after a reconnect instead of failing. open (never O_CREAT/O_EXCL: that is
 * create) may truncate twice, before any write through the new handle.
 * Writes, creates, renames and removals are not: a repeat could act twice or
 * hide that the first one landed.
 */
const IDEMPOTENT = new Set(['getattr', 'fgetattr', 'access', 'readdir', 'statfs', 'readlink', 'read', 'open']);

export function nameTooLong(path: string): boolean {
  if (Buffer.byteLength(path) <= NAME_MAX) return false;
  return path.split('/').some((c) => Buffer.byteLength(c) > NAME_MAX);
}

export function fuseOps(ops: SftpOps, o: AdapterOptions): Record<string, unknown> {
  const start = <T>(name: string, f: () => Promise<T>) => (IDEMPOTENT.has(name) ? o.session.idempotent(f) : f());
  const failed = (name: string, path: string, e: unknown): number => {
    const n = errnoOf(e);
    if (n === Errno.EIO) o.log.warn({ op: name, path, err: (e as Error).message }, 'I/O error');
    o.observe?.(name, n, 0, path);
    return n;
  };
  const run = <T>(name: string, path: string, f: () => Promise<T>, cb: Cb, ok: (v: T) => unknown[] = () => []) => {
    // The kernel looks every name up (getattr) before acting on it, so this
    // one check gives ENAMETOOLONG where a local filesystem would; OpenSSH's
    // sftp-server would answer BAD_MESSAGE, which maps to EIO.
    if (nameTooLong(path)) return cb(-Errno.ENAMETOOLONG);
    start(name, f).then(
      (v) => {
        o.observe?.(name, 0, 0, path);
        cb(0, ...ok(v));
      },
      (e) => cb(-failed(name, path, e)),
    );
  };
  // read/write report their byte count in the first callback argument.
  const io = (name: string, path: string, f: () => Promise<number>, cb: (n: number) => void) =>
    start(name, f).then(
      (n) => {
        o.observe?.(name, 0, n, path);
        cb(n);
      },
      (e) => cb(-failed(name, path, e)),
    );
  // Read before the handler's first await: the binding's context is only valid then.
  const caller = () => o.callerContext?.();
  return {
    getattr: (p: string, cb: Cb) => run('getattr', p, () => ops.getattr(p), cb, (s) => [s]),
    fgetattr: (p: string, fd: number, cb: Cb) => run('fgetattr', p, () => ops.fgetattr(p, fd), cb, (s) => [s]),
    access: (p: string, _mode: number, cb: Cb) => run('access', p, () => ops.access(p), cb),
    readdir: (p: string, cb: Cb) => run('readdir', p, () => ops.readdir(p), cb, (r) => [r.names, r.stats, r.plus]),
    statfs: (p: string, cb: Cb) => run('statfs', p, () => ops.statfs(), cb, (s) => [s]),
    readlink: (p: string, cb: Cb) => run('readlink', p, () => ops.readlink(p), cb, (t) => [t]),
    mkdir: (p: string, mode: number, cb: Cb) => {
      const c = caller();
      run('mkdir', p, () => ops.mkdir(p, mode, c), cb);
    },
    mknod: (p: string, mode: number, _dev: number, cb: Cb) => {
      const c = caller();
      run('mknod', p, () => ops.mknod(p, mode, c), cb);
    },
    rmdir: (p: string, cb: Cb) => run('rmdir', p, () => ops.rmdir(p), cb),
    unlink: (p: string, cb: Cb) => run('unlink', p, () => ops.unlink(p), cb),
    symlink: (target: string, p: string, cb: Cb) => {
      const c = caller();
      run('symlink', p, () => ops.symlink(target, p, c), cb);
    },
    link: (src: string, dst: string, cb: Cb) => run('link', dst, () => ops.link(src, dst), cb),
    rename: (src: string, dst: string, cb: Cb) => run('rename', src, () => ops.rename(src, dst), cb),
    chmod: (p: string, mode: number, cb: Cb) => run('chmod', p, () => ops.chmod(p, mode), cb),
    chown: (p: string, uid: number, gid: number, cb: Cb) => run('chown', p, () => ops.chown(p, uid, gid), cb),
    utimens: (p: string, atime: number, mtime: number, cb: Cb) => run('utimens', p, () => ops.utimens(p, atime, mtime), cb),
    truncate: (p: string, size: number, cb: Cb) => run('truncate', p, () => ops.truncate(p, size), cb),
    ftruncate: (p: string, fd: number, size: number, cb: Cb) => run('ftruncate', p, () => ops.ftruncate(p, fd, size), cb),
    open: (p: string, flags: number, cb: Cb) => run('open', p, () => ops.open(p, flags), cb, (fd) => [fd]),
    create: (p: string, mode: number, cb: Cb, flags = DEFAULT_CREATE_FLAGS) => {
      const c = caller();
      run('create', p, () => ops.create(p, mode, flags, c), cb, (fd) => [fd]);
    },
    read: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => io('read', p, () => ops.read(fd, buf, len, pos), cb),
    write: (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => io('write', p, () => ops.write(p, fd, buf, len, pos), cb),
    flush: (p: string, fd: number, cb: Cb) => run('flush', p, () => ops.flush(p, fd), cb),
    fsync: (p: string, _datasync: number, fd: number, cb: Cb) => run('fsync', p, () => ops.fsync(fd), cb),
    release: (p: string, fd: number, cb: Cb) => run('release', p, () => ops.release(p, fd), cb),
  };
}
