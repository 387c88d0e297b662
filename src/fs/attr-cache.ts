// Attributes and directory listings seen recently, sshfs-style: a READDIR
// fills the attributes of every entry, so `ls -l` or a stat storm after a
// listing costs one round trip. Entries live `ttlMs`; every modification made
// through this mount updates or drops what it touches, so a container sees
// its own changes at once. Changes made by other clients show up within the
// TTL, as with sshfs.
import { posix } from 'node:path';

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

interface Entry<T> {
  value: T;
  expires: number;
}

/**
 * A copy of the attribute entries kept where the kernel's getattr lands first
 * (fuse-native's C table, packages/fuse-native): it is told every set, delete and
 * clear, in order, so it never holds what this cache has dropped.
 */
export interface AttrMirror {
  set(path: string, attrs: RemoteAttrs, expiresAt: number): void;
  delete(path: string): void;
  clear(): void;
}

export type Lookup = { kind: 'hit'; attrs: RemoteAttrs } | { kind: 'absent' } | { kind: 'miss' };

export class AttrCache {
  private attrs = new Map<string, Entry<RemoteAttrs>>();
  /** Names in a directory, from a complete READDIR; kept current for changes made here. */
  private listings = new Map<string, Entry<Set<string>>>();
  /** Names seen with st_nlink > 1: changing their data changes every other name's attributes. */
  private linked = new Set<string>();

  private mirror?: AttrMirror;

  constructor(private readonly ttlMs: number, private readonly now: () => number = Date.now) {}

  /** Mirror every attribute entry from now on (set before the first entry). */
  mirrorTo(m: AttrMirror): void {
    this.mirror = m;
    m.clear();
  }

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  lookup(path: string): Lookup {
    if (!this.enabled) return { kind: 'miss' };
    const t = this.now();
    const a = this.attrs.get(path);
    if (a && a.expires > t) return { kind: 'hit', attrs: a.value };
    if (path !== '/') {
      // A name missing from a fresh, complete listing that we kept current
      // for our own changes does not exist (as far as the TTL allows).
      const l = this.listings.get(posix.dirname(path));
      if (l && l.expires > t && !l.value.has(posix.basename(path))) return { kind: 'absent' };
    }
    return { kind: 'miss' };
  }

  put(path: string, attrs: RemoteAttrs): void {
    if (!this.enabled) return;
    this.setAttr(path, attrs, this.now() + this.ttlMs);
  }

  putListing(dir: string, entries: { name: string; attrs: RemoteAttrs }[]): void {
    if (!this.enabled) return;
    const expires = this.now() + this.ttlMs;
    this.listings.set(dir, { value: new Set(entries.map((e) => e.name)), expires });
    for (const e of entries) {
      this.setAttr(posix.join(dir, e.name), e.attrs, expires);
    }
  }

  /** The path's attributes changed (write, chmod, truncate...). */
  invalidate(path: string): void {
    // Other names of a hard-linked file are unknown (SFTP has no inode
    // numbers): forget everything rather than serve their old size.
    if (this.linked.has(path)) this.clear();
    else this.deleteAttr(path);
  }

  /** A name appeared in its directory through this mount. */
  added(path: string): void {
    this.deleteAttr(path);
    this.changedDir(path, (names, base) => names.add(base));
  }

  /** A name disappeared through this mount; for a directory, everything under it goes too. */
  removed(path: string): void {
    this.deleteAttr(path);
    this.dropTree(path);
    this.changedDir(path, (names, base) => names.delete(base));
  }

  /** Forget a directory's listing (e.g. its link counts changed). */
  forgetListing(dir: string): void {
    this.listings.delete(dir);
  }

  clear(): void {
    this.attrs.clear();
    this.listings.clear();
    this.linked.clear();
    this.mirror?.clear();
  }

  private setAttr(path: string, attrs: RemoteAttrs, expires: number): void {
    this.attrs.set(path, { value: attrs, expires });
    if ((attrs.nlink ?? 1) > 1) this.linked.add(path);
    this.mirror?.set(path, attrs, expires);
  }

  private deleteAttr(path: string): void {
    if (this.attrs.delete(path)) this.mirror?.delete(path);
  }

  private changedDir(path: string, f: (names: Set<string>, base: string) => void): void {
    const dir = posix.dirname(path);
    this.deleteAttr(dir); // its mtime, size and link count changed
    const l = this.listings.get(dir);
    if (l) f(l.value, posix.basename(path));
  }

  private dropTree(path: string): void {
    const prefix = path.endsWith('/') ? path : path + '/';
    this.listings.delete(path);
    for (const k of this.attrs.keys()) if (k.startsWith(prefix)) this.deleteAttr(k);
    for (const k of this.listings.keys()) if (k.startsWith(prefix)) this.listings.delete(k);
  }
}
