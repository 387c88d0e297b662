// npx tsx bench/count-requests.ts: how many FUSE requests, per opcode, the
// metadata workloads of bench.ts send to a tsfs mount and to C sshfs, and how
// long the caller waited for each (kernel tracepoints fuse:fuse_request_send
// and fuse:fuse_request_end, via perf; needs root). Each request is a round
// trip between the caller and libfuse's threads, so this count times the
// hand-off cost bounds ls -lR and stat storms, and the waits show which
// request of a workload is slower than sshfs's (docs/performance.md). perf
// itself adds to every wait: compare the two mounts, not absolute figures.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startSshd } from '../test/helpers/sshd';
import { mountForTest, type TestMount } from '../test/helpers/fs-mount';

const WORKER = join(__dirname, 'worker.mjs');
const run = promisify(execFile);

/** Per opcode, how long each request took from send to answer (µs), from `perf script` lines. */
function requestWaits(script: string): Map<string, number[]> {
  const sent = new Map<string, [op: string, at: number]>();
  const waits = new Map<string, number[]>();
  for (const line of script.split('\n')) {
    const m = /\s([\d.]+): +fuse:fuse_request_(send|end): .*?req (\d+)/.exec(line);
    if (!m) continue;
    const [, at, kind, unique] = m;
    // A unique id belongs to one connection at a time; the workload has one mount.
    if (kind === 'send') sent.set(unique, [/\((FUSE_[A-Z]+)\)/.exec(line)?.[1] ?? '?', Number(at)]);
    else {
      const s = sent.get(unique);
      if (!s) continue;
      sent.delete(unique);
      const w = waits.get(s[0]) ?? [];
      w.push((Number(at) - s[1]) * 1e6);
      waits.set(s[0], w);
    }
  }
  return waits;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[s.length >> 1]);
}

async function main(): Promise<void> {
  const sshd = await startSshd();
  const mountSshfs = async () => {
    const mountpoint = mkdtempSync(join(tmpdir(), 'sshfs-mnt-'));
    // As bench.ts mounts it, so that the waits compare.
    await run('sshfs', ['-o', `IdentityFile=${sshd.userKeyPath},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,port=${sshd.port},Ciphers=aes128-gcm@openssh.com,Compression=no,allow_other`, `${sshd.user}@${sshd.host}:${sshd.storeDir}`, mountpoint]);
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
        await run('perf', ['record', '-q', '-o', data, '-a', '-e', 'fuse:fuse_request_send,fuse:fuse_request_end', '--', 'sh', '-c', `${args.map((a) => `'${a}'`).join(' ')} >/dev/null`]);
        const { stdout } = await run('perf', ['script', '-i', data], { maxBuffer: 1 << 28 });
        const waits = requestWaits(stdout);
        const total = [...waits.values()].reduce((a, w) => a + w.length, 0);
        const byOp = [...waits].sort((a, b) => b[1].length - a[1].length);
        console.log(`${name}, ${fs}: ${total} requests`, Object.fromEntries(byOp.map(([op, w]) => [op, w.length])));
        // The median shows a typical request; the total, where the workload's time went.
        console.log('  wait per request: median µs / total ms:', Object.fromEntries(byOp.filter(([, w]) => w.length >= 100).map(([op, w]) => [op, `${median(w)} / ${Math.round(w.reduce((a, b) => a + b, 0) / 1000)}`])));
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
