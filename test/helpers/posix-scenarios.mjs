// A child process that runs a named scenario of POSIX calls (node:fs sync API)
// in a directory and prints one JSON array of step results, so the same
// scenario can run on a local directory and on a tsfs mount and the two
// answers be compared. It runs as a separate process because the process that
// serves a FUSE mount must never do I/O on it.
//
//   node posix-scenarios.mjs <scenario> <dir>            -> JSON array on stdout
//   node posix-scenarios.mjs h5-writer <dir> <index>     -> the seed workload's writer
//
// Each step is {step, ok: true, value?} or {step, ok: false, code: 'ENOENT'}.
// What a step reports is only what must be equal on any faithful filesystem:
//   - stat: type, mode & 0o7777, size (regular files and symlinks only),
//     and on request nlink and atime/mtime in whole seconds.
// Left out on purpose, because they legitimately differ or SFTP cannot carry them:
//   - ino, dev, rdev, blksize, blocks: belong to the filesystem, not the file.
//   - directory sizes: ext4 reports 4096 * blocks, other servers anything.
//   - directory nlink: SFTP v3 ATTRS has no link count; sshfs reports 1.
//   - sub-second timestamps: SFTP v3 carries 32-bit whole seconds, so every
//     time this probe sets is a whole second and is read back as one.
//   - atime after reads and ctime: depend on relatime and on when the server
//     touched the inode, not on what the caller asked for.
//   - uid/gid: the mount may map them (uid=/gid= options); checked separately.
//   - nothing about symlinks' own times and owners except in symlink-self
//     (needs lsetstat@openssh.com).
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY } = fs.constants;

/** Deterministic bytes for a seed (xorshift32): the same on every run and in every process. */
export function pattern(seed, length) {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  return Buffer.from(words.buffer, 0, length);
}

export function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

/** Content summary: size plus a digest prefix; small texts verbatim so a diff is readable. */
function digest(buf) {
  if (buf.length <= 64 && /^[\x20-\x7e\n]*$/.test(buf.toString('latin1'))) return { size: buf.length, text: buf.toString('latin1') };
  return { size: buf.length, sha256: sha256(buf).slice(0, 16) };
}

function typeOf(st) {
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
}

/** The comparable part of a stat; `extra` asks for nlink and/or times. */
function summary(st, extra = {}) {
  const s = { type: typeOf(st), mode: (st.mode & 0o7777).toString(8) };
  if (!st.isDirectory()) s.size = st.size;
  if (extra.nlink) s.nlink = st.nlink;
  if (extra.times) {
    s.atime = Math.floor(st.atimeMs / 1000);
    s.mtime = Math.floor(st.mtimeMs / 1000);
  }
  return s;
}

function listing(dir) {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .map((e) => `${e.name}${e.isDirectory() ? '/' : e.isSymbolicLink() ? '@' : ''}`)
    .sort();
}

function readAll(p) {
  return digest(fs.readFileSync(p));
}

function preadAt(fd, len, pos) {
  const b = Buffer.alloc(len);
  const n = fs.readSync(fd, b, 0, len, pos);
  return digest(b.subarray(0, n));
}

function writeAll(fd, buf, pos) {
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off, pos === undefined ? null : pos + off);
}

function run(D, steps) {
  const out = [];
  const step = (name, fn) => {
    try {
      const v = fn();
      out.push(v === undefined ? { step: name, ok: true } : { step: name, ok: true, value: v });
    } catch (e) {
      out.push({ step: name, ok: false, code: e.code ?? String(e.message) });
    }
  };
  steps(step, (...p) => join(D, ...p));
  return out;
}

const MiB = 1024 * 1024;

const scenarios = {
  'getattr-readdir': (step, P) => {
    step('mkdir', () => fs.mkdirSync(P('d')));
    step('readdir empty', () => listing(P('d')));
    step('create files', () => { for (let i = 0; i < 5; i++) fs.writeFileSync(P('d', `f${i}`), `content ${i}\n`); });
    step('mkdir sub', () => fs.mkdirSync(P('d', 'sub')));
    step('symlink', () => fs.symlinkSync('f0', P('d', 'ln')));
    step('readdir after creates', () => listing(P('d')));
    step('stat file', () => summary(fs.statSync(P('d', 'f3'))));
    step('stat dir', () => summary(fs.statSync(P('d', 'sub'))));
    step('stat missing', () => summary(fs.statSync(P('d', 'nope'))));
    step('stat through a file', () => summary(fs.statSync(P('d', 'f0', 'x'))));
    step('readdir missing', () => listing(P('d', 'nope')));
    step('readdir file', () => listing(P('d', 'f0')));
    // Listings are cached on the mount; changes made through it must show at once.
    step('unlink one', () => fs.unlinkSync(P('d', 'f1')));
    step('readdir after unlink', () => listing(P('d')));
    step('create 300 entries', () => { for (let i = 0; i < 300; i++) fs.writeFileSync(P('d', 'sub', `e${String(i).padStart(3, '0')}`), ''); });
    step('readdir 300 entries', () => { const l = listing(P('d', 'sub')); return { n: l.length, first: l[0], last: l[l.length - 1] }; });
    step('stat after rewrite grows', () => { fs.writeFileSync(P('d', 'f2'), 'longer content now\n'); return summary(fs.statSync(P('d', 'f2'))); });
    step('stat after rewrite shrinks', () => { fs.writeFileSync(P('d', 'f2'), 'x'); return summary(fs.statSync(P('d', 'f2'))); });
    step('statfs', () => { const s = fs.statfsSync(P('d')); return { bsizePositive: s.bsize > 0, blocksPositive: s.blocks > 0 }; });
  },

  'mkdir-rmdir': (step, P) => {
    step('mkdir', () => fs.mkdirSync(P('a')));
    step('mkdir mode 0700', () => { fs.mkdirSync(P('private'), 0o700); return summary(fs.statSync(P('private'))); });
    step('mkdir existing', () => fs.mkdirSync(P('a')));
    step('mkdir in missing', () => fs.mkdirSync(P('missing', 'x')));
    step('file', () => fs.writeFileSync(P('file'), 'f'));
    step('mkdir under file', () => fs.mkdirSync(P('file', 'x')));
    step('mkdir over file', () => fs.mkdirSync(P('file')));
    step('mkdir -p', () => { fs.mkdirSync(P('a', 'b', 'c', 'd'), { recursive: true }); });
    step('stat deep', () => summary(fs.statSync(P('a', 'b', 'c', 'd'))));
    step('rmdir missing', () => fs.rmdirSync(P('missing')));
    step('rmdir non-empty', () => fs.rmdirSync(P('a')));
    step('rmdir non-empty (file inside)', () => { fs.mkdirSync(P('hasfile')); fs.writeFileSync(P('hasfile', 'x'), ''); fs.rmdirSync(P('hasfile')); });
    step('rmdir file', () => fs.rmdirSync(P('file')));
    step('rmdir deep', () => fs.rmdirSync(P('a', 'b', 'c', 'd')));
    step('stat removed', () => summary(fs.statSync(P('a', 'b', 'c', 'd'))));
    step('mkdir again after rmdir', () => { fs.mkdirSync(P('a', 'b', 'c', 'd')); return summary(fs.statSync(P('a', 'b', 'c', 'd'))); });
    step('rm -r', () => fs.rmSync(P('a'), { recursive: true }));
    step('readdir', () => listing(P()));
  },

  'open-flags': (step, P) => {
    step('open missing O_RDONLY', () => fs.closeSync(fs.openSync(P('missing'), O_RDONLY)));
    step('open missing O_WRONLY', () => fs.closeSync(fs.openSync(P('missing'), O_WRONLY)));
    step('O_CREAT|O_WRONLY', () => { const fd = fs.openSync(P('f'), O_CREAT | O_WRONLY, 0o644); fs.writeSync(fd, 'hello world\n'); fs.closeSync(fd); return readAll(P('f')); });
    step('O_CREAT mode 0600', () => { fs.closeSync(fs.openSync(P('private'), O_CREAT | O_WRONLY, 0o600)); return summary(fs.statSync(P('private'))); });
    step('O_CREAT mode 0755', () => { fs.closeSync(fs.openSync(P('exec'), O_CREAT | O_WRONLY, 0o755)); return summary(fs.statSync(P('exec'))); });
    step('O_CREAT on existing keeps content', () => { fs.closeSync(fs.openSync(P('f'), O_CREAT | O_WRONLY, 0o644)); return readAll(P('f')); });
    step('O_CREAT|O_EXCL on existing', () => fs.closeSync(fs.openSync(P('f'), O_CREAT | O_EXCL | O_WRONLY, 0o644)));
    step('O_CREAT|O_EXCL new', () => { const fd = fs.openSync(P('g'), O_CREAT | O_EXCL | O_RDWR, 0o644); fs.writeSync(fd, 'excl'); fs.closeSync(fd); return readAll(P('g')); });
    step('O_WRONLY overwrites in place', () => { const fd = fs.openSync(P('f'), O_WRONLY); fs.writeSync(fd, 'HELLO'); fs.closeSync(fd); return readAll(P('f')); });
    step('O_TRUNC', () => { const fd = fs.openSync(P('f'), O_WRONLY | O_TRUNC); fs.closeSync(fd); return summary(fs.statSync(P('f'))); });
    step('O_TRUNC then write', () => { const fd = fs.openSync(P('g'), O_WRONLY | O_TRUNC); fs.writeSync(fd, 'new'); fs.closeSync(fd); return readAll(P('g')); });
    step('O_APPEND', () => { const fd = fs.openSync(P('g'), O_WRONLY | O_APPEND); fs.writeSync(fd, '+more'); fs.writeSync(fd, '+again', 0); fs.closeSync(fd); return readAll(P('g')); });
    step('O_APPEND|O_CREAT new', () => { const fd = fs.openSync(P('h'), O_WRONLY | O_APPEND | O_CREAT, 0o644); fs.writeSync(fd, 'a'); fs.writeSync(fd, 'b'); fs.closeSync(fd); return readAll(P('h')); });
    step('O_RDWR read then write', () => {
      const fd = fs.openSync(P('g'), O_RDWR);
      const first = preadAt(fd, 3, 0);
      fs.writeSync(fd, 'XY', 1);
      const after = preadAt(fd, 100, 0);
      fs.closeSync(fd);
      return { first, after, file: readAll(P('g')) };
    });
    step('O_RDWR|O_CREAT|O_TRUNC', () => { const fd = fs.openSync(P('g'), O_RDWR | O_CREAT | O_TRUNC, 0o644); fs.writeSync(fd, 'abc'); const r = preadAt(fd, 10, 0); fs.closeSync(fd); return r; });
    step('read on O_WRONLY fd', () => { const fd = fs.openSync(P('g'), O_WRONLY); try { return preadAt(fd, 3, 0); } finally { fs.closeSync(fd); } });
    step('write on O_RDONLY fd', () => { const fd = fs.openSync(P('g'), O_RDONLY); try { return fs.writeSync(fd, 'x'); } finally { fs.closeSync(fd); } });
    step('open dir O_RDONLY', () => fs.closeSync(fs.openSync(P(), O_RDONLY)));
    step('open dir O_WRONLY', () => fs.closeSync(fs.openSync(P(), O_WRONLY)));
    step('open dir O_RDWR', () => fs.closeSync(fs.openSync(P(), O_RDWR)));
    step('O_DIRECTORY on file', () => fs.closeSync(fs.openSync(P('g'), O_RDONLY | O_DIRECTORY)));
    step('O_CREAT under missing dir', () => fs.closeSync(fs.openSync(P('nodir', 'x'), O_CREAT | O_WRONLY, 0o644)));
    step('O_CREAT under a file', () => fs.closeSync(fs.openSync(P('g', 'x'), O_CREAT | O_WRONLY, 0o644)));
    step('fsync and fdatasync', () => { const fd = fs.openSync(P('g'), O_RDWR); fs.writeSync(fd, 'z', 0); fs.fsyncSync(fd); fs.fdatasyncSync(fd); fs.closeSync(fd); return readAll(P('g')); });
    step('readdir', () => listing(P()));
  },

  'read-write': (step, P) => {
    const data = pattern(1, 3 * MiB + 12345);
    step('write 3 MiB in 128 KiB chunks', () => {
      const fd = fs.openSync(P('big'), 'w');
      for (let off = 0; off < data.length; off += 128 * 1024) writeAll(fd, data.subarray(off, Math.min(off + 128 * 1024, data.length)));
      const st = fs.fstatSync(fd);
      fs.closeSync(fd);
      return summary(st);
    });
    step('read whole', () => readAll(P('big')));
    step('pread at odd offsets', () => {
      const fd = fs.openSync(P('big'), 'r');
      const r = [0, 1, 4095, 4096, 65537, 131071, MiB + 7, data.length - 10, data.length, data.length + 100].map((o) => preadAt(fd, 70000, o));
      fs.closeSync(fd);
      return r;
    });
    step('overwrite middle at unaligned offset', () => {
      const fd = fs.openSync(P('big'), 'r+');
      writeAll(fd, pattern(2, 200000), 1234567);
      const inside = preadAt(fd, 300000, 1200000);
      fs.closeSync(fd);
      return inside;
    });
    step('read whole after overwrite', () => readAll(P('big')));
    step('small writes then reads on one fd', () => {
      const fd = fs.openSync(P('small'), 'w+');
      for (let i = 0; i < 100; i++) fs.writeSync(fd, `line ${i}\n`);
      const r = preadAt(fd, 1000, 0);
      fs.closeSync(fd);
      return r;
    });
    step('sequential reads with position null', () => {
      const fd = fs.openSync(P('small'), 'r');
      const parts = [];
      const b = Buffer.alloc(77);
      let n;
      while ((n = fs.readSync(fd, b, 0, 77, null)) > 0) parts.push(n);
      fs.closeSync(fd);
      return parts;
    });
    step('write at offset far past EOF via pwrite', () => {
      const fd = fs.openSync(P('small'), 'r+');
      fs.writeSync(fd, 'END', 5000);
      const st = fs.fstatSync(fd);
      fs.closeSync(fd);
      return { st: summary(st), content: readAll(P('small')) };
    });
  },

  sparse: (step, P) => {
    step('write 1 byte past EOF', () => { const fd = fs.openSync(P('s'), 'w'); fs.writeSync(fd, 'x', 3 * MiB + 5); fs.closeSync(fd); return summary(fs.statSync(P('s'))); });
    step('the hole reads as zeros', () => {
      const b = fs.readFileSync(P('s'));
      return { size: b.length, zeros: b.subarray(0, b.length - 1).every((c) => c === 0), last: b[b.length - 1] };
    });
    step('write into the hole', () => { const fd = fs.openSync(P('s'), 'r+'); fs.writeSync(fd, 'middle', MiB); fs.closeSync(fd); return readAll(P('s')); });
    step('extend again', () => { const fd = fs.openSync(P('s'), 'r+'); fs.writeSync(fd, 'tail', 5 * MiB); const st = fs.fstatSync(fd); fs.closeSync(fd); return { st: summary(st), c: readAll(P('s')) }; });
  },

  truncate: (step, P) => {
    step('write', () => fs.writeFileSync(P('t'), pattern(3, 100000)));
    step('truncate down', () => { fs.truncateSync(P('t'), 4097); return { st: summary(fs.statSync(P('t'))), c: readAll(P('t')) }; });
    step('truncate up', () => { fs.truncateSync(P('t'), 2 * MiB + 3); return { st: summary(fs.statSync(P('t'))), c: readAll(P('t')) }; });
    step('truncate to 0', () => { fs.truncateSync(P('t'), 0); return summary(fs.statSync(P('t'))); });
    step('ftruncate on open fd then write', () => {
      fs.writeFileSync(P('u'), pattern(4, 50000));
      const fd = fs.openSync(P('u'), 'r+');
      fs.ftruncateSync(fd, 1000);
      const mid = summary(fs.fstatSync(fd));
      fs.writeSync(fd, 'after', 2000);
      fs.ftruncateSync(fd, 2002);
      const end = summary(fs.fstatSync(fd));
      fs.closeSync(fd);
      return { mid, end, c: readAll(P('u')) };
    });
    step('ftruncate up then read', () => { const fd = fs.openSync(P('u'), 'r+'); fs.ftruncateSync(fd, 70000); const r = preadAt(fd, 80000, 0); fs.closeSync(fd); return r; });
    step('truncate missing', () => fs.truncateSync(P('missing'), 0));
    step('truncate dir', () => { fs.mkdirSync(P('dir')); fs.truncateSync(P('dir'), 0); });
    step('ftruncate on read-only fd', () => { const fd = fs.openSync(P('u'), 'r'); try { fs.ftruncateSync(fd, 1); } finally { fs.closeSync(fd); } });
  },

  unlink: (step, P) => {
    step('create', () => fs.writeFileSync(P('f'), 'doomed'));
    step('unlink', () => fs.unlinkSync(P('f')));
    step('stat after unlink', () => summary(fs.statSync(P('f'))));
    step('unlink again', () => fs.unlinkSync(P('f')));
    step('unlink dir', () => { fs.mkdirSync(P('d')); fs.unlinkSync(P('d')); });
    step('unlink in missing dir', () => fs.unlinkSync(P('nodir', 'f')));
    step('recreate same name', () => { fs.writeFileSync(P('f'), 'reborn'); return readAll(P('f')); });
    step('unlink while open, fd still reads', () => {
      fs.writeFileSync(P('open'), 'still here');
      const fd = fs.openSync(P('open'), 'r');
      fs.unlinkSync(P('open'));
      const r = preadAt(fd, 100, 0);
      fs.closeSync(fd);
      return r;
    });
    step('name gone while the fd is still open', () => {
      fs.writeFileSync(P('held'), 'held open');
      const fd = fs.openSync(P('held'), 'r');
      fs.unlinkSync(P('held'));
      const names = listing(P());
      fs.closeSync(fd);
      return names;
    });
    step('readdir', () => listing(P()));
  },

  rename: (step, P) => {
    step('setup', () => {
      fs.writeFileSync(P('a'), 'AAA');
      fs.writeFileSync(P('b'), 'BBBBBB');
      fs.mkdirSync(P('d1'));
      fs.writeFileSync(P('d1', 'inside'), 'in d1');
      fs.mkdirSync(P('d2'));
      fs.mkdirSync(P('full'));
      fs.writeFileSync(P('full', 'x'), 'x');
    });
    step('file to new name', () => { fs.renameSync(P('a'), P('a2')); return { old: fs.existsSync(P('a')), c: readAll(P('a2')) }; });
    step('file over file', () => { fs.renameSync(P('a2'), P('b')); return { old: fs.existsSync(P('a2')), st: summary(fs.statSync(P('b'))), c: readAll(P('b')) }; });
    step('dir over empty dir', () => { fs.renameSync(P('d1'), P('d2')); return { old: fs.existsSync(P('d1')), l: listing(P('d2')) }; });
    step('dir over non-empty dir', () => { fs.mkdirSync(P('d3')); fs.renameSync(P('d3'), P('full')); });
    step('file over dir', () => fs.renameSync(P('b'), P('full')));
    step('dir over file', () => fs.renameSync(P('d2'), P('b')));
    step('into missing dir', () => fs.renameSync(P('b'), P('nodir', 'b')));
    step('missing source', () => fs.renameSync(P('nope'), P('nope2')));
    step('to itself', () => { fs.renameSync(P('b'), P('b')); return readAll(P('b')); });
    step('dir into its own subdir', () => fs.renameSync(P('d2'), P('d2', 'sub')));
    step('file into other dir', () => { fs.renameSync(P('b'), P('full', 'b')); return listing(P('full')); });
    step('dir with contents to new name', () => { fs.renameSync(P('full'), P('moved')); return { l: listing(P('moved')), c: readAll(P('moved', 'b')) }; });
    step('atomic save: write temp then rename over', () => {
      fs.writeFileSync(P('cfg'), 'v1');
      fs.writeFileSync(P('cfg.tmp'), 'v2 longer');
      fs.renameSync(P('cfg.tmp'), P('cfg'));
      return { st: summary(fs.statSync(P('cfg'))), c: readAll(P('cfg')) };
    });
    step('rename while open, keep writing', () => {
      const fd = fs.openSync(P('log'), 'w');
      fs.writeSync(fd, 'before ');
      fs.renameSync(P('log'), P('log.1'));
      fs.writeSync(fd, 'after');
      fs.closeSync(fd);
      return { old: fs.existsSync(P('log')), c: readAll(P('log.1')) };
    });
    step('readdir', () => listing(P()));
  },

  symlink: (step, P) => {
    step('target', () => fs.writeFileSync(P('target'), 'pointed at'));
    step('symlink relative', () => fs.symlinkSync('target', P('rel')));
    step('symlink absolute', () => fs.symlinkSync('/etc/hostname-not-followed', P('abs')));
    step('symlink dangling', () => fs.symlinkSync('no/such/thing', P('dangling')));
    step('symlink to dir', () => { fs.mkdirSync(P('dir')); fs.writeFileSync(P('dir', 'f'), 'in dir'); fs.symlinkSync('dir', P('dirlink')); });
    step('readlink relative', () => fs.readlinkSync(P('rel')));
    step('readlink absolute', () => fs.readlinkSync(P('abs')));
    step('readlink dangling', () => fs.readlinkSync(P('dangling')));
    step('lstat', () => summary(fs.lstatSync(P('rel'))));
    step('stat follows', () => summary(fs.statSync(P('rel'))));
    step('read through link', () => readAll(P('rel')));
    step('stat dangling', () => summary(fs.statSync(P('dangling'))));
    step('lstat dangling', () => summary(fs.lstatSync(P('dangling'))));
    step('path through dir link', () => readAll(P('dirlink', 'f')));
    step('readlink of a file', () => fs.readlinkSync(P('target')));
    step('readlink missing', () => fs.readlinkSync(P('missing')));
    step('symlink over existing', () => fs.symlinkSync('target', P('rel')));
    step('write through link', () => { fs.writeFileSync(P('rel'), 'rewritten via link'); return readAll(P('target')); });
    step('unlink link keeps target', () => { fs.unlinkSync(P('rel')); return { link: fs.existsSync(P('rel')), target: readAll(P('target')) }; });
    step('rename a link', () => { fs.renameSync(P('dirlink'), P('dirlink2')); return fs.readlinkSync(P('dirlink2')); });
    step('readdir', () => listing(P()));
  },

  link: (step, P) => {
    step('create', () => fs.writeFileSync(P('a'), 'shared'));
    step('link', () => fs.linkSync(P('a'), P('b')));
    step('nlink is 2 on both', () => ({ a: summary(fs.statSync(P('a')), { nlink: true }), b: summary(fs.statSync(P('b')), { nlink: true }) }));
    step('write via one, read via other', () => { fs.writeFileSync(P('a'), 'changed through a'); return readAll(P('b')); });
    step('unlink one', () => fs.unlinkSync(P('a')));
    step('nlink back to 1', () => summary(fs.statSync(P('b')), { nlink: true }));
    step('link to existing name', () => { fs.writeFileSync(P('c'), 'c'); fs.linkSync(P('b'), P('c')); });
    step('link of missing', () => fs.linkSync(P('missing'), P('m2')));
    step('link of dir', () => { fs.mkdirSync(P('dir')); fs.linkSync(P('dir'), P('dir2')); });
    step('readdir', () => listing(P()));
  },

  chmod: (step, P) => {
    step('create', () => { fs.writeFileSync(P('f'), 'x'); fs.mkdirSync(P('d')); });
    for (const m of [0o600, 0o640, 0o755, 0o000, 0o4711, 0o2750, 0o644]) step(`chmod file ${m.toString(8)}`, () => { fs.chmodSync(P('f'), m); return summary(fs.statSync(P('f'))); });
    for (const m of [0o700, 0o1777, 0o755]) step(`chmod dir ${m.toString(8)}`, () => { fs.chmodSync(P('d'), m); return summary(fs.statSync(P('d'))); });
    step('fchmod', () => { const fd = fs.openSync(P('f'), 'r+'); fs.fchmodSync(fd, 0o620); fs.closeSync(fd); return summary(fs.statSync(P('f'))); });
    step('chmod missing', () => fs.chmodSync(P('missing'), 0o644));
    step('chmod keeps content', () => readAll(P('f')));
  },

  utimes: (step, P) => {
    const T = (s) => summary(fs.statSync(P(s)), { times: true });
    step('create', () => { fs.writeFileSync(P('f'), 'times'); fs.mkdirSync(P('d')); });
    step('utimes atime != mtime', () => { fs.utimesSync(P('f'), 1000000000, 1200000000); return T('f'); });
    step('utimes on dir', () => { fs.utimesSync(P('d'), 1100000000, 1150000000); return T('d'); });
    step('futimes', () => { const fd = fs.openSync(P('f'), 'r+'); fs.futimesSync(fd, 1000000001, 1200000001); fs.closeSync(fd); return T('f'); });
    // touch -m sends UTIME_OMIT for atime: the atime must stay what it was.
    step('touch -m -d @1300000000 keeps atime', () => { touch(['-m', '-d', '@1300000000', P('f')]); return T('f'); });
    step('touch -a -d @1050000000 keeps mtime', () => { touch(['-a', '-d', '@1050000000', P('f')]); return T('f'); });
    step('touch -d @1400000000 sets both', () => { touch(['-d', '@1400000000', P('f')]); return T('f'); });
    step('touch creates', () => { touch([P('new')]); return summary(fs.statSync(P('new'))); });
    step('utimes missing', () => fs.utimesSync(P('missing'), 1, 1));
    step('a write moves mtime forward', () => {
      fs.utimesSync(P('f'), 1000000000, 1000000000);
      fs.appendFileSync(P('f'), 'more');
      return Math.floor(fs.statSync(P('f')).mtimeMs / 1000) > 1000000000;
    });
  },

  // The mode asked for, not the server's umask: created under umask 0.
  'create-modes': (step, P) => {
    const open = (fn) => { const old = process.umask(0); try { return fn(); } finally { process.umask(old); } };
    step('mkdir 0777', () => { open(() => fs.mkdirSync(P('d777'), 0o777)); return summary(fs.statSync(P('d777'))); });
    step('mkdir 01777', () => { open(() => fs.mkdirSync(P('sticky'), 0o1777)); return summary(fs.statSync(P('sticky'))); });
    step('mkdir 02775', () => { open(() => fs.mkdirSync(P('sgid'), 0o2775)); return summary(fs.statSync(P('sgid'))); });
    step('create 0666', () => { open(() => fs.closeSync(fs.openSync(P('f666'), O_CREAT | O_WRONLY, 0o666))); return summary(fs.statSync(P('f666'))); });
    step('create 04777', () => { open(() => fs.closeSync(fs.openSync(P('suid'), O_CREAT | O_WRONLY, 0o4777))); return summary(fs.statSync(P('suid'))); });
    step('create 0600 keeps 0600', () => { open(() => fs.closeSync(fs.openSync(P('f600'), O_CREAT | O_WRONLY, 0o600))); return summary(fs.statSync(P('f600'))); });
    step('O_CREAT on an existing file keeps its mode', () => { open(() => fs.closeSync(fs.openSync(P('f600'), O_CREAT | O_WRONLY, 0o666))); return summary(fs.statSync(P('f600'))); });
    step('readdir', () => listing(P()));
  },

  // Link counts survive attribute changes and renames (SFTP v3 stat carries none).
  'nlink-kept': (step, P) => {
    const N = (n) => summary(fs.statSync(P(n)), { nlink: true });
    step('two names', () => { fs.writeFileSync(P('a'), 'x'); fs.linkSync(P('a'), P('b')); return [N('a'), N('b')]; });
    step('after chmod', () => { fs.chmodSync(P('a'), 0o600); return [N('a'), N('b')]; });
    step('after utimes', () => { fs.utimesSync(P('b'), 1000000000, 1000000000); return [N('a'), N('b')]; });
    step('after rename', () => { fs.renameSync(P('b'), P('c')); return [N('a'), N('c')]; });
    step('after a write', () => { fs.appendFileSync(P('c'), 'more'); return [N('a'), N('c')]; });
    // A just-closed file linked at once: its RELEASE, which the kernel sends
    // after close(2) returned, must not make the first name fall back to 1.
    step('write, close, link, stat, 100 times', () => {
      fs.mkdirSync(P('many'));
      let wrong = 0;
      for (let i = 0; i < 100; i++) {
        fs.writeFileSync(P('many', `a${i}`), 'x');
        fs.linkSync(P('many', `a${i}`), P('many', `b${i}`));
        if (fs.statSync(P('many', `a${i}`)).nlink !== 2 || fs.statSync(P('many', `b${i}`)).nlink !== 2) wrong++;
      }
      return { wrong };
    });
  },

  // chown and utimes of a symlink itself (lchown, lutimes) never touch its target.
  'symlink-self': (step, P) => {
    const own = (st) => ({ uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) });
    step('setup', () => { fs.writeFileSync(P('target'), 't'); fs.utimesSync(P('target'), 1200000000, 1200000000); fs.symlinkSync('target', P('live')); fs.symlinkSync('nowhere', P('dangling')); });
    step('lchown a live link', () => { fs.lchownSync(P('live'), 1, 1); return { link: own(fs.lstatSync(P('live'))).uid, target: own(fs.statSync(P('target'))).uid }; });
    step('lchown a dangling link', () => { fs.lchownSync(P('dangling'), 2, 2); return own(fs.lstatSync(P('dangling'))).gid; });
    step('lutimes a live link', () => { fs.lutimesSync(P('live'), 1000000000, 1000000000); return { link: own(fs.lstatSync(P('live'))).mtime, target: own(fs.statSync(P('target'))).mtime }; });
    step('lutimes a dangling link', () => { fs.lutimesSync(P('dangling'), 1000000001, 1000000001); return own(fs.lstatSync(P('dangling'))).mtime; });
    step('chown follows a link to its target', () => { fs.chownSync(P('live'), 3, 3); return { link: own(fs.lstatSync(P('live'))).uid, target: own(fs.statSync(P('target'))).uid }; });
  },

  // Limits a local filesystem reports with their own errno.
  limits: (step, P) => {
    step('setup', () => fs.writeFileSync(P('f'), 'small'));
    step('truncate beyond the largest file size', () => fs.truncateSync(P('f'), 2 ** 52));
    step('ftruncate beyond the largest file size', () => { const fd = fs.openSync(P('f'), 'r+'); try { fs.ftruncateSync(fd, 2 ** 52); } finally { fs.closeSync(fd); } });
    step('file unchanged', () => readAll(P('f')));
  },

  append: (step, P) => {
    step('two O_APPEND fds interleaved', () => {
      fs.writeFileSync(P('log'), 'start\n');
      const a = fs.openSync(P('log'), 'a');
      const b = fs.openSync(P('log'), 'a');
      for (let i = 0; i < 20; i++) fs.writeSync(i % 2 ? b : a, `${i % 2 ? 'b' : 'a'}${i}\n`);
      fs.closeSync(a);
      fs.closeSync(b);
      return readAll(P('log'));
    });
    step('append after a plain write from another fd', () => {
      const w = fs.openSync(P('log'), 'r+');
      const a = fs.openSync(P('log'), 'a');
      fs.writeSync(w, 'x'.repeat(200), 300);
      fs.writeSync(a, 'tail');
      fs.closeSync(w);
      fs.closeSync(a);
      return readAll(P('log'));
    });
    step('appendFile many times', () => { for (let i = 0; i < 50; i++) fs.appendFileSync(P('log2'), `${i},`); return readAll(P('log2')); });
  },

  'many-handles': (step, P) => {
    const N = 64;
    const CH = 4096;
    step('open 64, write interleaved, close', () => {
      const fds = [];
      for (let i = 0; i < N; i++) fds.push(fs.openSync(P(`h${i}`), 'w+'));
      for (let c = 0; c < 16; c++) for (let i = 0; i < N; i++) writeAll(fds[i], pattern(1000 + i, 16 * CH).subarray(c * CH, (c + 1) * CH), c * CH);
      const sizes = fds.map((fd) => fs.fstatSync(fd).size);
      const readBack = fds.map((fd) => preadAt(fd, 16 * CH, 0).sha256).filter((d, i) => d !== digest(pattern(1000 + i, 16 * CH)).sha256).length;
      for (const fd of fds) fs.closeSync(fd);
      return { sizes: [...new Set(sizes)], mismatchedBeforeClose: readBack };
    });
    step('contents after close', () => {
      let bad = 0;
      for (let i = 0; i < N; i++) if (!fs.readFileSync(P(`h${i}`)).equals(pattern(1000 + i, 16 * CH))) bad++;
      return { bad };
    });
    step('64 readers at once', () => {
      const fds = [];
      for (let i = 0; i < N; i++) fds.push(fs.openSync(P(`h${i}`), 'r'));
      let bad = 0;
      for (let i = N - 1; i >= 0; i--) if (preadAt(fds[i], CH, 5 * CH).sha256 !== digest(pattern(1000 + i, 16 * CH).subarray(5 * CH, 6 * CH)).sha256) bad++;
      for (const fd of fds) fs.closeSync(fd);
      return { bad };
    });
  },

  'two-writers': (step, P) => {
    const B = 64 * 1024;
    const n = 16;
    step('two fds write disjoint ranges, interleaved', () => {
      const w1 = fs.openSync(P('shared'), 'w');
      const w2 = fs.openSync(P('shared'), 'r+');
      for (let i = 0; i < n; i++) writeAll(i % 2 ? w2 : w1, pattern(500 + i, B), i * B);
      // A third handle sees both writers' data before either closes.
      const r = fs.openSync(P('shared'), 'r');
      const seen = preadAt(r, n * B, 0);
      fs.closeSync(r);
      fs.closeSync(w1);
      fs.closeSync(w2);
      return { seen, after: readAll(P('shared')) };
    });
    step('overlapping writes: last one wins', () => {
      const w1 = fs.openSync(P('shared'), 'r+');
      const w2 = fs.openSync(P('shared'), 'r+');
      fs.writeSync(w1, 'A'.repeat(100), 10);
      fs.writeSync(w2, 'B'.repeat(50), 60);
      fs.closeSync(w2);
      fs.closeSync(w1);
      const r = fs.openSync(P('shared'), 'r');
      try { return preadAt(r, 200, 0); } finally { fs.closeSync(r); }
    });
  },

  'misc-errors': (step, P) => {
    step('setup', () => { fs.writeFileSync(P('file'), 'f'); fs.mkdirSync(P('dir')); });
    step('rmdir on file', () => fs.rmdirSync(P('file')));
    step('open dir for write', () => fs.closeSync(fs.openSync(P('dir'), 'w')));
    step('open dir r+', () => fs.closeSync(fs.openSync(P('dir'), 'r+')));
    step('readdir of a file', () => fs.readdirSync(P('file')));
    step('readFile of a dir', () => fs.readFileSync(P('dir')));
    step('statfs', () => { const s = fs.statfsSync(P()); return { bsizePositive: s.bsize > 0 }; });
    step('access R_OK|W_OK', () => fs.accessSync(P('file'), fs.constants.R_OK | fs.constants.W_OK));
    step('access missing', () => fs.accessSync(P('missing')));
    step('realpath', () => fs.realpathSync(P('dir')).endsWith('/dir'));
  },

  names: (step, P) => {
    const names = ['with space', 'ünïcödé-名前', 'semi;colon', "quote'd", 'dash-', '.hidden', 'a'.repeat(255)];
    for (const n of names) step(`create ${n.length > 40 ? `${n.length} chars` : n}`, () => { fs.writeFileSync(P(n), n.slice(0, 20)); return readAll(P(n)); });
    step('name of 256 bytes', () => fs.writeFileSync(P('b'.repeat(256)), 'x'));
    step('readdir', () => listing(P()).map((n) => (n.length > 40 ? `${n[0]}*${n.length}` : n)));
  },

  // Not compared: a local directory makes these; SFTP cannot (see posix.test.ts).
  'special-files': (step, P) => {
    step('mkfifo', () => { const r = spawnSync('mkfifo', [P('fifo')], { encoding: 'utf8' }); return { status: r.status, stderr: r.stderr.replace(P(), '<dir>').trim() }; });
    step('mknod char device', () => { const r = spawnSync('mknod', [P('null'), 'c', '1', '3'], { encoding: 'utf8' }); return { status: r.status, stderr: r.stderr.replace(P(), '<dir>').trim() }; });
    step('bind a unix socket', () => {
      const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(P('sock'))}).on('listening', () => process.exit(0)).on('error', (e) => { console.log(e.code); process.exit(1); })`], { encoding: 'utf8' });
      return { status: r.status, code: r.stdout.trim() };
    });
  },

  // Run as root, to prepare what the `perm` scenario (run as uid 65534) meets.
  'perm-setup': (step, P) => {
    step('root-owned 0700 dir with a file', () => { fs.mkdirSync(P('secret'), 0o700); fs.writeFileSync(P('secret', 'f'), 'secret'); fs.chmodSync(P('secret'), 0o700); });
    step('root-owned 0644 file', () => { fs.writeFileSync(P('public'), 'public'); fs.chmodSync(P('public'), 0o644); });
    step('root-owned 0755 dir', () => fs.chmodSync(P(), 0o755));
  },
  perm: (step, P) => {
    step('who', () => process.getuid());
    step('readdir 0700 dir', () => listing(P('secret')));
    step('stat inside 0700 dir', () => summary(fs.statSync(P('secret', 'f'))));
    step('read inside 0700 dir', () => readAll(P('secret', 'f')));
    step('create inside 0700 dir', () => fs.writeFileSync(P('secret', 'mine'), 'x'));
    step('stat 0700 dir itself', () => summary(fs.statSync(P('secret'))));
    step('read 0644 file', () => readAll(P('public')));
    step('write 0644 file', () => fs.writeFileSync(P('public'), 'overwritten'));
    step('create in 0755 dir', () => fs.writeFileSync(P('new'), 'x'));
    step('mkdir in 0755 dir', () => fs.mkdirSync(P('newdir')));
    step('unlink in 0755 dir', () => fs.unlinkSync(P('public')));
    step('chmod root file', () => fs.chmodSync(P('public'), 0o666));
    step('public still intact', () => readAll(P('public')));
  },

  // Expects a directory holding `file` (text "ro") and `dir/`, on a read-only mount.
  readonly: (step, P) => {
    step('read', () => readAll(P('file')));
    step('readdir', () => listing(P()));
    step('stat', () => summary(fs.statSync(P('file'))));
    step('write existing', () => fs.writeFileSync(P('file'), 'x'));
    step('open O_RDWR', () => fs.closeSync(fs.openSync(P('file'), 'r+')));
    step('create', () => fs.writeFileSync(P('new'), 'x'));
    step('mkdir', () => fs.mkdirSync(P('newdir')));
    step('unlink', () => fs.unlinkSync(P('file')));
    step('rmdir', () => fs.rmdirSync(P('dir')));
    step('rename', () => fs.renameSync(P('file'), P('file2')));
    step('chmod', () => fs.chmodSync(P('file'), 0o600));
    step('truncate', () => fs.truncateSync(P('file'), 0));
    step('symlink', () => fs.symlinkSync('file', P('ln')));
    step('utimes', () => fs.utimesSync(P('file'), 1, 1));
    step('read again', () => readAll(P('file')));
  },
};

function touch(args) {
  const r = spawnSync('touch', args, { encoding: 'utf8' });
  if (r.status !== 0) {
    const e = new Error(r.stderr.trim());
    e.code = `touch exit ${r.status}`;
    throw e;
  }
}

/** Scenarios run by the POSIX comparison suites, in order; perm/readonly need a special setup. */
export const COMPARED = [
  'getattr-readdir', 'mkdir-rmdir', 'open-flags', 'read-write', 'sparse', 'truncate', 'unlink', 'rename',
  'symlink', 'link', 'chmod', 'utimes', 'append', 'many-handles', 'two-writers', 'misc-errors', 'names',
  'create-modes', 'nlink-kept', 'symlink-self', 'limits',
];

/**
 * The seed workload's writer (an HDF5-like save): a fresh file of `size`
 * bytes, closed, reopened read+write, a 64 KiB block rewritten at an
 * unaligned offset and read back, closed. Prints the sha256 it read back.
 */
export const H5 = { size: 6 * MiB, block: 64 * 1024, offset: (i) => 1 * MiB + i * 4096 + 123 };
function h5Writer(D, index) {
  const i = Number(index);
  const dir = join(D, String(i), 'model');
  fs.mkdirSync(dir, { recursive: true });
  const file = join(dir, 'model.h5');
  const body = pattern(i, H5.size);
  let fd = fs.openSync(file, 'w');
  for (let off = 0; off < body.length; off += MiB) writeAll(fd, body.subarray(off, off + MiB), off);
  fs.closeSync(fd);
  fd = fs.openSync(file, 'r+');
  const block = pattern(10_000 + i, H5.block);
  writeAll(fd, block, H5.offset(i));
  const back = Buffer.alloc(H5.block);
  fs.readSync(fd, back, 0, H5.block, H5.offset(i));
  fs.closeSync(fd);
  if (!back.equals(block)) throw new Error(`writer ${i}: the rewritten block read back differently`);
  process.stdout.write(JSON.stringify({ index: i, sha256: sha256(fs.readFileSync(file)) }) + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [name, dir, arg] = process.argv.slice(2);
  process.umask(0o022);
  if (name === 'h5-writer') {
    h5Writer(dir, arg);
  } else {
    const sc = scenarios[name];
    if (!sc || !dir) {
      process.stderr.write(`usage: posix-scenarios.mjs <${Object.keys(scenarios).join('|')}> <dir>\n`);
      process.exit(2);
    }
    process.stdout.write(JSON.stringify(run(dir, sc)) + '\n');
  }
}
