// Workload bodies that need more than one syscall per process: run as a child
// of bench.ts so the serving daemon never does I/O on its own mount, and so a
// shell loop's fork cost does not swamp the filesystem's.
import { mkdirSync, writeFileSync, readdirSync, statSync, openSync, writeSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';

const [cmd, dir] = process.argv.slice(2);
const block = Buffer.alloc(4096, 0x5a);

switch (cmd) {
  case 'small-files': // 2,000 x 4 KiB in 20 directories
    for (let d = 0; d < 20; d++) {
      mkdirSync(join(dir, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(dir, `d${d}`, `f${f}`), block);
    }
    break;
  case 'make-tree': // 10,000 files in 100 directories, made on the server side
    for (let d = 0; d < 100; d++) {
      mkdirSync(join(dir, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(dir, `d${d}`, `f${f}.txt`), `${d}/${f}\n`);
    }
    break;
  case 'stat-tree': {
    let n = 0;
    for (const d of readdirSync(dir)) for (const f of readdirSync(join(dir, d))) { statSync(join(dir, d, f)); n++; }
    if (n !== 10000) throw new Error(`saw ${n} files, expected 10000`);
    break;
  }
  case 'random-rewrite': { // 4,096 writes of 4 KiB at random 4 KiB-aligned offsets of a 64 MiB file, then fsync
    let seed = 42; // fixed: both mounts get the same offsets
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    const fd = openSync(dir, 'r+');
    for (let i = 0; i < 4096; i++) writeSync(fd, block, 0, 4096, Math.floor(rand() * 16384) * 4096);
    fsyncSync(fd);
    closeSync(fd);
    break;
  }
  default:
    throw new Error(`unknown workload ${cmd}`);
}
