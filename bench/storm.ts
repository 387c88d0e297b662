// npm run storm: many hosts mounting at once against one store with
// Debian's stock sshd settings (test/helpers/stock-sshd.ts: MaxStartups
// 10:30:100, MaxSessions 10, sftp-server started through a login shell that
// costs ~100 ms of CPU). For each N (STORM_N, default 64,128,256), N volumes
// are created and mounted at once through the real daemon (dist/main.js), a
// 4 MiB file is written into each and checked by sha256 on the store, every
// mount ID is unmounted, and the daemon's remaining IDs count as leaked.
// Not a test: it prints figures (docs/scaling.md keeps them).
import { readFileSync } from 'node:fs';
import { removeDaemonDir, removeDist, startDaemon } from '../test/helpers/daemon';
import { startStockSshd } from '../test/helpers/stock-sshd';
import { runStorm } from '../test/helpers/storm';
import { run } from '../test/e2e/docker';
import { runDockerStorm, stormPlugin } from './storm-docker';

const SIZES = (process.env.STORM_N ?? '64,128,256').split(',').filter(Boolean).map(Number);
const CPU_MS = Number(process.env.STORM_SUBSYSTEM_CPU_MS ?? 100);
// Through dockerd (STORM_DOCKER_N='' skips it): N containers at once, each with its own volume.
const DOCKER_SIZES = (process.env.STORM_DOCKER_N ?? '32,64,128').split(',').filter(Boolean).map(Number);
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').trim();

/** One line per distinct error: how many failed with it. */
function printTally(errors: Iterable<string>, prefix = ''): void {
  const counts = new Map<string, number>();
  for (const e of errors) counts.set(e, (counts.get(e) ?? 0) + 1);
  for (const [e, k] of counts) console.log(`   ${k} x ${prefix}${e}`);
}

async function main(): Promise<void> {
  const sshd = await startStockSshd({ subsystemCpuMs: CPU_MS });
  console.log(`store: OpenSSH ${sshd.host}:${sshd.port}, Debian's stock sshd_config with: ${sshd.changes.join('; ')}`);
  console.log(`sftp subsystem: ${CPU_MS} ms of CPU in the login shell, then sftp-server; machine load before: ${loadavg()}`);
  const rows: string[] = [];
  const dockerRows: string[] = [];
  try {
    for (const n of SIZES) {
      const d = await startDaemon();
      try {
        const r = await runStorm(d, sshd, n, { tag: `storm${n}` });
        const m = r.store.mounted || 1;
        rows.push(
          `| ${n} | ${r.intact}/${n} | ${r.failed.size} | ${r.leakedIds} | ${(r.wallMs / 1000).toFixed(1)} s | ${r.retries} | ${r.createMountMs.p50} / ${r.createMountMs.p99} ms | ${r.mountMs.p50} / ${r.mountMs.p99} ms | ` +
            `${(r.store.processes / m).toFixed(1)} (${(r.store.sftpServers / m).toFixed(1)} sftp-server) | ${(r.store.rssKiB / 1024 / m).toFixed(1)} / ${(r.store.pssKiB / 1024 / m).toFixed(1)} MiB | ${(r.logins / n).toFixed(2)} / ${(r.subsystemStarts / n).toFixed(2)} |`,
        );
        console.log(rows.at(-1));
        printTally(r.failed.values());
        printTally(r.unmountFailed.values(), 'Unmount ');
        console.log(`   load after: ${loadavg()}`);
      } finally {
        await d.stop();
        removeDaemonDir(d.dir);
      }
    }
    if (DOCKER_SIZES.length > 0 && (await run('docker', ['info'])).code === 0) {
      const plugin = await stormPlugin(sshd);
      try {
        for (const n of DOCKER_SIZES) {
          const r = await runDockerStorm(sshd, plugin, n);
          dockerRows.push(`| ${n} | ${r.intact}/${n} | ${r.failed.size} | ${r.leakedVolumes} | ${(r.wallMs / 1000).toFixed(1)} s | ${r.runMs.p50} / ${r.runMs.p99} ms |`);
          console.log(dockerRows.at(-1));
          printTally(r.failed.values());
          console.log(`   load after: ${loadavg()}`);
        }
      } finally {
        await plugin.stop();
      }
    }
  } finally {
    await sshd.stop();
    sshd.remove();
    removeDist();
  }
  console.log('\n| N | intact | failed mounts | leaked IDs | wall | retries | Create+Mount p50 / p99 | Mount p50 / p99 | store processes per volume | store RSS / PSS per volume | store logins / sftp-server starts per volume |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
  if (dockerRows.length > 0) {
    console.log('\nThrough dockerd (docker run --mount ...,volume-driver=tsfs-storm:latest, N containers at once):');
    console.log('| N | intact | failed containers | volumes left in use | wall | docker run p50 / p99 |');
    console.log('|---|---|---|---|---|---|');
    for (const r of dockerRows) console.log(r);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
