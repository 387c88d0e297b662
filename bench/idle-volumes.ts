// npx tsx bench/idle-volumes.ts: what each mounted but unused volume costs the
// daemon. Starts the real daemon and an OpenSSH sshd, reads the daemon's RSS
// once it has collected its start-up garbage, then Creates and Mounts N
// volumes (IDLE_N, default 32), waits for the idle collection again and
// reads it once more. A host mounts a volume for every job definition that
// names one, used or not (docs/scaling.md, "Memory per mounted volume").
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeDaemonDir, removeDist, startDaemon } from '../test/helpers/daemon';
import { removeSshdDir, startSshd } from '../test/helpers/sshd';

const N = Number(process.env.IDLE_N ?? 32);
/** Longer than src/fs/memory.ts's two idle ticks plus a trim. */
const SETTLE_MS = 8_000;

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));

async function main(): Promise<void> {
  const sshd = await startSshd();
  const d = await startDaemon({ env: { LOG_LEVEL: 'warn' } });
  try {
    await settle();
    const before = rssMiB(d.proc.pid!);
    for (let i = 0; i < N; i++) {
      const remote = join(sshd.storeDir, `v${i}`);
      mkdirSync(remote);
      const opts = { sshcmd: `${sshd.user}@${sshd.host}:${remote}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath };
      for (const [call, body] of [['Create', { Name: `v${i}`, Opts: opts }], ['Mount', { Name: `v${i}`, ID: `idle-${i}` }]] as const) {
        const a = await d.call(`/VolumeDriver.${call}`, body);
        if (a.status !== 200 || a.json.Err) throw new Error(`${call} v${i}: ${a.text}`);
      }
    }
    await settle();
    const after = rssMiB(d.proc.pid!);
    console.log(`daemon RSS idle: ${before.toFixed(1)} MiB; with ${N} volumes mounted and idle: ${after.toFixed(1)} MiB (${((after - before) / N).toFixed(2)} MiB per volume)`);
    for (let i = 0; i < N; i++) await d.call('/VolumeDriver.Unmount', { Name: `v${i}`, ID: `idle-${i}` });
  } finally {
    await d.stop();
    removeDaemonDir(d.dir);
    await sshd.stop();
    removeSshdDir(sshd);
    removeDist();
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
