// npx tsx bench/mount-cycles.ts [cycles]: Mount then Unmount of one volume,
// over the plugin socket of the real daemon (dist/main.js), against a test
// sshd; prints the daemon's RSS every 100 cycles. RSS that levels off is V8
// and malloc keeping pages; RSS that rises with every cycle is something
// each mount leaves behind (docs/performance.md, "Memory per mount/unmount cycle").
import { readFileSync } from 'node:fs';
import { buildDist, removeDaemonDir, removeDist, startDaemon } from '../test/helpers/daemon';
import { removeSshdDir, startSshd } from '../test/helpers/sshd';

const rssMiB = (pid: number) => Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024);

async function main(): Promise<void> {
  const cycles = Number(process.argv[2] ?? 400);
  await buildDist();
  const sshd = await startSshd();
  const d = await startDaemon();
  try {
    const Opts = { sshcmd: `${sshd.user}@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath };
    const c = await d.call('/VolumeDriver.Create', { Name: 'cycles', Opts });
    if (c.status !== 200) throw new Error(`Create: ${c.text}`);
    console.log(`mounted 0 times: daemon RSS ${rssMiB(d.proc.pid!)} MiB`);
    for (let i = 1; i <= cycles; i++) {
      const m = await d.call('/VolumeDriver.Mount', { Name: 'cycles', ID: `id${i}` });
      if (m.status !== 200) throw new Error(`Mount ${i}: ${m.text}`);
      await d.call('/VolumeDriver.Unmount', { Name: 'cycles', ID: `id${i}` });
      if (i % 100 === 0) console.log(`mounted and unmounted ${i} times: daemon RSS ${rssMiB(d.proc.pid!)} MiB`);
    }
  } finally {
    await d.stop();
    removeDaemonDir(d.dir);
    await sshd.stop();
    removeSshdDir(sshd);
    removeDist();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
