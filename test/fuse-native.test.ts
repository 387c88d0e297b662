// packages/fuse-native driven directly, on a small in-memory filesystem: what
// the binding answers in C or hands to JS, checked from child processes
// through a real FUSE mount (never synchronous I/O from this process, which
// serves the mount).
import { execFile, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import Fuse from 'fuse-native';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isMounted } from './helpers/fs-mount';

type Cb = (err: number, ...rest: unknown[]) => void;
type Stat = { mode: number; size: number; uid: number; gid: number; mtime: Date; atime: Date; ctime: Date; nlink: number };

const ROOT: Stat = { mode: 0o40777, size: 4096, uid: 0, gid: 0, mtime: new Date(0), atime: new Date(0), ctime: new Date(0), nlink: 2 };
const file = (size: number): Stat => ({ mode: 0o100644, size, uid: 0, gid: 0, mtime: new Date(0), atime: new Date(0), ctime: new Date(0), nlink: 1 });

let mnt: string;
let fuse: Fuse;
const files = new Map<string, Stat>();
const getattrCalls: string[] = [];
const creates: { path: string; caller: Fuse.CallerContext }[] = [];

function child(cmd: string, args: string[], as?: { uid: number; gid: number }): Promise<{ code: number; stdout: string; stderr: string; pid: number }> {
  return new Promise((resolve) => {
    const p = execFile(cmd, args, { ...as, timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as NodeJS.ErrnoException).code ?? 1) || 1 : 0, stdout, stderr, pid: p.pid ?? -1 }),
    );
  });
}

/** A child's stdout as lines, as they come. */
function lines(c: ReturnType<typeof spawn>): { out: string[]; waitFor: (line: string) => Promise<void>; exit: Promise<number> } {
  const out: string[] = [];
  let buf = '';
  const waiters: { line: string; wake: () => void }[] = [];
  c.stdout!.on('data', (d) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop()!;
    out.push(...parts);
    for (const w of waiters.filter((x) => out.includes(x.line))) w.wake();
  });
  const exit = new Promise<number>((resolve) => c.on('exit', (code) => resolve(code ?? -1)));
  const waitFor = (line: string) =>
    out.includes(line) ? Promise.resolve() : new Promise<void>((wake, reject) => {
      waiters.push({ line, wake });
      void exit.then(() => (out.includes(line) ? wake() : reject(new Error(`child exited without printing ${line}: ${out.join(' | ')}`))));
    });
  return { out, waitFor, exit };
}

/** Mount `ops` at a new directory under the temp dir (a test filesystem of this file). */
async function mountAt(prefix: string, ops: Record<string, unknown>, opts: Fuse.FuseOpts): Promise<{ dir: string; fuse: Fuse }> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  const fuse = new Fuse(dir, ops, { allowOther: true, ...opts });
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  return { dir, fuse };
}

/** Unmount (lazily if the instance could not) and remove the directory; fails the suite if it stays mounted. */
async function unmountAt(dir: string | undefined, fuse: Fuse | undefined): Promise<void> {
  if (!dir) return;
  if (fuse) await new Promise<void>((resolve) => fuse.unmount(() => resolve()));
  if (isMounted(dir)) await child('umount', ['-l', dir]);
  expect(isMounted(dir)).toBe(false);
  rmdirSync(dir);
}

beforeAll(async () => {
  const ops = {
    getattr: (p: string, cb: Cb) => {
      getattrCalls.push(p);
      if (p === '/') return cb(0, ROOT);
      const st = files.get(p);
      return st ? cb(0, st) : cb(-2 /* ENOENT */);
    },
    readdir: (p: string, cb: Cb) => cb(0, [...files.keys()].map((k) => k.slice(1)), [...files.values()]),
    create: (p: string, mode: number, cb: Cb) => {
      // Synchronously at the handler's entry, as the contract says.
      creates.push({ path: p, caller: fuse.callerContext() });
      files.set(p, { ...file(0), mode: 0o100000 | (mode & 0o7777) });
      setImmediate(() => cb(0, 1));
    },
    open: (_p: string, _flags: number, cb: Cb) => cb(0, 1),
    release: (_p: string, _fd: number, cb: Cb) => cb(0),
    utimens: (_p: string, _a: number, _m: number, cb: Cb) => cb(0),
    rename: (src: string, dst: string, cb: Cb) => {
      const st = files.get(src);
      if (!st) return cb(-2 /* ENOENT */);
      files.delete(src);
      files.set(dst, st);
      return cb(0);
    },
  };
  ({ dir: mnt, fuse } = await mountAt('tsfs-fn-', ops, { extraOptions: ['attr_timeout=0', 'entry_timeout=0', 'subtype=tsfs-test'] }));
});

afterAll(() => unmountAt(mnt, fuse));

describe('fuse-native on libfuse 3', () => {
  it('callerContext() gives the handler the uid, gid, pid and umask of the process that made the request', async () => {
    // sh itself opens the file for the redirection, so the caller is the child's own pid.
    const r = await child('/bin/sh', ['-c', `umask 027; : > ${join(mnt, 'by-1000')}`], { uid: 1000, gid: 1001 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const c = creates.find((x) => x.path === '/by-1000');
    expect(c?.caller).toEqual({ uid: 1000, gid: 1001, pid: r.pid, umask: 0o027 });
    // The kernel applied the umask to the mode it sent (no DONT_MASK).
    expect(files.get('/by-1000')!.mode & 0o777).toBe(0o640);
  });

  it('the C attribute table answers getattr until its CLOCK_MONOTONIC expiry (Fuse.monotonicNow), then JS does', async () => {
    files.set('/t', file(5));
    // A stat the table answers: a different size than JS would give, and no JS call.
    fuse.attrCacheSet('/t', file(1234), Fuse.monotonicNow() + 600_000);
    getattrCalls.length = 0;
    const cached = await child('stat', ['-c', '%s', join(mnt, 't')]);
    expect(cached.stdout.trim()).toBe('1234');
    expect(getattrCalls).not.toContain('/t');
    // Expired by the same clock: JS answers again.
    fuse.attrCacheSet('/t', file(1234), Fuse.monotonicNow() - 1);
    const expired = await child('stat', ['-c', '%s', join(mnt, 't')]);
    expect(expired.stdout.trim()).toBe('5');
    expect(getattrCalls).toContain('/t');
    // Deleted: JS answers.
    fuse.attrCacheSet('/t', file(99), Fuse.monotonicNow() + 600_000);
    fuse.attrCacheDelete('/t');
    expect((await child('stat', ['-c', '%s', join(mnt, 't')])).stdout.trim()).toBe('5');
  });

  it('a name missing from a listing JS holds is ENOENT without a call to JS, and only while JS holds it', async () => {
    const statOf = async (name: string) => {
      getattrCalls.length = 0;
      const r = await child('stat', ['-c', '%s', join(mnt, name)]);
      return { found: r.code === 0 ? r.stdout.trim() : 'ENOENT', asked: getattrCalls.includes(`/${name}`) };
    };
    files.set('/listed', file(7));
    const later = Fuse.monotonicNow() + 600_000;
    // Without a listing, JS answers both.
    expect(await statOf('nope')).toEqual({ found: 'ENOENT', asked: true });
    fuse.listingSet('/', ['listed'], later);
    expect(await statOf('nope')).toEqual({ found: 'ENOENT', asked: false });
    // A listed name with no cached attributes still goes to JS.
    expect(await statOf('listed')).toEqual({ found: '7', asked: true });
    // libfuse's hidden names (files unlinked while open) always go to JS.
    expect(await statOf('.fuse_hidden0001')).toEqual({ found: 'ENOENT', asked: true });
    // A name added to the listing is no longer absent: JS answers it.
    files.set('/nope', file(3));
    fuse.listingName('/nope', true);
    expect(await statOf('nope')).toEqual({ found: '3', asked: true });
    // Removed from the listing: absent again, without JS (which would say 3).
    fuse.listingName('/nope', false);
    expect(await statOf('nope')).toEqual({ found: 'ENOENT', asked: false });
    // A listing JS dropped answers nothing.
    fuse.listingDelete('/', ['listed']);
    expect(await statOf('nope')).toEqual({ found: '3', asked: true });
    // Nor does one past its expiry, on the same clock as the attribute table.
    fuse.listingSet('/', ['listed'], Fuse.monotonicNow() - 1);
    expect(await statOf('nope')).toEqual({ found: '3', asked: true });
    // Replaced by a fresh listing that has the name: JS answers it.
    fuse.listingSet('/', ['listed', 'nope'], later);
    expect(await statOf('nope')).toEqual({ found: '3', asked: true });
    expect(await statOf('other')).toEqual({ found: 'ENOENT', asked: false });
    // attrCacheClear drops listings with the attributes.
    fuse.attrCacheClear();
    expect(await statOf('other')).toEqual({ found: 'ENOENT', asked: true });
    files.delete('/nope');
    files.delete('/listed');
  });

  it('renameat2 flags the server cannot honour get EINVAL, and mv still works through its fallback', async () => {
    files.set('/a', file(1));
    const r = await child('python3', ['-c', `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
res = libc.renameat2(AT_FDCWD, b"${join(mnt, 'a')}", AT_FDCWD, b"${join(mnt, 'b')}", 1)  # RENAME_NOREPLACE
print(res, os.strerror(ctypes.get_errno()) if res else "")
`]);
    expect(r.stdout.trim()).toBe('-1 Invalid argument');
    expect(files.has('/a')).toBe(true);
    const mv = await child('mv', ['-n', join(mnt, 'a'), join(mnt, 'b')]);
    expect(mv.stderr).toBe('');
    expect([files.has('/a'), files.has('/b')]).toEqual([false, true]);
  });

  it('reports what the kernel negotiated at init', () => {
    const n = fuse.negotiated();
    expect(n).not.toBeNull();
    // libfuse 3 lifts libfuse 2's 128 KiB cap: with no max_write option it asks for 1 MiB.
    expect(n!.maxWrite).toBe(1024 * 1024);
  });

  it('an unmounted instance lets go of the filesystem it served, so mount/unmount cycles do not pile up', async () => {
    // Before, the native side's reference to the instance kept every
    // unmounted filesystem's ops (in tsfs: caches and session) for good,
    // about 0.8 MiB of heap per mount/unmount cycle.
    const dir = mkdtempSync(join(tmpdir(), 'tsfs-fn-gc-'));
    let served: WeakRef<object> | undefined;
    let f: Fuse | undefined;
    await (async () => {
      const theirOps = { getattr: (_p: string, cb: Cb) => cb(0, ROOT), readdir: (_p: string, cb: Cb) => cb(0, [], []) };
      served = new WeakRef(theirOps);
      f = new Fuse(dir, theirOps, { extraOptions: ['subtype=tsfs-test'] });
      await new Promise<void>((resolve, reject) => f!.mount((err) => (err ? reject(err) : resolve())));
      expect((await child('ls', ['-la', dir])).code).toBe(0);
      await new Promise<void>((resolve, reject) => f!.unmount((err) => (err ? reject(err) : resolve())));
    })();
    expect(isMounted(dir)).toBe(false);
    rmdirSync(dir);
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // deref() keeps its target alive until the end of the current job, so
    // each try collects first, in a new job, and looks after.
    let collected = false;
    for (let i = 0; i < 5 && !collected; i++) {
      await new Promise((r) => setImmediate(r));
      gc();
      collected = served!.deref() === undefined;
    }
    expect(collected).toBe(true);
    expect(f).toBeDefined(); // the instance itself is still referenced here
  });
});

describe('Fuse.unmount', () => {
  it('detaches a busy mount by itself, without fusermount3, and names the errno when it cannot', async () => {
    // As root the binding calls umount2(MNT_DETACH) off the Node thread: no
    // fork of the daemon, which cost 50-95 ms each at 1.4 GiB RSS. With no
    // PATH, a fallback to fusermount3 could not run, so success here is the
    // binding's own. A process whose cwd is inside keeps the mount busy,
    // which only a lazy unmount gets past.
    const { dir, fuse: f } = await mountAt('tsfs-fn-um-', { getattr: (_p: string, cb: Cb) => cb(0, ROOT), readdir: (_p: string, cb: Cb) => cb(0, [], []) }, { extraOptions: ['subtype=tsfs-test'] });
    const busy = spawn('sh', ['-c', 'exec sleep 60'], { cwd: dir, stdio: 'ignore' });
    const path = process.env.PATH;
    try {
      await new Promise((r) => setTimeout(r, 100));
      process.env.PATH = '/nonexistent';
      await new Promise<void>((resolve, reject) => f.unmount((err) => (err ? reject(err) : resolve())));
      expect(isMounted(dir)).toBe(false);
      const notMounted = await new Promise<NodeJS.ErrnoException | null>((resolve) => Fuse.unmount(dir, resolve));
      expect(notMounted?.code).toBe('EINVAL');
      expect(notMounted?.message).toContain(dir);
    } finally {
      process.env.PATH = path;
      busy.kill('SIGKILL');
      await unmountAt(dir, undefined);
    }
  });
});

describe('Fuse.trimMemory', () => {
  it('hands the pages malloc keeps after a collection back to the kernel', async () => {
    // In a child of its own, so that only its own allocations are measured:
    // 125 MiB of 32 KiB ArrayBuffers (malloc's arena, below its mmap
    // threshold), all dropped but one allocated after them, which keeps
    // glibc from shrinking the arena from its top by itself.
    const script = `
      const { readFileSync } = require('node:fs');
      const Fuse = require(${JSON.stringify(require.resolve('fuse-native'))});
      const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
      (async () => {
        let bufs = [];
        for (let i = 0; i < 4000; i++) bufs.push(new Uint8Array(32 * 1024).fill(1));
        const top = new Uint8Array(32 * 1024).fill(1);
        bufs = null;
        for (let i = 0; i < 3; i++) { gc(); await new Promise((r) => setTimeout(r, 50)); }
        const before = rss();
        const released = Fuse.trimMemory();
        console.log(JSON.stringify({ before, after: rss(), released, top: top.length }));
      })();`;
    const r = await child(process.execPath, ['--expose-gc', '-e', script]);
    expect(r.stderr).toBe('');
    const m = JSON.parse(r.stdout) as { before: number; after: number; released: boolean };
    expect(m.released).toBe(true);
    expect(m.before - m.after).toBeGreaterThan(100);
  });
});

// A second mount with the kernel caching names and attributes for 1 s, as
// tsfs mounts: what the binding does so that this caching stays correct
// (hard links) and pays (listings kept per open directory, READDIRPLUS).
describe('fuse-native with entry and attribute timeouts (READDIRPLUS, hard links)', () => {
  let dir: string;
  let f: Fuse;
  const names = new Map<string, Stat>();
  const calls = { readdir: 0, getattr: [] as string[] };
  // The names readdir marks as fit to be the kernel's attributes.
  let plusFor = (_name: string) => true;
  // What a change through the mount does before it answers: tsfs's AttrCache calls invalidateLinked.
  let onChange = (path: string) => void f.invalidateLinked(path);

  beforeAll(async () => {
    const ops = {
      getattr: (p: string, cb: Cb) => {
        calls.getattr.push(p);
        if (p === '/') return cb(0, ROOT);
        const st = names.get(p);
        return st ? cb(0, st) : cb(-2 /* ENOENT */);
      },
      readdir: (_p: string, cb: Cb) => {
        calls.readdir++;
        const ks = [...names.keys()].map((k) => k.slice(1));
        return cb(0, ks, [...names.values()], ks.map((k) => plusFor(k)));
      },
      truncate: (p: string, size: number, cb: Cb) => {
        const st = names.get(p);
        if (!st) return cb(-2);
        st.size = size; // shared by every name of the file
        onChange(p);
        return cb(0);
      },
      rename: (src: string, dst: string, cb: Cb) => {
        const st = names.get(src);
        if (!st) return cb(-2);
        names.delete(src);
        names.set(dst, st);
        return cb(0);
      },
    };
    ({ dir, fuse: f } = await mountAt('tsfs-fn-plus-', ops, {
      readdirPlus: true,
      extraOptions: ['attr_timeout=1', 'entry_timeout=1', 'readdirplus=yes', 'subtype=tsfs-test'],
    }));
  });

  afterAll(() => unmountAt(dir, f));

  it('a listing of many kernel buffers costs JS one readdir, and marked names need no lookup afterwards', async () => {
    names.clear();
    for (let i = 0; i < 600; i++) names.set(`/big-file-name-${String(i).padStart(4, '0')}`, file(i));
    plusFor = (n) => !n.endsWith('7'); // every tenth name is not fit: the kernel must look it up
    calls.readdir = 0;
    calls.getattr.length = 0;
    // ls reads the whole listing first, then lstats each name.
    const r = await child('ls', ['-l', '--time-style=+', dir]);
    expect(r.code).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => l.includes('big-file-name-'));
    expect(rows).toHaveLength(600);
    // Each name with its own size, whether it came with the listing or by lookup.
    for (const row of rows) {
      const [, , , , size, name] = row.trim().split(/\s+/);
      expect(Number(size)).toBe(Number(name.slice('big-file-name-'.length)));
    }
    // 600 entries are several READDIRPLUS buffers; all but the first were answered in C.
    expect(calls.readdir).toBe(1);
    const lookedUp = calls.getattr.filter((p) => p.startsWith('/big-file-name-'));
    expect(lookedUp.sort()).toEqual([...names.keys()].filter((k) => k.endsWith('7')).sort());
  });

  it('a change to a hard-linked file reaches the kernel attributes of its other names at once, also after a rename', async () => {
    names.clear();
    plusFor = () => true;
    const shared = { ...file(1), nlink: 2 };
    names.set('/a', shared);
    names.set('/b', shared);
    // The kernel now holds b's attributes (size 1) for 1 s.
    expect((await child('stat', ['-c', '%s', join(dir, 'b')])).stdout.trim()).toBe('1');
    // truncate a, then stat b at once, in one process: truncate's reply waited for the invalidation.
    const r = await child('/bin/sh', ['-c', `truncate -s 7 ${join(dir, 'a')} && stat -c %s ${join(dir, 'b')}`]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('7');
    // The note follows the name the kernel moved: b renamed to c.
    expect((await child('stat', ['-c', '%s', join(dir, 'b')])).stdout.trim()).toBe('7');
    expect((await child('mv', [join(dir, 'b'), join(dir, 'c')])).code).toBe(0);
    const r2 = await child('/bin/sh', ['-c', `truncate -s 9 ${join(dir, 'a')} && stat -c %s ${join(dir, 'c')}`]);
    expect(r2.stdout.trim()).toBe('9');
  });

  it('without the invalidation the other name shows its old size (what the test above guards against)', async () => {
    names.clear();
    const shared = { ...file(1), nlink: 2 };
    names.set('/x', shared);
    names.set('/y', shared);
    onChange = () => undefined;
    try {
      const t0 = performance.now();
      expect((await child('stat', ['-c', '%s', join(dir, 'y')])).stdout.trim()).toBe('1');
      const r = await child('/bin/sh', ['-c', `truncate -s 5 ${join(dir, 'x')} && stat -c %s ${join(dir, 'y')}`]);
      const stale = r.stdout.trim();
      const t1 = performance.now();
      // y at least (names noted by the test above may still be within their second).
      expect(f.invalidateLinked('/x')).toBeGreaterThanOrEqual(1);
      const fresh = (await child('stat', ['-c', '%s', join(dir, 'y')])).stdout.trim();
      // The kernel kept y's old size: within its 1 s, unless this machine stalled that long.
      if (t1 - t0 < 900) expect([stale, fresh]).toEqual(['1', '5']);
      else expect(fresh).toBe('5');
    } finally {
      onChange = (path: string) => void f.invalidateLinked(path);
    }
  });
});

describe('fuse-native early write replies (writeBehind)', () => {
  let dir: string;
  let f: Fuse;
  // What JS saw, in order: 'write <pos> <data>', 'flush', 'release', 'getattr'.
  const log: string[] = [];
  // ops.write completes when this resolves (the test holds the first write).
  let gate: Promise<void> = Promise.resolve();
  // Writes of data starting with this fail, and so does every later write and flush of their handle.
  const failing = 'X';
  const failed = new Set<number>();
  let nextFd = 1;

  beforeAll(async () => {
    const ops = {
      getattr: (p: string, cb: Cb) => {
        if (p === '/') return cb(0, ROOT);
        if (p !== '/f') return cb(-2);
        log.push('getattr');
        return cb(0, file(4));
      },
      // Declared, as tsfs does, so libfuse's getattrs with a handle reach the
      // binding as fgetattr; fuse-native's JS serves those with ops.getattr.
      fgetattr: (_p: string, _fd: number, cb: Cb) => cb(-5 /* EIO: never called */),
      open: (_p: string, _flags: number, cb: Cb) => cb(0, nextFd++),
      write: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
        const data = buf.subarray(0, len).toString();
        log.push(`write ${pos} ${data}`);
        if (failed.has(fd) || data.startsWith(failing)) {
          failed.add(fd);
          return setImmediate(() => cb(-5 /* EIO */));
        }
        void gate.then(() => cb(len));
      },
      flush: (_p: string, fd: number, cb: Cb) => {
        log.push('flush');
        cb(failed.has(fd) ? -5 : 0);
      },
      release: (_p: string, fd: number, cb: Cb) => {
        log.push('release');
        failed.delete(fd);
        cb(0);
      },
    };
    ({ dir, fuse: f } = await mountAt('tsfs-fn-wb-', ops, { writeBehind: 1 << 20, extraOptions: ['attr_timeout=0', 'entry_timeout=0', 'subtype=tsfs-test'] }));
  });

  afterAll(() => unmountAt(dir, f));

  /** A node child doing `steps` on <dir>/f with synchronous fs calls, printing one line per step as it goes. */
  function script(steps: string): ReturnType<typeof spawn> {
    const p = join(dir, 'f');
    const code = `const fs = require('fs'); const say = (s) => fs.writeSync(1, s + '\\n');
      const tryIt = (name, fn) => { try { fn(); say(name + ' ok'); } catch (e) { say(name + ' ' + e.code); } };
      const fd = fs.openSync(${JSON.stringify(p)}, 'r+'); ${steps}`;
    return spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  it('write(2) returns while JS still holds an earlier write; JS gets every write in order, and close waits for them', async () => {
    log.length = 0;
    let open!: () => void;
    gate = new Promise((resolve) => (open = resolve));
    const c = lines(script(`for (const s of ['A', 'B', 'C']) fs.writeSync(fd, s, 0); say('written'); fs.closeSync(fd); say('closed');`));
    await c.waitFor('written');
    // Three write(2) calls returned, yet JS has answered none: the first is held, the others wait in C.
    expect(log.filter((l) => l.startsWith('write'))).toEqual(['write 0 A']);
    expect(c.out).not.toContain('closed');
    open();
    expect(await c.exit).toBe(0);
    expect(c.out).toEqual(['written', 'closed']);
    // Same offset three times: only the order JS saw makes the file end as C.
    expect(log.filter((l) => l !== 'getattr')).toEqual(['write 0 A', 'write 0 B', 'write 0 C', 'flush', 'release']);
  });

  it('a getattr on an open file (lseek SEEK_END, libfuse after a create) is answered from the attribute table, but only after JS has taken every write queued before it', async () => {
    // The kernel asks with the handle when it needs the size of an open file
    // (SEEK_END under attr_timeout=0); libfuse passes that on as fgetattr,
    // which fuse-native's JS serves with ops.getattr.
    const seekEnd = (steps: string) =>
      lines(spawn('python3', ['-c', `import os, sys
def say(s):
    sys.stdout.write(s + "\\n"); sys.stdout.flush()
fd = os.open(${JSON.stringify(join(dir, 'f'))}, os.O_RDWR)
${steps}
say('end %d' % os.lseek(fd, 0, os.SEEK_END))
os.close(fd)`], { stdio: ['ignore', 'pipe', 'pipe'] }));
    const asked = () => log.filter((l) => l === 'getattr').length;
    log.length = 0;
    f.attrCacheSet('/f', file(1234), Fuse.monotonicNow() + 600_000);
    try {
      const cached = seekEnd('');
      expect(await cached.exit).toBe(0);
      expect(cached.out).toEqual(['end 1234']);
      expect(asked()).toBe(0);
      // Not in the table: JS answers both the open's lookup and the seek's getattr.
      f.attrCacheDelete('/f');
      const missed = seekEnd('');
      expect(await missed.exit).toBe(0);
      expect(missed.out).toEqual(['end 4']);
      expect(asked()).toBe(2);
      // Behind queued writes: JS holds A, B waits in C, and the getattr waits
      // until JS has B (tsfs drops a path's entry when it takes a write to it).
      f.attrCacheSet('/f', file(1234), Fuse.monotonicNow() + 600_000);
      log.length = 0;
      let open!: () => void;
      gate = new Promise((resolve) => (open = resolve));
      const c = seekEnd(`os.pwrite(fd, b'A', 0)
os.pwrite(fd, b'B', 1)
say('written')`);
      await c.waitFor('written');
      expect(log.filter((l) => l.startsWith('write'))).toEqual(['write 0 A']);
      expect(c.out).toEqual(['written']);
      open();
      expect(await c.exit).toBe(0);
      expect(c.out).toEqual(['written', 'end 1234']);
      expect(log).toEqual(['write 0 A', 'write 1 B', 'flush', 'release']);
    } finally {
      gate = Promise.resolve();
      f.attrCacheDelete('/f');
    }
  });

  it('a queued write JS refused fails close, and the later writes of its handle fail at once', async () => {
    log.length = 0;
    gate = Promise.resolve();
    const fd = nextFd;
    // fstat waits until JS has taken the write before it (and learnt it failed).
    const c = lines(script(`tryIt('write1', () => fs.writeSync(fd, 'X', 0)); tryIt('fstat', () => fs.fstatSync(fd)); tryIt('write2', () => fs.writeSync(fd, 'Y', 0)); tryIt('close', () => fs.closeSync(fd));`));
    expect(await c.exit).toBe(0);
    // write1 was answered before JS saw it; write2 went to JS and failed there.
    expect(c.out).toEqual(['write1 ok', 'fstat ok', 'write2 EIO', 'close EIO']);
    expect(log.filter((l) => l.startsWith('write'))).toEqual(['write 0 X', 'write 0 Y']);
    // A new open may reuse the handle number: its writes are answered early again.
    let open!: () => void;
    gate = new Promise((resolve) => (open = resolve));
    nextFd = fd;
    log.length = 0;
    const d = lines(script(`fs.writeSync(fd, 'A', 0); fs.writeSync(fd, 'B', 0); say('written'); fs.closeSync(fd);`));
    await d.waitFor('written');
    expect(log.filter((l) => l.startsWith('write'))).toEqual(['write 0 A']);
    open();
    expect(await d.exit).toBe(0);
  });

  it('past the budget of all mounts together, a write goes to JS synchronously, still in order', async () => {
    // Fuse.setWriteBehindBudget bounds the early replies' copies across
    // mounts and returns the bytes they hold. With a budget of 2 bytes, AA
    // is answered early and BBB, which cannot fit, must wait for JS (sizes,
    // not timing, decide which way each write goes).
    log.length = 0;
    const gates: (() => void)[] = [];
    const hold = () => (gate = new Promise((resolve) => gates.push(resolve)));
    const seen = async (line: string) => {
      while (!log.includes(line)) await new Promise((r) => setImmediate(r));
    };
    Fuse.setWriteBehindBudget(2);
    try {
      hold();
      const c = lines(script(`for (const s of ['AA', 'BBB']) { fs.writeSync(fd, s, 0); say(s + ' ok'); } fs.closeSync(fd);`));
      await c.waitFor('AA ok');
      await seen('write 0 AA');
      hold();
      gates[0](); // JS answers AA; BBB, which waited for it, reaches JS
      await seen('write 0 BBB');
      // BBB is no copy held in C but the synchronous WRITE JS is holding now.
      expect(Fuse.setWriteBehindBudget(2)).toBe(0);
      expect(f.queuedWrites()).toBe(0);
      expect(c.out).toEqual(['AA ok']);
      gates[1]();
      expect(await c.exit).toBe(0);
      expect(c.out).toEqual(['AA ok', 'BBB ok']);
      expect(log.filter((l) => l !== 'getattr')).toEqual(['write 0 AA', 'write 0 BBB', 'flush', 'release']);
    } finally {
      Fuse.setWriteBehindBudget(0);
      for (const g of gates) g();
      gate = Promise.resolve();
    }
  });
});

describe('fuse-native early write replies beside hard-linked names', () => {
  let dir: string;
  let f: Fuse;
  const log: string[] = [];
  let gate: Promise<void> = Promise.resolve();
  const names = new Map<string, Stat>();

  beforeAll(async () => {
    const ops = {
      getattr: (p: string, cb: Cb) => {
        if (p === '/') return cb(0, ROOT);
        const st = names.get(p);
        return st ? cb(0, st) : cb(-2);
      },
      open: (_p: string, _flags: number, cb: Cb) => cb(0, 1),
      truncate: (p: string, size: number, cb: Cb) => {
        const st = names.get(p);
        if (!st) return cb(-2);
        st.size = size;
        return cb(0);
      },
      write: (_p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
        log.push(`write ${pos} ${buf.subarray(0, len).toString()}`);
        void gate.then(() => cb(len));
      },
      flush: (_p: string, _fd: number, cb: Cb) => cb(0),
      release: (_p: string, _fd: number, cb: Cb) => cb(0),
    };
    ({ dir, fuse: f } = await mountAt('tsfs-fn-links-wb-', ops, {
      writeBehind: 1 << 20,
      extraOptions: ['attr_timeout=30', 'entry_timeout=30', 'subtype=tsfs-test'],
    }));
  });

  afterAll(() => unmountAt(dir, f));

  it('writes go synchronously while a hard-linked name is noted, and are answered early again once its invalidation is delivered', async () => {
    const shared = { ...file(1), nlink: 2 };
    names.set('/a', shared);
    names.set('/b', shared);
    names.set('/f', file(0));
    // The kernel now holds b's attributes (nlink 2) for 30 s: the binding notes b.
    expect((await child('stat', ['-c', '%h', join(dir, 'b')])).stdout.trim()).toBe('2');
    const writer = () =>
      lines(spawn(process.execPath, ['-e', `const fs = require('fs'); const fd = fs.openSync(${JSON.stringify(join(dir, 'f'))}, 'r+');
        fs.writeSync(fd, 'A', 0); fs.writeSync(fd, 'B', 1); fs.writeSync(1, 'written\\n'); fs.closeSync(fd);`], { stdio: ['ignore', 'pipe', 'pipe'] }));
    let open!: () => void;
    try {
      // Noted: write A waits for JS, which holds it.
      log.length = 0;
      gate = new Promise((resolve) => (open = resolve));
      const held = writer();
      while (log.length === 0) await new Promise((r) => setTimeout(r, 10));
      expect(log).toEqual(['write 0 A']);
      expect(held.out).toEqual([]);
      open();
      expect(await held.exit).toBe(0);
      expect(log).toEqual(['write 0 A', 'write 1 B']);
      // A change to a file that may have other names: b is invalidated in the
      // kernel and no longer noted. truncate's reply waits for the delivery.
      expect(f.invalidateLinked('/f')).toBe(1);
      expect((await child('truncate', ['-s', '0', join(dir, 'f')])).code).toBe(0);
      // Now both writes are answered while JS still holds the first.
      log.length = 0;
      gate = new Promise((resolve) => (open = resolve));
      const early = writer();
      await early.waitFor('written');
      while (log.length === 0) await new Promise((r) => setTimeout(r, 10));
      expect(log).toEqual(['write 0 A']);
      open();
      expect(await early.exit).toBe(0);
      expect(log).toEqual(['write 0 A', 'write 1 B']);
    } finally {
      open?.();
      gate = Promise.resolve();
    }
  });
});
