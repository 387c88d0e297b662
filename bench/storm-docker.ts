// The storm through dockerd, as an array job meets it: N containers started
// at once, each with its own tsfs volume given on `docker run --mount`
// (dockerd then sends Get, Create and Mount to the plugin, within its own
// timeouts), each writing a 4 MiB model file that is then checked by sha256
// on the store. Afterwards every container is gone, so the plugin must hold
// no mount ID; a volume that `docker volume rm` refuses counts as leaked.
// One dockerd plays all N hosts. Used by bench/storm.ts when dockerd runs.
import { mkdirSync, mkdtempSync, copyFileSync, readFileSync, rmSync, chownSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { BASE_IMAGE, docker, make, run } from '../test/e2e/docker';
import type { StockSshd } from '../test/helpers/stock-sshd';
import { quantile } from '../test/helpers/storm';

const LABEL = 'org.tsfs.storm=1';

export interface DockerStormResult {
  n: number;
  intact: number;
  failed: Map<string, string>;
  leakedVolumes: number;
  wallMs: number;
  /** `docker run` start to the container's exit, per container that succeeded. */
  runMs: { p50: number; p99: number };
}

export interface StormPlugin {
  name: string;
  stop(): Promise<void>;
}

/** Build this tree as plugin `<name>:latest`, with the store's user key as its sshkey.source, and enable it. */
export async function stormPlugin(sshd: StockSshd, name = 'tsfs-storm'): Promise<StormPlugin> {
  const work = mkdtempSync('/tmp/tsfs-storm-plugin-');
  const keyDir = join(work, 'ssh');
  const stateDir = join(work, 'state');
  mkdirSync(keyDir, { mode: 0o700 });
  mkdirSync(stateDir, { mode: 0o700 });
  copyFileSync(sshd.userKeyPath, join(keyDir, 'id_ed25519'));
  const plugin = `${name}:latest`;
  await make(['all'], { PLUGIN_NAME: name, PLUGIN_DIR: join(work, 'plugin'), FORCE: '1' });
  await docker('plugin', 'set', plugin, `sshkey.source=${keyDir}`, `state.source=${stateDir}`);
  await docker('plugin', 'enable', plugin);
  return {
    name: plugin,
    async stop() {
      await run('docker', ['plugin', 'disable', '-f', plugin]);
      await run('docker', ['plugin', 'rm', '-f', plugin]);
      rmSync(work, { recursive: true, force: true });
    },
  };
}

export async function runDockerStorm(sshd: StockSshd, plugin: StormPlugin, n: number, bytes = 4 * 1024 * 1024): Promise<DockerStormResult> {
  const tag = `dstorm${n}-${Date.now().toString(36)}`;
  const names = Array.from({ length: n }, (_, i) => `${tag}-${i}`);
  for (const name of names) {
    mkdirSync(join(sshd.storeDir, name), { recursive: true });
    chownSync(join(sshd.storeDir, name), sshd.uid, sshd.uid);
  }
  const failed = new Map<string, string>();
  const sums = new Map<string, string>();
  const runMs: number[] = [];
  const t0 = Date.now();
  await Promise.all(
    names.map(async (name, i) => {
      const mount = [
        'type=volume', `src=${name}`, 'dst=/storage', `volume-driver=${plugin.name}`,
        `volume-opt=sshcmd=${sshd.user}@${sshd.host}:${join(sshd.storeDir, name)}`, `volume-opt=port=${sshd.port}`,
      ].join(',');
      const r0 = Date.now();
      const r = await run('docker', [
        'run', '--rm', '--label', LABEL, '--mount', mount, BASE_IMAGE,
        'sh', '-c', `mkdir -p /storage/${i}/model && head -c ${bytes} /dev/urandom > /storage/${i}/model/model.h5 && sha256sum /storage/${i}/model/model.h5`,
      ]);
      if (r.code !== 0) return void failed.set(name, r.stderr.trim().split('\n').at(-1) ?? `exit ${r.code}`);
      runMs.push(Date.now() - r0);
      sums.set(name, r.stdout.trim().split(/\s+/)[0]);
    }),
  );
  const wallMs = Date.now() - t0;
  let intact = 0;
  for (const [name, sum] of sums) {
    const i = names.indexOf(name);
    try {
      const onStore = createHash('sha256').update(readFileSync(join(sshd.storeDir, name, String(i), 'model', 'model.h5'))).digest('hex');
      if (onStore === sum) intact++;
      else failed.set(name, 'store copy differs from what the container wrote');
    } catch (e) {
      failed.set(name, `store: ${(e as Error).message}`);
    }
  }
  // Every container has exited (--rm): a volume still in use holds a leaked mount ID.
  let leakedVolumes = 0;
  for (const name of names) {
    const rm = await run('docker', ['volume', 'rm', name]);
    if (rm.code !== 0 && !/no such volume/i.test(rm.stderr)) leakedVolumes++;
  }
  return { n, intact, failed, leakedVolumes, wallMs, runMs: { p50: quantile(runMs, 0.5), p99: quantile(runMs, 0.99) } };
}
