// Mount one SFTP-backed FUSE filesystem and take it down cleanly.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import Fuse from 'fuse-native';
import { TsfsError } from '../errors';
import { withDeadline } from '../sftp/deadline';
import { describeTarget } from '../sftp/target';
import { expandHome } from '../sftp/paths';
import { DEFAULT_RECONNECT_WAIT_MS, SftpSession, sftpCall } from '../sftp/session';
import { fuseOps } from './fuse-adapter';
import { MountStats } from './stats';
import { SftpOps, type Caller } from './ops';
import type { FsOptions, MountedFs } from './index';
import { keepMemoryTrimmed, writeBudget } from './memory';

/**
 * FUSE request size: the most the kernel sends per WRITE or asks per READ.
 * 512 KiB. Not libfuse 2's 128 KiB: four times the WRITE hand-offs cost seq
 * write CPU. Not libfuse 3's 1 MiB either: each of libfuse's worker threads
 * (two or three per busy mount) keeps resident what the largest request it
 * has read filled, and 512 KiB cost seq write no CPU where 256 KiB did
 * (docs/performance.md, "Request size 1 MiB → 512 KiB").
 */
const MAX_IO = 512 * 1024;

/**
 * Early write replies (fuse-native.c): up to this many bytes of WRITEs per
 * mount are copied and answered in libfuse's worker thread, then queued to
 * the server from this thread in order. A write(2) then costs no hop to the
 * Node thread; close and fsync still report every failure (a queued
 * write's failure is its handle's, src/fs/handles.ts). 2 MiB, four requests: the writer
 * fills the next while JS sends the last (figures in docs/performance.md).
 */
const WRITE_BEHIND = 2 * 1024 * 1024;

/**
 * fuse-native answers any op still pending after its timeout with ETIMEDOUT
 * (default 15 s). Data ops may legitimately wait for the in-flight cap or a
 * reconnect, so they never time out here; everything else gets longer than
 * the session's reconnect bound, which fails them with EIO first.
 */
function timeouts(reconnectMs: number): Record<string, number | false> {
  // An idempotent op may wait for the link, lose it again and wait once more.
  return { default: 2 * reconnectMs + 30_000, write: false, flush: false, fsync: false, release: false, read: false, create: false, open: false };
}

function fuseOptions(opts: FsOptions, ttlSeconds: number): string[] {
  const kernelTtl = String(Math.min(1, ttlSeconds));
  const fsname = `${opts.target.username}@${describeTarget(opts.target)}:${opts.target.remotePath || '~'}`.replace(/[^A-Za-z0-9@:._/~\[\]-]/g, '_');
  return [
    // libfuse 3 has no big_writes (always on) and would refuse the option.
    // max_write also caps READs: libfuse 3 derives the kernel's max_pages
    // from it (a max_read mount option would have to be repeated in init).
    `max_write=${MAX_IO}`,
    // The kernel checks permission bits against the uid/gid we report, as a
    // local filesystem would; without it every uid could do anything
    // allow_other lets in, as the SSH user.
    'default_permissions',
    // The kernel keeps names and attributes for up to 1 s (never longer
    // than our own cache), as sshfs does: a path walk or a stat within that
    // time costs no request (counts in docs/performance.md,
    // bench/count-requests.ts). libfuse's path-based API gives each hard
    // link its own kernel inode, so a change made through one name would
    // leave the other names' cached size and link count stale for that
    // second; the binding makes the kernel forget them when one changes
    // (AttrCache.dropLinked, fuse-native.c "Hard links").
    `attr_timeout=${kernelTtl}`,
    `entry_timeout=${kernelTtl}`,
    // Every READDIR a READDIRPLUS, not only the first buffer of a listing
    // (libfuse's default "auto"): `ls -l` reads the whole listing before its
    // first lstat, so under "auto" every name after the first few dozen was
    // looked up again. Each READDIRPLUS after the first is answered in C
    // from the listing kept on the directory's handle (fuse-native.c).
    'readdirplus=yes',
    `fsname=${fsname}`,
    'subtype=tsfs',
    ...(opts.readOnly ? ['ro'] : []),
  ];
}

function promisify(f: (cb: (err: Error | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => f((err) => (err ? reject(err) : resolve())));
}

export async function mountSftpFs(opts: FsOptions): Promise<MountedFs> {
  keepMemoryTrimmed();
  const log = opts.log.child({ mountpoint: opts.mountpoint });
  const reconnectWaitMs = opts.reconnectTimeoutMs ?? DEFAULT_RECONNECT_WAIT_MS;
  const session = new SftpSession(opts.target, log, {
    maxInFlight: opts.maxInFlightBytes,
    budget: writeBudget(),
    reconnectWaitMs,
    ...(opts.signal && { signal: opts.signal }),
    ...(opts.held && { held: opts.held }),
  });
  const ch = await session.start();
  let root: string;
  try {
    // Bounded like the connect: this runs under the volume's lock, inside dockerd's Mount.
    root = await withDeadline(
      (async () => {
        const r = await sftpCall.realpath(ch.meta, await expandHome(ch.meta, ch.ext, opts.target.remotePath || '.'));
        const a = await sftpCall.stat(ch.meta, r);
        if (!a.isDirectory()) throw new TsfsError(`${describeTarget(opts.target)}:${r} is not a directory`, 'not-a-directory');
        return r;
      })(),
      opts.target.connectTimeout,
      () => new TsfsError(`no answer to realpath/stat within ${opts.target.connectTimeout} ms`, 'timeout'),
    );
  } catch (e) {
    session.close();
    const code = e instanceof TsfsError ? e.code : (e as { code?: unknown }).code === 2 ? 'no-such-directory' : 'remote';
    throw new TsfsError(`cannot use remote directory ${opts.target.remotePath || '(login directory)'} on ${describeTarget(opts.target)}: ${(e as Error).message}; check the path in sshcmd`, code, { cause: e });
  }
  const ttl = opts.cacheTimeout;
  const ops = new SftpOps(session, {
    root,
    uid: opts.uid,
    gid: opts.gid,
    umask: opts.umask,
    readOnly: opts.readOnly,
    cacheTtlMs: ttl * 1000,
    log,
  });
  const stats = new MountStats(log);
  let fuse: Fuse;
  try {
    await detachStale(opts.mountpoint);
    // The caller's uid/gid (fuse_get_context), where the binding offers it: new files get their creator as owner.
    let binding: { callerContext?: () => Caller } | undefined;
    const callerContext = () => (typeof binding?.callerContext === 'function' ? binding.callerContext() : undefined);
    fuse = new Fuse(opts.mountpoint, fuseOps(ops, { session, log, callerContext, observe: stats.observe }), {
      allowOther: opts.allowOther,
      readdirPlus: true,
      writeBehind: WRITE_BEHIND,
      timeout: timeouts(reconnectWaitMs),
      extraOptions: fuseOptions(opts, ttl),
    });
    binding = fuse as unknown as typeof binding;
    // Cached attributes are answered in libfuse's worker thread, without the
    // hand-off to this thread: a lookup is a getattr (docs/performance.md).
    ops.cache.mirrorTo({
      // Both sides count CLOCK_MONOTONIC ms (monotonicMs() is Fuse.monotonicNow()'s clock).
      set: (p, a, expiresAt) => fuse.attrCacheSet(p, ops.toStat(a), expiresAt),
      delete: (p) => fuse.attrCacheDelete(p),
      clear: () => fuse.attrCacheClear(),
      linkedChanged: (except) => void fuse.invalidateLinked(except),
      // And the listings: a lookup of a name missing from one is ENOENT there.
      listingSet: (dir, names, expiresAt) => fuse.listingSet(dir, names, expiresAt),
      listingDelete: (dir, names) => fuse.listingDelete(dir, names),
      listingName: (p, present) => fuse.listingName(p, present),
    });
    await promisify((cb) => fuse.mount(cb));
  } catch (e) {
    session.close();
    throw new TsfsError(`FUSE mount on ${opts.mountpoint} failed: ${(e as Error).message}; is /dev/fuse available (--device /dev/fuse, CAP_SYS_ADMIN)?`, 'fuse-mount', { cause: e });
  }
  log.debug({ root, extensions: [...ch.ext], maxRead: ch.maxRead, maxWrite: ch.maxWrite }, 'SFTP filesystem mounted');
  // Round-trip time: one small request on the metadata channel per keepalive
  // interval (it queues behind other metadata requests, as a user's would).
  const sampleRtt = async () => {
    if (session.state !== 'connected') return;
    const c = await session.channels();
    const t0 = performance.now();
    await sftpCall.lstat(c.meta, root).then(() => stats.rtt(performance.now() - t0), () => undefined);
  };
  const rttTimer = setInterval(() => void sampleRtt(), opts.target.keepaliveInterval || 15_000);
  rttTimer.unref();
  void sampleRtt();
  let unmounted: Promise<void> | undefined;
  return {
    stats: () => {
      const info = session.linkInfo;
      return {
        ...stats.snapshot(),
        reconnects: session.reconnects,
        ...(info?.cipher && { cipher: info.cipher }),
        ...(info?.serverIdent && { server: info.serverIdent }),
        ...(info?.via && { via: info.via }),
        sftp_extensions: [...(session.extensions ?? ch.ext)].sort(),
      };
    },
    get linkState() {
      return session.state;
    },
    get lastError() {
      return session.state === 'connected' ? undefined : session.lastError;
    },
    unmount: () =>
      (unmounted ??= (async () => {
        clearInterval(rttTimer);
        // Give queued writes a bounded chance to land before the link goes:
        // those the binding answered early first, then the handles' own.
        // At most 4 MiB is queued per mount, so a live link drains in well
        // under a second; a dead one would not replay them anyway. 5 s keeps
        // a SIGTERM shutdown inside Docker's 10 s (main.ts exits at 8 s).
        const deadline = performance.now() + 5_000;
        while (fuse.queuedWrites() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        await Promise.race([ops.drainAll(), new Promise((r) => setTimeout(r, Math.max(0, deadline - performance.now())).unref())]);
        try {
          await promisify((cb) => fuse.unmount(cb));
        } catch (e) {
          log.warn({ err: (e as Error).message }, 'unmount failed; detaching lazily');
          await lazyDetach(opts.mountpoint);
        }
        session.close();
      })()),
  };
}

function run(cmd: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => execFile(cmd, args, { timeout: 10_000 }, (err) => resolve(!err)));
}

async function lazyDetach(mountpoint: string): Promise<boolean> {
  // Fuse.unmount detaches without a fork when we are root (the plugin is)
  // and runs fusermount3 when we are not; the helpers below are for a mount
  // neither could detach (one a libfuse 2 build left, say).
  if (await promisify((cb) => Fuse.unmount(mountpoint, cb)).then(() => true, () => false)) return true;
  for (const [cmd, args] of [
    ['fusermount', ['-uz', mountpoint]],
    ['umount', ['-l', mountpoint]],
  ] as const) {
    if (await run(cmd, [...args])) return true;
  }
  return false;
}

/**
 * A mountpoint whose FUSE server died answers ENOTCONN ("Transport endpoint
 * is not connected"); detach it lazily so it can be mounted again. Returns
 * true when something was detached.
 */
export async function detachStale(mountpoint: string): Promise<boolean> {
  try {
    // A name inside, not the mountpoint itself: the kernel answers a stat of
    // the root from attributes cached for attr_timeout (1 s) even when the
    // server is gone, while a lookup of a name that does not exist must ask
    // it (libfuse caches no negative entries: negative_timeout=0). On a
    // plain directory or a live mount this is just ENOENT.
    await stat(join(mountpoint, '.tsfs-liveness-probe'));
    return false;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOTCONN') return false;
    return lazyDetach(mountpoint);
  }
}
