// npm run soak: the production daemon (dist/main.js) with 8 volumes mounted
// through a fault proxy to a real sshd, under a mix of mounts, unmounts,
// fsync'd writes and reads, with faults injected at random (proxy cut, proxy
// stall, sshd restart). Not a CI test: it runs SOAK_MINUTES (default 30) and
// prints operations done, faults injected, errors surfaced, bytes verified,
// corruptions (must be 0) and the daemon's RSS at start and end.
//
// A write counts as verified only if open/write/fsync/close all succeeded and
// the server's file then has the same sha256; a write that failed (EIO) is an
// error surfaced, which is allowed. A write reported as done whose server copy
// differs, or a read returning other bytes than the server has, is corruption.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../src/node-flags';
import { pluginCall } from '../test/helpers/daemon';
import { startProxy } from '../test/helpers/proxy';
import { removeSshdDir, startSshd } from '../test/helpers/sshd';

const MINUTES = Number(process.env.SOAK_MINUTES ?? 30);
const VOLUMES = 8;
const WORKERS = 4;
const REPO = resolve(__dirname, '..');
/** The daemon's pino log goes here (kept after the run, for looking into errors). */
const DAEMON_LOG = process.env.SOAK_DAEMON_LOG ?? join(tmpdir(), 'tsfs-soak-daemon.log');

const stats = { ops: 0, mounts: 0, unmounts: 0, writes: 0, reads: 0, faults: { cut: 0, stall: 0, sshdRestart: 0 }, errors: 0, bytesVerified: 0, corrupt: 0 };
const errorKinds = new Map<string, number>();
const rand = (n: number) => Math.floor(Math.random() * n);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

function surfaced(kind: string, volume?: string): void {
  stats.errors++;
  if (process.env.SOAK_VERBOSE) console.log(`${new Date().toISOString()} error ${kind} ${volume ?? ''}`);
  errorKinds.set(kind, (errorKinds.get(kind) ?? 0) + 1);
}

async function main(): Promise<void> {
  // internal-sftp: the server's SFTP channels open without starting the
  // user's login shell (on a dev box root's .bashrc can cost ~0.6 s of CPU per
  // channel, which turns eight parallel reconnects into a 20 s CPU queue and
  // measures the shell, not tsfs).
  const sshd = await startSshd({ sftpServer: process.env.SOAK_SFTP_SERVER ?? 'internal-sftp' });
  const proxy = await startProxy(sshd.port);
  const dir = mkdtempSync(join(tmpdir(), 'tsfs-soak-'));
  const socket = join(dir, 'run', 'tsfs.sock');
  mkdirSync(join(dir, 'ssh'), { recursive: true });
  const daemon: ChildProcess = spawn(process.execPath, [...DAEMON_NODE_FLAGS, join(REPO, 'dist', 'main.js')], {
    env: { ...DAEMON_ENV, PATH: process.env.PATH, TSFS_SOCKET: socket, TSFS_STATE_DIR: join(dir, 'state'), TSFS_MOUNT_ROOT: join(dir, 'volumes'), TSFS_SSH_DIR: join(dir, 'ssh'), LOG_LEVEL: process.env.SOAK_LOG_LEVEL ?? 'info' },
    stdio: ['ignore', openSync(DAEMON_LOG, 'w'), 'inherit'],
  });
  const call = (endpoint: string, body: unknown) => pluginCall(socket, endpoint.replace(/^\//, ''), body);
  for (let i = 0; i < 200; i++) {
    try {
      await call('/Plugin.Activate', undefined);
      break;
    } catch {
      await sleep(50);
    }
  }
  const names = Array.from({ length: VOLUMES }, (_, i) => `soak${i}`);
  const mountpoints = new Map<string, string>();
  const extraIds = new Map<string, Set<string>>(names.map((n) => [n, new Set()]));
  /** Files known to be on the server with this content hash, per volume. */
  const known = new Map<string, Map<string, string>>(names.map((n) => [n, new Map()]));
  for (const [i, Name] of names.entries()) {
    mkdirSync(join(sshd.storeDir, `v${i}`), { recursive: true });
    await call('/VolumeDriver.Create', {
      Name,
      Opts: { sshcmd: `root@127.0.0.1:${sshd.storeDir}/v${i}`, port: String(proxy.port), IdentityFile: sshd.userKeyPath, ServerAliveInterval: '1', reconnect_timeout: '10' },
    });
    // The anchor ID keeps the volume mounted for I/O; other IDs come and go.
    mountpoints.set(Name, String((await call('/VolumeDriver.Mount', { Name, ID: `${Name}-anchor` })).Mountpoint));
  }
  const rssStart = rssKiB(daemon.pid!);
  const t0 = Date.now();
  const deadline = t0 + MINUTES * 60_000;
  let seq = 0;

  // One worker per file at a time: a read racing another worker's rewrite
  // would see either version, which is not corruption but looks like it.
  const busy = new Set<string>();
  /** Run fn on the file unless another worker holds it (then skip this turn). */
  const exclusive = async (Name: string, file: string, fn: () => Promise<void>) => {
    const k = `${Name}/${file}`;
    if (busy.has(k)) return;
    busy.add(k);
    try {
      await fn();
    } finally {
      busy.delete(k);
    }
  };

  const writeOne = (Name: string, i: number) => {
    const file = `f${seq++ % 40}.bin`;
    return exclusive(Name, file, () => writeUnclaimed(Name, i, file));
  };

  const writeUnclaimed = async (Name: string, i: number, file: string) => {
    const data = randomBytes((1 + rand(8)) * 1024 * 1024);
    stats.writes++;
    let fh;
    try {
      fh = await open(join(mountpoints.get(Name)!, file), 'w');
      await fh.write(data, 0, data.length, 0);
      await fh.sync();
      await fh.close();
      fh = undefined;
    } catch (e) {
      await fh?.close().catch(() => undefined);
      known.get(Name)!.delete(file);
      surfaced(`write ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, Name);
      return;
    }
    const onServer = await readFile(join(sshd.storeDir, `v${i}`, file));
    if (sha(onServer) !== sha(data)) {
      stats.corrupt++;
      console.error(`CORRUPT write ${Name}/${file}: reported written, server has ${onServer.length} bytes of ${data.length}`);
      return;
    }
    known.get(Name)!.set(file, sha(data));
    stats.bytesVerified += data.length;
  };

  const readOne = async (Name: string, i: number) => {
    const files = [...known.get(Name)!.keys()];
    if (files.length === 0) return;
    const file = files[rand(files.length)];
    await exclusive(Name, file, () => readUnclaimed(Name, i, file));
  };

  const readUnclaimed = async (Name: string, i: number, file: string) => {
    stats.reads++;
    let got: Buffer;
    try {
      got = await readFile(join(mountpoints.get(Name)!, file));
    } catch (e) {
      surfaced(`read ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, Name);
      return;
    }
    const server = await readFile(join(sshd.storeDir, `v${i}`, file));
    if (sha(got) !== sha(server)) {
      stats.corrupt++;
      console.error(`CORRUPT read ${Name}/${file}`);
      return;
    }
    stats.bytesVerified += got.length;
  };

  const worker = async (w: number) => {
    while (Date.now() < deadline) {
      const i = rand(VOLUMES);
      const Name = names[i];
      const r = rand(10);
      try {
        if (r < 4) await writeOne(Name, i);
        else if (r < 8) await readOne(Name, i);
        else if (r === 8) {
          const ID = `${Name}-w${w}-${seq++}`;
          await call('/VolumeDriver.Mount', { Name, ID });
          extraIds.get(Name)!.add(ID);
          stats.mounts++;
        } else {
          const ids = [...extraIds.get(Name)!];
          if (ids.length > 0) {
            const ID = ids[rand(ids.length)];
            extraIds.get(Name)!.delete(ID);
            await call('/VolumeDriver.Unmount', { Name, ID });
            stats.unmounts++;
          }
        }
      } catch (e) {
        surfaced(`api ${(e as Error).message.slice(0, 80)}`);
      }
      stats.ops++;
    }
  };

  const faults = async () => {
    while (Date.now() < deadline - 20_000) {
      await sleep(10_000 + rand(20_000));
      const f = rand(3);
      if (process.env.SOAK_VERBOSE) console.log(`${new Date().toISOString()} fault ${['cut', 'stall', 'sshd restart'][f]}`);
      if (f === 0) {
        proxy.cut();
        stats.faults.cut++;
      } else if (f === 1) {
        proxy.stall(true);
        stats.faults.stall++;
        await sleep(5000 + rand(5000));
        proxy.stall(false);
      } else {
        await sshd.stop();
        await sleep(rand(3000));
        await sshd.restart();
        stats.faults.sshdRestart++;
      }
    }
  };

  const progress = setInterval(() => console.log(`[${((Date.now() - t0) / 60_000).toFixed(1)} min] ${JSON.stringify(stats)}`), 30_000);
  await Promise.all([faults(), ...Array.from({ length: WORKERS }, (_, w) => worker(w))]);
  clearInterval(progress);
  const rssEnd = rssKiB(daemon.pid!);

  for (const Name of names) {
    for (const ID of [...extraIds.get(Name)!, `${Name}-anchor`]) await call('/VolumeDriver.Unmount', { Name, ID }).catch(() => undefined);
  }
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  await proxy.close();
  await sshd.stop();
  removeSshdDir(sshd);
  rmSync(dir, { recursive: true, force: true });

  console.log('\nsoak summary');
  console.log(`  duration            ${((Date.now() - t0) / 60_000).toFixed(1)} min, ${VOLUMES} volumes, ${WORKERS} workers`);
  console.log(`  operations          ${stats.ops} (writes ${stats.writes}, reads ${stats.reads}, mounts ${stats.mounts}, unmounts ${stats.unmounts})`);
  console.log(`  faults injected     ${stats.faults.cut + stats.faults.stall + stats.faults.sshdRestart} (proxy cut ${stats.faults.cut}, proxy stall ${stats.faults.stall}, sshd restart ${stats.faults.sshdRestart})`);
  console.log(`  errors surfaced     ${stats.errors} ${JSON.stringify(Object.fromEntries(errorKinds))}`);
  console.log(`  bytes verified      ${(stats.bytesVerified / 1024 / 1024).toFixed(0)} MiB`);
  console.log(`  corruptions         ${stats.corrupt}`);
  console.log(`  daemon log          ${DAEMON_LOG}`);
  console.log(`  daemon RSS          ${(rssStart / 1024).toFixed(0)} MiB at start, ${(rssEnd / 1024).toFixed(0)} MiB at end`);
  process.exit(stats.corrupt > 0 ? 1 : 0);
}

void main();
