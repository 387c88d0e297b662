// npm run storm: many hosts mounting at once against one store with
// Debian's stock sshd settings (test/helpers/stock-sshd.ts: MaxStartups
// 10:30:100, MaxSessions 10, sftp-server started through a login shell that
// costs ~100 ms of CPU). For each N (STORM_N, default 64,128,256), N volumes
// are created and mounted at once through the real daemon (dist/main.js), a
// 4 MiB file is written into each and checked by sha256 on the store, every
// mount ID is unmounted, and the daemon's remaining IDs count as leaked.
// Not a test: it prints figures (docs/scaling.md keeps them).
import { removeDaemonDir, removeDist, startDaemon } from '../test/helpers/daemon';
import { startStockSshd } from '../test/helpers/stock-sshd';
import { runStorm } from '../test/helpers/storm';

const SIZES = (process.env.STORM_N ?? '64,128,256').split(',').map(Number);
const CPU_MS = Number(process.env.STORM_SUBSYSTEM_CPU_MS ?? 100);

async function main(): Promise<void> {
  const sshd = await startStockSshd({ subsystemCpuMs: CPU_MS });
  console.log(`store: OpenSSH ${sshd.host}:${sshd.port}, Debian's stock sshd_config with: ${sshd.changes.join('; ')}`);
  console.log(`sftp subsystem: ${CPU_MS} ms of CPU in the login shell, then sftp-server; machine load before: ${(await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim()}`);
  const rows: string[] = [];
  try {
    for (const n of SIZES) {
      const d = await startDaemon();
      try {
        const r = await runStorm(d, sshd, n, { tag: `storm${n}` });
        const errors = new Map<string, number>();
        for (const e of r.failed.values()) errors.set(e, (errors.get(e) ?? 0) + 1);
        const m = r.store.mounted || 1;
        rows.push(
          `| ${n} | ${r.intact}/${n} | ${r.failed.size} | ${r.leakedIds} | ${(r.wallMs / 1000).toFixed(1)} s | ${r.retries} | ${r.mountMs.p50} / ${r.mountMs.p99} ms | ` +
            `${(r.store.processes / m).toFixed(1)} (${(r.store.sftpServers / m).toFixed(1)} sftp-server) | ${(r.store.rssKiB / 1024 / m).toFixed(1)} / ${(r.store.pssKiB / 1024 / m).toFixed(1)} MiB | ${(r.logins / n).toFixed(2)} / ${(r.subsystemStarts / n).toFixed(2)} |`,
        );
        console.log(rows.at(-1));
        for (const [e, k] of errors) console.log(`   ${k} x ${e}`);
        console.log(`   load after: ${(await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim()}`);
      } finally {
        await d.stop();
        removeDaemonDir(d.dir);
      }
    }
  } finally {
    await sshd.stop();
    sshd.remove();
    removeDist();
  }
  console.log('\n| N | intact | failed mounts | leaked IDs | wall | retries | mount p50 / p99 | store processes per volume | store RSS / PSS per volume | store logins / sftp-server starts per volume |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
