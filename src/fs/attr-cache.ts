// Attributes and directory listings seen recently, sshfs-style: a READDIR
// fills the attributes of every entry, so `ls -l` or a stat storm after a
// listing costs one round trip. Entries live `ttlMs`; every modification made
// through this mount updates or drops what it touches, so a container sees
// its own changes at once. Changes made by other clients show up within the
// TTL, as with sshfs.
//
// Bounded: least recently used entries go first once either the entry count
// or the estimated bytes reach the limits (CacheLimits), and whatever leaves
// this cache leaves the C table too (AttrMirror), so neither grows with the
// size of the tree a job walks. Removing a directory drops what is cached
// under it through an index of cached children, at the cost of what the
// subtree holds, not of the whole cache.
import { posix } from 'node:path';
import { LRUCache } from 'lru-cache';

export interface RemoteAttrs {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch (SFTP v3 carries whole seconds). */
  atime: number;
  mtime: number;
  /** Link count, when the server told us (OpenSSH's READDIR longname); else undefined. */
  nlink?: number;
}

/** performance.now() counts on CLOCK_MONOTONIC (libuv's uv_hrtime) from the process's start; this moves it to the clock's own origin. */
const MONOTONIC_OFFSET = Number(process.hrtime.bigint()) / 1e6 - performance.now();

/**
 * "Now" for every expiry in this cache and in its C mirror: milliseconds on
 * CLOCK_MONOTONIC, so a wall-clock step (NTP, a VM resumed) neither keeps
 * entries forever nor drops them all. The one place the time base is chosen;
 * it is the clock of fuse-native's Fuse.monotonicNow() and of its C table.
 */
export function monotonicMs(): number {
  return performance.now() + MONOTONIC_OFFSET;
}

/**
 * A copy of the attribute entries kept where the kernel's getattr lands first
 * (fuse-native's C table, packages/fuse-native): it is told every set, delete and
 * clear, in order, so it never holds what this cache has dropped. `expiresAt`
 * is on monotonicMs()'s clock.
 */
export interface AttrMirror {
  set(path: string, attrs: RemoteAttrs, expiresAt: number): void;
  delete(path: string): void;
  clear(): void;
  /**
   * A file that may have other names changed (`except` is the changed
   * name): the kernel must forget what it holds for the other names.
   */
  linkedChanged?(except?: string): void;
  /**
   * Listings, so that a lookup of a name missing from a fresh one is
   * answered without this thread (fuse-native's "Negative lookups"). The
   * mirror must never hold a listing this cache has dropped, nor lack a name
   * this cache's listing has: it is told of a new name before the listing
   * here takes it, and of a dropped listing with the names it held.
   */
  listingSet?(dir: string, names: string[], expiresAt: number): void;
  listingDelete?(dir: string, names: string[]): void;
  listingName?(path: string, present: boolean): void;
}

export interface CacheLimits {
  /** Attribute entries (one per path). */
  attrEntries: number;
  /** Estimated bytes of attribute entries (path, attributes and bookkeeping). */
  attrBytes: number;
  /** Directory listings kept. */
  listings: number;
  /** Estimated bytes of the names the listings hold. */
  listingBytes: number;
}

/**
 * Per mount. Enough for the working set of a job (a few directories of
 * thousands of files) and for `ls -lR` to answer each lstat from the listing
 * just read; a walk of a larger tree recycles the oldest entries. The
 * resident memory this bounds is measured in docs/performance.md.
 */
export const DEFAULT_LIMITS: CacheLimits = { attrEntries: 16_384, attrBytes: 8 << 20, listings: 1_024, listingBytes: 4 << 20 };

export type Lookup = { kind: 'hit'; attrs: RemoteAttrs } | { kind: 'absent' } | { kind: 'miss' };

interface AttrEntry {
  attrs: RemoteAttrs;
  expires: number;
}

interface Listing {
  names: Set<string>;
  expires: number;
}

/** Above this many changes recorded during one fetch, every path counts as changed. */
const MAX_CHANGES_TRACKED = 10_000;

export interface AttrCacheOptions {
  limits?: CacheLimits;
  now?: () => number;
  /** True while writes to the path are queued and unanswered: its size on the server is not settled. */
  busy?: (path: string) => boolean;
}

export class AttrCache {
  private readonly attrs: LRUCache<string, AttrEntry>;
  private readonly listings: LRUCache<string, Listing>;
  /** Directory -> its children that have an entry in either map (for subtree removal). */
  private readonly kids = new Map<string, Set<string>>();
  /** Cached names with st_nlink > 1: changing one changes the others' attributes. */
  private readonly linked = new Set<string>();
  /**
   * Link counts of names whose entry was dropped by a change that keeps
   * them (chmod, chown, utimens, rename): SFTP v3 stat carries no link
   * count, only OpenSSH's READDIR does, and a refresh must not turn 2 into 1.
   */
  private readonly nlinks = new LRUCache<string, number>({ maxSize: 4_096, sizeCalculation: () => 1 }); // not `max`: see the constructor
  private mirror?: AttrMirror;
  private clearing = false;
  private readonly now: () => number;
  private readonly busy: (path: string) => boolean;

  // Answers that raced a change (see beginFetch).
  private changeSeq = 0;
  private fetches = 0;
  private changes = new Map<string, number>();
  private allChangedAt = 0;

  constructor(private readonly ttlMs: number, opts: AttrCacheOptions = {}) {
    const limits = opts.limits ?? DEFAULT_LIMITS;
    this.now = opts.now ?? monotonicMs;
    this.busy = opts.busy ?? (() => false);
    const perf = { now: this.now };
    const ttl = Math.max(1, ttlMs);
    // No `max` for lru-cache: it preallocates and fills that many slots in
    // five arrays, most of a MiB per mount at 16,384 entries, held whether
    // the mount is used or not (docs/performance.md, "Memory per mounted
    // volume"). Instead every entry counts at least maxSize / max, so
    // maxSize bounds the count as well, and the arrays grow with what is
    // cached.
    const attrFloor = Math.max(1, Math.floor(limits.attrBytes / limits.attrEntries));
    const listingFloor = Math.max(1, Math.floor(limits.listingBytes / limits.listings));
    this.attrs = new LRUCache<string, AttrEntry>({
      maxSize: limits.attrBytes,
      sizeCalculation: (_v, k) => Math.max(attrFloor, 2 * k.length + 200),
      ttl,
      ttlResolution: 0,
      perf,
      // After the entry is gone (dispose would run while has(k) still holds).
      disposeAfter: (_v, k, reason) => {
        if (reason === 'set') return; // replaced: the new value is mirrored by setAttr
        this.linked.delete(k);
        if (!this.clearing) this.mirror?.delete(k);
        this.unindex(k);
      },
    });
    this.listings = new LRUCache<string, Listing>({
      maxSize: limits.listingBytes,
      sizeCalculation: (v, k) => {
        let n = 2 * k.length + 100;
        for (const name of v.names) n += 2 * name.length + 50;
        return Math.min(Math.max(listingFloor, n), limits.listingBytes);
      },
      ttl,
      ttlResolution: 0,
      perf,
      disposeAfter: (v, k, reason) => {
        if (reason === 'set') return; // replaced: setListing mirrors the new one
        this.unindex(k);
        if (!this.clearing) this.mirror?.listingDelete?.(k, [...v.names]);
      },
    });
  }

  /** Mirror every attribute entry from now on (set before the first entry). */
  mirrorTo(m: AttrMirror): void {
    this.mirror = m;
    m.clear();
  }

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  /** Entries held now (attributes, listings): for tests and Status. */
  get size(): { attrs: number; listings: number } {
    return { attrs: this.attrs.size, listings: this.listings.size };
  }

  lookup(path: string): Lookup {
    if (!this.enabled) return { kind: 'miss' };
    const t = this.now();
    const a = this.attrs.get(path);
    if (a && a.expires > t) return { kind: 'hit', attrs: a.attrs };
    if (a) this.attrs.delete(path); // expired: out of the C table too
    if (path !== '/') {
      // A name missing from a fresh, complete listing that we kept current
      // for our own changes does not exist (as far as the TTL allows).
      const l = this.listings.get(posix.dirname(path));
      if (l && l.expires > t && !l.names.has(posix.basename(path))) return { kind: 'absent' };
    }
    return { kind: 'miss' };
  }

  /**
   * The ordering contract between the two SFTP channels (session.ts), kept
   * here. WRITEs go on the data channel and are acknowledged to FUSE once
   * queued; LSTAT and READDIR go on the meta channel, and the server answers
   * the two channels independently. So an answer on meta can describe a file
   * as it was before WRITEs that FUSE already acknowledged, and an answer
   * requested before a chmod/rename/truncate made through this mount can
   * arrive after it. Neither may be cached, or the C table would serve the
   * old size or mode for the whole TTL. Hence: take a token before sending a
   * request whose answer will be cached (beginFetch), give it to put /
   * putListing, and call endFetch after. An answer is cached for a path only
   * if nothing changed the path since the token (changed(): every
   * invalidate, every WRITE queued or answered) and no WRITE to it is still
   * unanswered (`busy`). Answers are still returned to the caller: a stat
   * racing a write may see either state, as on a local filesystem; only
   * remembering them is refused. A stat waits for writes queued before it
   * (FileHandle.settle), which is what sshfs gives with one channel.
   */
  beginFetch(): number {
    this.fetches++;
    return this.changeSeq;
  }

  endFetch(): void {
    if (--this.fetches === 0) {
      this.changes.clear();
      this.allChangedAt = 0;
    }
  }

  /** Something about `path` changed on the server through this mount (or is changing: a WRITE queued/answered). */
  changed(path: string): void {
    this.changeSeq++;
    if (this.fetches === 0) return;
    if (this.changes.size >= MAX_CHANGES_TRACKED) this.allChangedAt = this.changeSeq;
    else this.changes.set(path, this.changeSeq);
  }

  private unchanged(path: string, since: number): boolean {
    return this.allChangedAt <= since && (this.changes.get(path) ?? 0) <= since;
  }

  private fresh(path: string, since: number): boolean {
    return this.unchanged(path, since) && !this.busy(path);
  }

  /** Remember an answer fetched with token `since`; returns the attributes with a kept link count. */
  put(path: string, attrs: RemoteAttrs, since: number): RemoteAttrs {
    if (attrs.nlink === undefined) {
      const n = this.nlinks.get(path);
      if (n !== undefined) attrs = { ...attrs, nlink: n };
    } else this.nlinks.delete(path);
    if (this.enabled && this.fresh(path, since)) this.setAttr(path, attrs, this.now() + this.ttlMs);
    return attrs;
  }

  /** Attributes this mount has just made itself (a create or mkdir it finished): no answer raced them. */
  putOwn(path: string, attrs: RemoteAttrs): void {
    if (this.enabled && !this.busy(path)) this.setAttr(path, attrs, this.now() + this.ttlMs);
  }

  /** A directory this mount has just made: empty, so lookups of new names in it need no round trip. */
  putEmptyDir(dir: string): void {
    if (!this.enabled) return;
    this.setListing(dir, new Set(), this.now() + this.ttlMs);
  }

  putListing(dir: string, entries: { name: string; attrs: RemoteAttrs }[], since: number): void {
    if (!this.enabled) return;
    const expires = this.now() + this.ttlMs;
    // The names stand unless a name was added or removed here since (which changed() the directory).
    if (this.unchanged(dir, since)) this.setListing(dir, new Set(entries.map((e) => e.name)), expires);
    const prefix = dir === '/' ? '/' : `${dir}/`;
    for (const e of entries) {
      const p = prefix + e.name;
      if (this.fresh(p, since)) this.setAttr(p, e.attrs, expires, dir);
    }
  }

  /** The path's attributes changed (write, chmod, truncate...). */
  invalidate(path: string): void {
    this.changed(path);
    // Other names of a hard-linked file are unknown (SFTP has no inode
    // numbers): forget every name with more than one link rather than serve
    // their old size. When the path itself is not cached, it may be one of them.
    const e = this.attrs.peek(path, { allowStale: true });
    if (!e || (e.attrs.nlink ?? 1) > 1) this.dropLinked(false, path);
    if (e?.attrs.nlink !== undefined) this.nlinks.set(path, e.attrs.nlink);
    this.attrs.delete(path);
  }

  /**
   * Link counts changed (link, or unlink of a name with other names), or
   * `changed`, a file that may have other names, did: forget every
   * multiply-linked name, here and in the kernel.
   */
  dropLinked(countsChanged = true, changed?: string): void {
    if (countsChanged) this.nlinks.clear();
    if (this.linked.size > 0) {
      for (const k of [...this.linked]) {
        const n = this.attrs.peek(k, { allowStale: true })?.attrs.nlink;
        if (!countsChanged && n !== undefined) this.nlinks.set(k, n);
        this.changed(k);
        this.attrs.delete(k);
      }
    }
    // The kernel may hold names this cache has already let go of (expired
    // here, still within its own attr_timeout): the binding keeps those.
    this.mirror?.linkedChanged?.(changed);
  }

  /** `src` is now `dst` (rename through this mount): the entry and what is cached under it move away. */
  renamed(src: string, dst: string): void {
    const n = this.attrs.peek(src, { allowStale: true })?.attrs.nlink ?? this.nlinks.get(src);
    this.removed(src);
    this.removed(dst);
    this.added(dst);
    this.nlinks.delete(src);
    if (n !== undefined) this.nlinks.set(dst, n);
    else this.nlinks.delete(dst);
  }

  /**
   * A name appeared in its directory through this mount. `createdAt`, the
   * server's mtime of a new file, is the directory's new mtime too: then
   * the directory's entry is kept with that mtime instead of dropped. Its
   * mode and owner, which the kernel checks on every path walk through it
   * (default_permissions), did not change, and the kernel asks for them
   * after each create; dropping the entry cost a round trip per file made.
   */
  added(path: string, createdAt?: number): void {
    this.changed(path);
    this.attrs.delete(path);
    const dir = posix.dirname(path);
    const d = createdAt === undefined ? undefined : this.attrs.get(dir);
    this.changedDir(path, (names, base) => {
      this.mirror?.listingName?.(path, true); // the mirror first: it may lack no name the listing has
      names.add(base);
    });
    if (d && d.expires > this.now()) this.setAttr(dir, { ...d.attrs, mtime: Math.max(d.attrs.mtime, createdAt!) }, d.expires);
  }

  /** A name disappeared through this mount; for a directory, everything under it goes too. */
  removed(path: string): void {
    this.changed(path);
    this.attrs.delete(path);
    this.dropTree(path);
    this.changedDir(path, (names, base) => {
      names.delete(base);
      this.mirror?.listingName?.(path, false);
    });
  }

  clear(): void {
    this.changeSeq++;
    if (this.fetches > 0) this.allChangedAt = this.changeSeq;
    this.clearing = true;
    try {
      this.attrs.clear();
      this.listings.clear();
    } finally {
      this.clearing = false;
    }
    this.kids.clear();
    this.linked.clear();
    this.nlinks.clear();
    this.mirror?.clear();
  }

  /** `dir`: the path's directory where the caller knows it (a listing's entries share one). */
  private setAttr(path: string, attrs: RemoteAttrs, expires: number, dir?: string): void {
    // Every entry is far below the byte bound (a path is at most 4 KiB), so lru-cache always keeps it.
    this.attrs.set(path, { attrs, expires }, { ttl: this.ttlMs });
    if ((attrs.nlink ?? 1) > 1) this.linked.add(path);
    else if (this.linked.size > 0) this.linked.delete(path);
    this.index(path, dir);
    this.mirror?.set(path, attrs, expires);
  }

  private setListing(dir: string, names: Set<string>, expires: number): void {
    const old = this.listings.peek(dir, { allowStale: true });
    this.listings.set(dir, { names, expires });
    if (!this.listings.has(dir)) return;
    this.index(dir);
    this.mirror?.listingSet?.(dir, [...names], expires);
    // Names the older listing had and this one lacks: out of the mirror too,
    // where they would only send their lookups here.
    if (old && this.mirror?.listingName) {
      const prefix = dir === '/' ? '/' : `${dir}/`;
      for (const n of old.names) if (!names.has(n)) this.mirror.listingName(prefix + n, false);
    }
  }

  private changedDir(path: string, f: (names: Set<string>, base: string) => void): void {
    const dir = posix.dirname(path);
    this.changed(dir);
    this.attrs.delete(dir); // its mtime, size and link count changed
    this.nlinks.delete(dir);
    const l = this.listings.peek(dir, { allowStale: true });
    if (l) f(l.names, posix.basename(path));
  }

  private index(path: string, dir = posix.dirname(path)): void {
    if (path === '/') return;
    let s = this.kids.get(dir);
    if (!s) this.kids.set(dir, (s = new Set()));
    s.add(path);
  }

  private unindex(path: string): void {
    if (path === '/' || this.attrs.has(path) || this.listings.has(path)) return;
    const dir = posix.dirname(path);
    const s = this.kids.get(dir);
    if (s?.delete(path) && s.size === 0) this.kids.delete(dir);
  }

  /** Everything cached strictly under `path` (and its listing): cost is what the subtree holds. */
  private dropTree(path: string): void {
    this.listings.delete(path);
    const stack = [path];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      const children = this.kids.get(dir);
      if (!children) continue;
      this.kids.delete(dir);
      for (const k of children) {
        stack.push(k);
        this.attrs.delete(k);
        this.listings.delete(k);
        this.linked.delete(k);
      }
    }
  }
}
