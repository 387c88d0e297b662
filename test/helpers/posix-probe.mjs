#!/usr/bin/env node
// Runs a POSIX scenario in a directory and prints one JSON object: each
// step's result or errno code. Run once on a local directory and once on a
// tsfs mount; the test compares the two. Runs in a child process, never in
// the process serving the mount (sync I/O on one's own FUSE mount deadlocks).
// Usage: node posix-probe.mjs <scenario> <dir> [skip,list]
import fs from 'node:fs';
import { join } from 'node:path';

const [, , scenario, dir, skipArg = ''] = process.argv;
const skip = new Set(skipArg.split(',').filter(Boolean));
process.umask(0o022);
const out = {};
const p = (...a) => join(dir, ...a);
function step(name, f) {
  if (skip.has(name)) return;
  try {
    const v = f();
    out[name] = v === undefined ? 'ok' : v;
  } catch (e) {
    out[name] = e.code ?? String(e);
  }
}
const st = (path, follow = false) => {
  const s = follow ? fs.statSync(path) : fs.lstatSync(path);
  return { type: s.isDirectory() ? 'dir' : s.isSymbolicLink() ? 'link' : s.isFile() ? 'file' : 'other', mode: (s.mode & 0o7777).toString(8), size: s.isDirectory() ? undefined : s.size };
};
const read = (path) => fs.readFileSync(path, 'latin1');

const scenarios = {
  basic() {
    step('mkdir', () => fs.mkdirSync(p('d')));
    step('mkdir exists', () => fs.mkdirSync(p('d')));
    step('stat dir', () => st(p('d')));
    step('create', () => fs.writeFileSync(p('f'), 'hello'));
    step('stat file', () => st(p('f')));
    step('read', () => read(p('f')));
    step('open excl existing', () => fs.closeSync(fs.openSync(p('f'), 'wx')));
    step('open excl new', () => { fs.closeSync(fs.openSync(p('x'), 'wx')); return st(p('x')); });
    step('append', () => { fs.appendFileSync(p('f'), ' world'); return read(p('f')); });
    step('append fd positional write still appends', () => {
      const fd = fs.openSync(p('f'), 'a');
      fs.writeSync(fd, '!', 0);
      fs.closeSync(fd);
      return read(p('f'));
    });
    step('rdwr rewrite middle', () => {
      const fd = fs.openSync(p('f'), 'r+');
      fs.writeSync(fd, 'J', 6);
      const b = Buffer.alloc(5);
      fs.readSync(fd, b, 0, 5, 6);
      fs.closeSync(fd);
      return [b.toString(), read(p('f'))];
    });
    step('trunc on open', () => { fs.closeSync(fs.openSync(p('x'), 'w')); return st(p('x')); });
    step('sparse write past EOF', () => {
      const fd = fs.openSync(p('sparse'), 'w+');
      fs.writeSync(fd, 'z', 1 << 20);
      const b = Buffer.alloc(4, 7);
      fs.readSync(fd, b, 0, 4, 1000);
      fs.closeSync(fd);
      return [fs.statSync(p('sparse')).size, [...b]];
    });
    step('truncate down', () => { fs.truncateSync(p('f'), 3); return read(p('f')); });
    step('truncate up', () => { fs.truncateSync(p('f'), 6); return [...fs.readFileSync(p('f'))]; });
    step('ftruncate', () => { const fd = fs.openSync(p('f'), 'r+'); fs.ftruncateSync(fd, 2); fs.closeSync(fd); return read(p('f')); });
    step('missing stat', () => fs.statSync(p('nope')));
    step('missing open', () => fs.openSync(p('nope'), 'r'));
    step('missing parent create', () => fs.writeFileSync(p('nope', 'x'), ''));
    step('file as dir', () => fs.writeFileSync(p('f', 'x'), ''));
    step('mkdir under file', () => fs.mkdirSync(p('f', 'x')));
    step('open dir for write', () => fs.openSync(p('d'), 'w'));
    step('unlink dir', () => fs.unlinkSync(p('d')));
    step('rmdir file', () => fs.rmdirSync(p('f')));
    step('rmdir nonempty', () => { fs.writeFileSync(p('d', 'in'), '1'); fs.rmdirSync(p('d')); });
    step('rmdir missing', () => fs.rmdirSync(p('nope')));
    step('unlink missing', () => fs.unlinkSync(p('nope')));
    step('symlink', () => { fs.symlinkSync('f', p('l')); return [fs.readlinkSync(p('l')), st(p('l')).type, st(p('l'), true)]; });
    step('symlink exists', () => fs.symlinkSync('f', p('l')));
    step('dangling symlink', () => { fs.symlinkSync('nowhere', p('dl')); return [fs.readlinkSync(p('dl')), (() => { try { fs.statSync(p('dl')); return 'ok'; } catch (e) { return e.code; } })()]; });
    step('hardlink', () => { fs.linkSync(p('f'), p('g')); return [fs.statSync(p('f')).nlink, fs.statSync(p('g')).nlink, read(p('g'))]; });
    step('hardlink exists', () => fs.linkSync(p('f'), p('g')));
    step('hardlink shares data', () => { fs.appendFileSync(p('g'), 'G'); return read(p('f')); });
    step('unlink one link', () => { fs.unlinkSync(p('g')); return [fs.statSync(p('f')).nlink, read(p('f'))]; });
    step('rename file', () => { fs.renameSync(p('x'), p('y')); return [fs.existsSync(p('x')), st(p('y'))]; });
    step('rename over file', () => { fs.writeFileSync(p('r1'), 'one'); fs.writeFileSync(p('r2'), 'two'); fs.renameSync(p('r1'), p('r2')); return [fs.existsSync(p('r1')), read(p('r2'))]; });
    step('rename dir over empty dir', () => { fs.mkdirSync(p('e1')); fs.writeFileSync(p('e1', 'k'), 'k'); fs.mkdirSync(p('e2')); fs.renameSync(p('e1'), p('e2')); return fs.readdirSync(p('e2')); });
    step('rename dir over nonempty dir', () => { fs.mkdirSync(p('e3')); fs.renameSync(p('e3'), p('e2')); });
    step('rename file over dir', () => fs.renameSync(p('y'), p('e2')));
    step('rename dir over file', () => fs.renameSync(p('e3'), p('y')));
    step('rename missing', () => fs.renameSync(p('nope'), p('y2')));
    step('chmod', () => { fs.chmodSync(p('f'), 0o640); return st(p('f')).mode; });
    step('chmod dir', () => { fs.chmodSync(p('d'), 0o750); return st(p('d')).mode; });
    step('utimes', () => { fs.utimesSync(p('f'), 1_000_000_000, 1_200_000_000); const s = fs.statSync(p('f')); return [Math.floor(s.atimeMs / 1000), Math.floor(s.mtimeMs / 1000)]; });
    step('access', () => { fs.accessSync(p('f'), fs.constants.R_OK | fs.constants.W_OK); return 'ok'; });
    step('access missing', () => fs.accessSync(p('nope')));
    step('readdir', () => fs.readdirSync(dir).sort());
    step('statfs', () => { const s = fs.statfsSync(dir); return s.bsize > 0 && s.blocks > 0; });
    step('many handles', () => {
      const fds = [];
      for (let i = 0; i < 64; i++) fds.push(fs.openSync(p(`m${i}`), 'w+'));
      fds.forEach((fd, i) => fs.writeSync(fd, `file ${i}`.repeat(100)));
      fds.forEach((fd) => fs.closeSync(fd));
      let ok = 0;
      for (let i = 0; i < 64; i++) if (read(p(`m${i}`)) === `file ${i}`.repeat(100)) ok++;
      return ok;
    });
    step('two writers one file', () => {
      const a = fs.openSync(p('two'), 'w');
      const b = fs.openSync(p('two'), 'r+');
      fs.writeSync(a, 'A'.repeat(100000), 0);
      fs.writeSync(b, 'B'.repeat(100000), 50000);
      fs.closeSync(a);
      fs.closeSync(b);
      const c = read(p('two'));
      return [c.length, c.indexOf('B'), c.lastIndexOf('A')];
    });
    step('big file roundtrip', () => {
      const buf = Buffer.alloc(3 * 1024 * 1024 + 123);
      for (let i = 0; i < buf.length; i++) buf[i] = (i * 7 + (i >> 12)) & 0xff;
      fs.writeFileSync(p('big'), buf);
      return Buffer.compare(fs.readFileSync(p('big')), buf) === 0;
    });
    step('fsync', () => { const fd = fs.openSync(p('f'), 'r+'); fs.writeSync(fd, 'S', 0); fs.fsyncSync(fd); fs.closeSync(fd); return read(p('f')); });
    step('unlink', () => { fs.unlinkSync(p('f')); return fs.existsSync(p('f')); });
  },
  // Run as uid 65534 in a directory prepared by root (see the test).
  nobody() {
    step('create in root-owned 0755 dir', () => fs.writeFileSync(p('locked', 'x'), ''));
    step('read root 0600 file', () => read(p('secret')));
    step('write root 0644 file', () => fs.writeFileSync(p('public'), 'x'));
    step('read root 0644 file', () => read(p('public')));
    step('chmod root file', () => fs.chmodSync(p('public'), 0o777));
    step('unlink in root-owned dir', () => fs.unlinkSync(p('locked', 'keep')));
    step('create in 0777 dir', () => { fs.writeFileSync(p('open', 'mine'), 'm'); return fs.statSync(p('open', 'mine')).uid; });
    step('chmod own file', () => { fs.chmodSync(p('open', 'mine'), 0o600); return (fs.statSync(p('open', 'mine')).mode & 0o777).toString(8); });
  },
};

scenarios[scenario]();
process.stdout.write(JSON.stringify(out));
