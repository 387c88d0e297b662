// The metadata cache without a server: a fake clock for expiry, a recording
// mirror standing in for fuse-native's C table.
import fc from 'fast-check';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it, vi } from 'vitest';
import { AttrCache, type AttrMirror, type RemoteAttrs } from '../../src/fs/attr-cache';

const file = (size: number, nlink?: number): RemoteAttrs => ({ mode: 0o100644, uid: 0, gid: 0, size, atime: 1, mtime: 1, ...(nlink ? { nlink } : {}) });
const dir: RemoteAttrs = { mode: 0o40755, uid: 0, gid: 0, size: 4096, atime: 1, mtime: 1 };

function setup(opts: { limits?: Partial<ConstructorParameters<typeof AttrCache>[1] & object>['limits']; busy?: (p: string) => boolean } = {}) {
  let t = 1_000;
  const held = new Map<string, { attrs: RemoteAttrs; expiresAt: number }>();
  const mirror: AttrMirror = {
    set: (p, attrs, expiresAt) => held.set(p, { attrs, expiresAt }),
    delete: (p) => held.delete(p),
    clear: () => held.clear(),
  };
  const cache = new AttrCache(20_000, { now: () => t, limits: opts.limits, busy: opts.busy });
  cache.mirrorTo(mirror);
  const put = (p: string, a: RemoteAttrs) => {
    const s = cache.beginFetch();
    cache.put(p, a, s);
    cache.endFetch();
  };
  return { cache, held, put, advance: (ms: number) => (t += ms), now: () => t };
}

describe('AttrCache', () => {
  it('a file made in a cached directory keeps the directory\'s entry, with the new file\'s mtime; other additions drop it', () => {
    const { cache, held, put, advance, now } = setup();
    put('/d', { ...dir, mtime: 100 });
    const expiresAt = held.get('/d')!.expiresAt;
    advance(5_000);
    cache.added('/d/new', 160);
    expect(cache.lookup('/d')).toEqual({ kind: 'hit', attrs: { ...dir, mtime: 160 } });
    // Mirrored with its old deadline: keeping the entry does not extend it.
    expect(held.get('/d')).toEqual({ attrs: { ...dir, mtime: 160 }, expiresAt });
    // A server clock behind ours never moves the mtime back.
    cache.added('/d/older', 90);
    expect(cache.lookup('/d')).toEqual({ kind: 'hit', attrs: { ...dir, mtime: 160 } });
    // No server time (mkdir, rename, link): the directory is asked again.
    cache.added('/d/sub');
    expect(cache.lookup('/d').kind).toBe('miss');
    expect(held.has('/d')).toBe(false);
    expect(now()).toBeLessThan(expiresAt);
  });

  it('serves an entry until its TTL on the clock it is given, and the mirror gets the same deadline', () => {
    const { cache, held, put, advance, now } = setup();
    put('/f', file(3));
    expect(held.get('/f')?.expiresAt).toBe(now() + 20_000);
    advance(19_999);
    expect(cache.lookup('/f')).toEqual({ kind: 'hit', attrs: file(3) });
    advance(1);
    expect(cache.lookup('/f').kind).toBe('miss');
    expect(held.has('/f')).toBe(false); // the expired entry left the C table with it
  });

  it('is bounded by entries: the least recently used go, from the mirror too', () => {
    const { cache, held, put } = setup({ limits: { attrEntries: 100, attrBytes: 1 << 30, listings: 10, listingBytes: 1 << 30 } });
    for (let i = 0; i < 1_000; i++) put(`/d/f${i}`, file(i));
    expect(cache.size.attrs).toBe(100);
    expect(held.size).toBe(100);
    expect(cache.lookup('/d/f999').kind).toBe('hit');
    expect(cache.lookup('/d/f0').kind).toBe('miss');
    expect(held.has('/d/f0')).toBe(false);
  });

  it('an empty cache holds little: its memory grows with what it caches, not with its limits', () => {
    // Every mounted volume has one, used or not. lru-cache preallocates
    // `max` slots: 0.6 MiB per cache at the default 16,384 entries, which
    // made an idle daemon with 128 volumes 230 MiB instead of 116.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage().heapUsed;
    const caches = Array.from({ length: 100 }, () => new AttrCache(20_000));
    gc();
    const perCache = (process.memoryUsage().heapUsed - before) / caches.length;
    expect(perCache).toBeLessThan(64 * 1024);
  });

  it('is bounded by entries and bytes together: an entry counts at least bytes / entries', () => {
    const { cache, held, put } = setup({ limits: { attrEntries: 100, attrBytes: 100 * 1_000, listings: 10, listingBytes: 1 << 30 } });
    // 50 short paths (counted at the 1,000-byte floor) and 30 of about 2,200 bytes: 116,000 > 100,000.
    for (let i = 0; i < 50; i++) put(`/s${i}`, file(i));
    const long = 'y'.repeat(1_000);
    for (let i = 0; i < 30; i++) put(`/${long}${i}`, file(i));
    expect(cache.size.attrs).toBeLessThan(80);
    expect(cache.lookup(`/${long}29`).kind).toBe('hit');
    expect(cache.lookup('/s0').kind).toBe('miss');
    expect(held.size).toBe(cache.size.attrs);
  });

  it('is bounded by bytes: long paths count for more', () => {
    const { cache, held, put } = setup({ limits: { attrEntries: 1_000_000, attrBytes: 100_000, listings: 10, listingBytes: 1 << 30 } });
    const long = 'x'.repeat(1_000);
    for (let i = 0; i < 200; i++) put(`/${long}${i}`, file(i));
    expect(cache.size.attrs).toBeLessThanOrEqual(100_000 / 2_000);
    expect(held.size).toBe(cache.size.attrs);
  });

  it('removing a directory drops what is cached under it and nothing beside it', () => {
    const { cache, held, put } = setup();
    put('/a', dir);
    put('/a/x', file(1));
    put('/a/b', dir);
    put('/a/b/y', file(2));
    put('/ab', dir);
    put('/ab/z', file(3));
    let s = cache.beginFetch();
    cache.putListing('/a/b', [{ name: 'y', attrs: file(2) }], s);
    cache.endFetch();
    cache.removed('/a');
    expect([...held.keys()].sort()).toEqual(['/ab', '/ab/z']);
    expect(cache.lookup('/a/b/y').kind).toBe('miss');
    expect(cache.lookup('/a/b/new').kind).toBe('miss'); // the listing went too: no false "absent"
    expect(cache.lookup('/ab/z').kind).toBe('hit');
    // The index of children is cleaned: a new /a starts empty.
    put('/a', dir);
    s = cache.beginFetch();
    cache.putListing('/a', [], s);
    cache.endFetch();
    expect(cache.lookup('/a/x').kind).toBe('absent');
  });

  it('refuses an answer requested before a change to the same path (the meta channel may answer before a WRITE on the data channel lands)', () => {
    const { cache, held } = setup();
    const since = cache.beginFetch();
    cache.changed('/f'); // a WRITE queued or answered while the LSTAT was out
    cache.put('/f', file(0), since);
    cache.putListing('/', [{ name: 'f', attrs: file(0) }, { name: 'g', attrs: file(7) }], since);
    cache.endFetch();
    expect(held.has('/f')).toBe(false);
    expect(cache.lookup('/f').kind).toBe('miss');
    expect(cache.lookup('/g')).toEqual({ kind: 'hit', attrs: file(7) });
  });

  it('refuses an answer for a path whose writes are still unanswered', () => {
    const busy = new Set(['/f']);
    const { cache, held, put } = setup({ busy: (p) => busy.has(p) });
    put('/f', file(0));
    expect(held.has('/f')).toBe(false);
    busy.clear();
    put('/f', file(9));
    expect(cache.lookup('/f')).toEqual({ kind: 'hit', attrs: file(9) });
  });

  it('keeps the link count across a chmod-style refresh and a rename (SFTP stat has none)', () => {
    const { cache, put } = setup();
    put('/f', file(1, 2));
    cache.invalidate('/f');
    let s = cache.beginFetch();
    expect(cache.put('/f', file(1), s).nlink).toBe(2);
    cache.endFetch();
    cache.renamed('/f', '/g');
    s = cache.beginFetch();
    expect(cache.put('/g', file(1), s).nlink).toBe(2);
    cache.endFetch();
  });

  it('a change to one hard-linked name drops every multiply-linked name (their sizes changed too)', () => {
    const { cache, held, put } = setup();
    put('/a', file(1, 2));
    put('/b', file(1, 2));
    put('/c', file(1));
    cache.invalidate('/a');
    expect([...held.keys()]).toEqual(['/c']);
  });

  it('a name missing from a fresh listing is absent; names added through the mount appear', () => {
    const { cache } = setup();
    const s = cache.beginFetch();
    cache.putListing('/d', [{ name: 'x', attrs: file(1) }], s);
    cache.endFetch();
    expect(cache.lookup('/d/y').kind).toBe('absent');
    cache.added('/d/y');
    expect(cache.lookup('/d/y').kind).toBe('miss');
  });

  it('clear empties the mirror with one call', () => {
    const { cache, held, put } = setup();
    let deletes = 0;
    const m: AttrMirror = { set: () => undefined, delete: () => deletes++, clear: () => held.clear() };
    cache.mirrorTo(m);
    put('/x', file(1));
    put('/y', file(1));
    cache.clear();
    expect(deletes).toBe(0);
    expect(cache.size).toEqual({ attrs: 0, listings: 0 });
  });

  it('expires on the monotonic clock: a wall-clock step (NTP, a resumed VM) neither keeps nor drops entries', () => {
    const cache = new AttrCache(20_000);
    const s = cache.beginFetch();
    cache.put('/f', file(1), s);
    cache.endFetch();
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 3_600_000);
      expect(cache.lookup('/f').kind).toBe('hit');
      vi.setSystemTime(Date.now() - 7_200_000);
      expect(cache.lookup('/f').kind).toBe('hit');
    } finally {
      vi.useRealTimers();
    }
  });

  it('the mirror never answers ENOENT for a name this cache would not call absent, whatever the order of listings, changes, evictions and time', () => {
    // The C table's rule (fuse-native.c, "Negative lookups"), on what the
    // mirror was told: a name with fresh attributes is there; otherwise it is
    // absent if its directory's listing is fresh and the name is not among
    // those given for it.
    const names = ['a', 'b', 'c', '.fuse_hidden1'];
    const dirs = ['/', '/d', '/d/e', '/x'];
    const paths = dirs.flatMap((d) => names.map((n) => (d === '/' ? `/${n}` : `${d}/${n}`)));
    const step = fc.oneof(
      fc.record({ op: fc.constant('listing' as const), dir: fc.constantFrom(...dirs), names: fc.subarray(names), racing: fc.boolean() }),
      fc.record({ op: fc.constant('empty' as const), dir: fc.constantFrom(...dirs) }),
      fc.record({ op: fc.constantFrom('added' as const, 'removed' as const, 'invalidate' as const), path: fc.constantFrom(...paths, ...dirs.slice(1)) }),
      fc.record({ op: fc.constant('renamed' as const), src: fc.constantFrom(...paths, ...dirs.slice(1)), dst: fc.constantFrom(...paths, ...dirs.slice(1)) }),
      fc.record({ op: fc.constant('clear' as const) }),
      fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 30_000 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), fc.integer({ min: 1, max: 3 }), (steps, maxListings) => {
        let t = 1_000;
        const listed = new Map<string, number>();
        const present = new Set<string>();
        const attrs = new Map<string, number>();
        const under = (dir: string, n: string) => (dir === '/' ? `/${n}` : `${dir}/${n}`);
        const mirror: AttrMirror = {
          set: (p, _a, expiresAt) => attrs.set(p, expiresAt),
          delete: (p) => attrs.delete(p),
          clear: () => {
            attrs.clear();
            listed.clear();
            present.clear();
          },
          listingSet: (dir, ns, expiresAt) => {
            for (const n of ns) present.add(under(dir, n));
            listed.set(dir, expiresAt);
          },
          listingDelete: (dir, ns) => {
            listed.delete(dir);
            for (const n of ns) present.delete(under(dir, n));
          },
          listingName: (p, isIn) => (isIn ? present.add(p) : present.delete(p)),
        };
        // Few listings kept, so evictions happen too.
        const cache = new AttrCache(20_000, { now: () => t, limits: { attrEntries: 100, attrBytes: 1 << 20, listings: maxListings, listingBytes: 1 << 20 } });
        cache.mirrorTo(mirror);
        const mirrorSaysAbsent = (p: string) => {
          const slash = p.lastIndexOf('/');
          const d = slash === 0 ? '/' : p.slice(0, slash);
          const exp = listed.get(d);
          if ((attrs.get(p) ?? 0) > t) return false;
          return !p.slice(slash + 1).startsWith('.fuse_hidden') && exp !== undefined && exp > t && !present.has(p);
        };
        for (const s of steps) {
          switch (s.op) {
            case 'listing': {
              const since = cache.beginFetch();
              // A change racing the READDIR: the listing must not be kept.
              if (s.racing) cache.added(under(s.dir, 'c'));
              cache.putListing(s.dir, s.names.map((n) => ({ name: n, attrs: file(1) })), since);
              cache.endFetch();
              break;
            }
            case 'empty': cache.putEmptyDir(s.dir); break;
            case 'added': cache.added(s.path); break;
            case 'removed': cache.removed(s.path); break;
            case 'invalidate': cache.invalidate(s.path); break;
            case 'renamed': if (s.src !== s.dst) cache.renamed(s.src, s.dst); break;
            case 'clear': cache.clear(); break;
            case 'advance': t += s.ms; break;
          }
          for (const p of paths) if (mirrorSaysAbsent(p)) expect(cache.lookup(p).kind, `${p} after ${JSON.stringify(s)}`).toBe('absent');
        }
      }),
      { numRuns: 500 },
    );
  });
});
