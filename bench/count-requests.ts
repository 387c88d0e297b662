// npx tsx bench/count-requests.ts: how many FUSE requests, per opcode, the
// metadata workloads of bench.ts send to a tsfs mount (kernel tracepoint
// fuse:fuse_request_send, via perf; needs root). Each request is a round trip
// between the caller and libfuse's threads, so this count times the hand-off
// cost bounds ls -lR and stat storms (docs/performance.md).
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startSshd } from '../test/helpers/sshd';
import { mountForTest, type TestMount } from '../test/helpers/fs-mount';

const WORKER = join(__dirname, 'worker.mjs');
const run = promisify(execFile);

async function main(): Promise<void> {
  const sshd = await startSshd();
  const mountSshfs = async () => {
    const mountpoint = mkdtempSync(join(tmpdir(), 'sshfs-mnt-'));
    await run('sshfs', ['-o', `IdentityFile=${sshd.userKeyPath},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,port=${sshd.port}`, `${sshd.user}@${sshd.host}:${sshd.storeDir}`, mountpoint]);
    return { mountpoint, cleanup: async () => { await run('fusermount3', ['-u', mountpoint]); rmSync(mountpoint, { recursive: true }); } };
  };
  try {
    execFileSync(process.execPath, [WORKER, 'make-tree', join(sshd.storeDir, 'tree10k')]);
    const workloads: [string, string[]][] = [
      ['ls -lR', ['ls', '-lR']],
      ['find -type f', ['find']],
      ['stat of every file', [process.execPath, WORKER, 'stat-tree']],
      ['2,000 x 4 KiB files', [process.execPath, WORKER, 'small-files']],
    ];
    for (const [name, cmd] of workloads) for (const fs of ['tsfs', 'sshfs'] as const) {
      // A fresh mount per workload, as bench.ts does. This process serves the
      // tsfs mount, so everything touching it runs in children, asynchronously.
      const m = fs === 'tsfs' ? await mountForTest(sshd) : await mountSshfs();
      const data = `${m.mountpoint}.perf.data`;
      try {
        const tree = name.startsWith('2,000') ? join(m.mountpoint, `small-${fs}`) : join(m.mountpoint, 'tree10k');
        const args = name.startsWith('find') ? [...cmd, tree, '-type', 'f'] : [...cmd, tree];
        await run('perf', ['record', '-q', '-o', data, '-a', '-e', 'fuse:fuse_request_send', '--', 'sh', '-c', `${args.map((a) => `'${a}'`).join(' ')} >/dev/null`]);
        const { stdout } = await run('perf', ['script', '-i', data], { maxBuffer: 1 << 28 });
        const byOp = new Map<string, number>();
        for (const op of stdout.match(/FUSE_[A-Z]+/g) ?? []) byOp.set(op, (byOp.get(op) ?? 0) + 1);
        const total = [...byOp.values()].reduce((a, b) => a + b, 0);
        console.log(`${name}, ${fs}: ${total} requests`, Object.fromEntries([...byOp].sort((a, b) => b[1] - a[1])));
        if (fs === 'tsfs') {
          // The rest were answered in libfuse's worker threads (the binding's
          // attribute table and listings). A write answered early there still
          // reaches JS afterwards, to be sent: it counts here.
          const byType = ((m as TestMount).fs.stats?.().operations_by_type ?? {}) as Record<string, number>;
          const js = Object.values(byType).reduce((a, b) => a + b, 0);
          console.log(`  of which served by JS (the Node thread): ${js}`, byType);
        }
      } finally {
        rmSync(data, { force: true });
        await m.cleanup();
      }
    }
  } finally {
    await sshd.stop();
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
