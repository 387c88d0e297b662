// The part of this package's interface that tsfs uses (src/fs/mount.ts).
declare namespace Fuse {
  interface FuseOpts {
    allowOther?: boolean;
    /** Per-op milliseconds, or false for none; `default` for the rest. */
    timeout?: number | false | Record<string, number | false>;
    /**
     * Passed verbatim after -o (this copy's addition): libfuse 3's mount,
     * library (attr_timeout...) and connection options (max_write,
     * max_readahead, readdirplus=, splice_*, writeback_cache...).
     */
    extraOptions?: string[];
    /**
     * Hand readdir's stats to the kernel as READDIRPLUS entries (this copy's
     * addition), for the names whose `plus` flag readdir's callback set: the
     * kernel then caches each such entry's attributes (attr_timeout) and its
     * name (entry_timeout), as if looked up.
     */
    readdirPlus?: boolean;
    /**
     * Early write replies (this copy's addition): up to this many bytes of
     * WRITEs are copied and answered in the worker thread, then given to
     * `ops.write` in order on the Node thread. Every other request waits
     * until the writes answered before it reached `ops.write`. A queued
     * write's error cannot reach its write(2): `ops.write` must keep it for
     * flush, fsync and release. 0 (default): off.
     */
    writeBehind?: number;
  }
  /** The request being served: libfuse's fuse_get_context(). */
  interface CallerContext {
    uid: number;
    gid: number;
    pid: number;
    /** The caller's umask (what the kernel sent with CREATE/MKDIR/MKNOD; 0 for other requests). */
    umask: number;
  }
  interface Negotiated {
    maxWrite: number;
    maxReadahead: number;
    maxRead: number;
    /** libfuse's FUSE_CAP_* bits wanted after init. */
    want: number;
  }
}
declare class Fuse {
  constructor(mnt: string, ops: Record<string, unknown>, opts?: Fuse.FuseOpts);
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
  /** Lazy unmount with fusermount3 -uz (a mount whose server died). */
  static unmount(mnt: string, cb: (err: Error | null) => void): void;
  /**
   * uid/gid/pid/umask of the request whose op handler is being invoked (this
   * copy's addition). Valid synchronously at the handler's entry, before its
   * first await or callback: the next request's call overwrites it.
   */
  callerContext(): Fuse.CallerContext;
  /** What the kernel and libfuse agreed at init; null before mount. */
  negotiated(): Fuse.Negotiated | null;
  /**
   * Return the free pages of every malloc arena to the kernel (glibc
   * malloc_trim(0), this copy's addition). True if any were returned.
   */
  static trimMemory(): boolean;
  /**
   * Bound the copies that early write replies (`writeBehind`) hold, all
   * mounts of the process together (this copy's addition); 0 removes the
   * bound. A write that finds no room goes to `ops.write` synchronously.
   * Returns the bytes held now.
   */
  static setWriteBehindBudget(bytes: number): number;
  /** CLOCK_MONOTONIC in milliseconds: the clock of attrCacheSet's expiresAt. */
  static monotonicNow(): number;
  /**
   * The C attribute table getattr reads before calling JS (this copy's
   * addition). expiresAt is a Fuse.monotonicNow() value.
   */
  attrCacheSet(path: string, stat: object, expiresAt: number): void;
  attrCacheDelete(path: string): void;
  attrCacheClear(): void;
  /** The caller holds dir's complete listing until expiresAt (monotonicNow's clock): other names in dir are ENOENT without a call. */
  listingSet(dir: string, names: string[], expiresAt: number): void;
  /** The caller no longer holds dir's listing; names: what it held. */
  listingDelete(dir: string, names: string[]): void;
  /** path's name appeared in (true) or left (false) the listing held of its directory. */
  listingName(path: string, present: boolean): void;
  /**
   * A file that may have other names changed: the kernel drops what it
   * holds for every other multiply-linked name it was given (with entry or
   * attr timeouts above 0, libfuse gives each name its own kernel inode).
   * Call before answering the changing request. Returns how many names
   * were queued.
   */
  invalidateLinked(exceptPath?: string): number;
  /** Writes answered early (`writeBehind`) that `ops.write` has not been given yet. */
  queuedWrites(): number;
}
export = Fuse;
