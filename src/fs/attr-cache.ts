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

export type Lookup = { kind: 'hit'; attrs: RemoteAttrs } | { kind: 'absent' } | { kind: 'miss' };

export class AttrCache {
  private attrs = new Map<string, Entry<RemoteAttrs>>();
  /** Names in a directory, from a complete READDIR; kept current for changes made here. */
  private listings = new Map<string, Entry<Set<string>>>();
  /** Names seen with st_nlink > 1: changing their data changes every other name's attributes. */
  private linked = new Set<string>();

  constructor(private readonly ttlMs: number, private readonly now: () => number = Date.now) {}

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
    this.attrs.set(path, { value: attrs, expires: this.now() + this.ttlMs });
    if ((attrs.nlink ?? 1) > 1) this.linked.add(path);
  }

  putListing(dir: string, entries: { name: string; attrs: RemoteAttrs }[]): void {
    if (!this.enabled) return;
    const expires = this.now() + this.ttlMs;
    this.listings.set(dir, { value: new Set(entries.map((e) => e.name)), expires });
    for (const e of entries) {
      const p = posix.join(dir, e.name);
      this.attrs.set(p, { value: e.attrs, expires });
      if ((e.attrs.nlink ?? 1) > 1) this.linked.add(p);
    }
  }

  /** The path's attributes changed (write, chmod, truncate...). */
  invalidate(path: string): void {
    // Other names of a hard-linked file are unknown (SFTP has no inode
    // numbers): forget everything rather than serve their old size.
    if (this.linked.has(path)) this.clear();
    else this.attrs.delete(path);
  }

  /** A name appeared in its directory through this mount. */
  added(path: string): void {
    this.attrs.delete(path);
    this.changedDir(path, (names, base) => names.add(base));
  }

  /** A name disappeared through this mount; for a directory, everything under it goes too. */
  removed(path: string): void {
    this.attrs.delete(path);
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
  }

  private changedDir(path: string, f: (names: Set<string>, base: string) => void): void {
    const dir = posix.dirname(path);
    this.attrs.delete(dir); // its mtime, size and link count changed
    const l = this.listings.get(dir);
    if (l) f(l.value, posix.basename(path));
  }

  private dropTree(path: string): void {
    const prefix = path.endsWith('/') ? path : path + '/';
    this.listings.delete(path);
    for (const k of this.attrs.keys()) if (k.startsWith(prefix)) this.attrs.delete(k);
    for (const k of this.listings.keys()) if (k.startsWith(prefix)) this.listings.delete(k);
  }
}
