// node --initial-old-space-size=64 --import tsx bench/cache-rss.ts [files]
// The metadata cache's memory bound, measured: the RSS of the process that
// serves a tsfs mount (this one, as the daemon does) before and after
// `ls -lR` of a tree of 100,000 files (made on the server side, 100 per
// directory, plus 100 directories of 1,000 for deep listings) and after
// `rm -rf` of it through the mount. CACHE_RSS_ROUNDS=N repeats make, ls -lR
// and rm -rf N times in one process: RSS that levels off after the first
// round is V8 and malloc keeping pages for reuse, RSS that keeps rising would
// be a leak. Run under flock /tmp/tsfs-bench.lock on a shared machine; the
// figures go to docs/performance.md.
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startSshd, removeSshdDir } from '../test/helpers/sshd';
import { mountForTest } from '../test/helpers/fs-mount';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/**
 * RSS and, after a full GC (--expose-gc), the V8 heap in use and the heap V8
 * has committed: RSS keeps pages V8 and malloc do not hand back.
 */
function rss(): string {
  global.gc?.();
  const m = process.memoryUsage();
  return `rss ${(m.rss / MiB).toFixed(0)} MiB, heap used ${(m.heapUsed / MiB).toFixed(0)} MiB, heap committed ${(m.heapTotal / MiB).toFixed(0)} MiB`;
}

async function main(): Promise<void> {
  const files = Number(process.argv[2] ?? 100_000);
  const sshd = await startSshd();
  const tree = join(sshd.storeDir, 'tree');
  const rounds = Number(process.env.CACHE_RSS_ROUNDS ?? 1);
  const makeTree = () => {
    for (let d = 0; d < files / 100; d++) {
      mkdirSync(join(tree, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(tree, `d${d}`, `file-with-a-longish-name-${f}.txt`), '');
    }
  };
  makeTree();
  const m = await mountForTest(sshd);
  try {
    for (let round = 1; round <= rounds; round++) {
      if (round > 1) makeTree();
      const at: Record<string, string> = { mounted: rss() };
      const t0 = performance.now();
      await run('sh', ['-c', `ls -lR ${join(m.mountpoint, 'tree')} | wc -l`], { maxBuffer: 1 << 20 });
      at['after ls -lR'] = rss();
      const t1 = performance.now();
      await run('rm', ['-rf', join(m.mountpoint, 'tree')]);
      at['after rm -rf'] = rss();
      const t2 = performance.now();
      console.log(JSON.stringify({ round, files, ...at, lsSeconds: ((t1 - t0) / 1000).toFixed(1), rmSeconds: ((t2 - t1) / 1000).toFixed(1), loadavg: execFileSync('cat', ['/proc/loadavg']).toString().trim() }));
    }
  } finally {
    await m.cleanup();
    await sshd.stop();
    removeSshdDir(sshd);
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
