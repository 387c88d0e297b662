// The production daemon (`node dist/main.js`, the real SFTP filesystem from
// src/fs) end to end against a real sshd: Mount gives a FUSE mount whose
// files land in the server's directory, refcounted by mount IDs, unmounted on
// SIGTERM and restored on restart.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const SECRET = 'pw-Fuse-Zq7-distinctive';
let sshd: Sshd;
let d: DaemonProc;
let dir: string;
const isMounted = (p: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);
const status = async (Name: string) => ((await d.call('/VolumeDriver.Get', { Name })).json.Volume as { Status: Record<string, unknown> }).Status;

/** Wait for the daemon's background restore to report `connection: connected`. */
const restored = (Name: string) =>
  until(async () => (await status(Name)).connection === 'connected', `volume ${Name} restored after the restart`, { seen: () => status(Name) });

describe('production daemon with the SFTP filesystem', () => {
  beforeAll(async () => {
    sshd = await startSshd();
    d = await startDaemon();
    dir = d.dir;
  });
  afterAll(async () => {
    await d?.stop();
    if (d) removeDaemonDir(dir);
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    removeDist();
  });

  it('Mount gives a working mount on the server directory, refcounted by mount IDs', async () => {
    const Opts = { sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath, passphrase: SECRET };
    expect((await d.call('/VolumeDriver.Create', { Name: 'store', Opts })).json).toEqual({});
    const m = await d.call('/VolumeDriver.Mount', { Name: 'store', ID: 'job-0' });
    expect(m.json.Err).toBeUndefined();
    const mp = m.json.Mountpoint as string;
    expect(isMounted(mp)).toBe(true);
    expect((await d.call('/VolumeDriver.Mount', { Name: 'store', ID: 'job-1' })).status).toBe(200);
    await mkdir(join(mp, '0', 'model'), { recursive: true });
    await writeFile(join(mp, '0', 'model', 'model.h5'), 'weights-0');
    expect(readFileSync(join(sshd.storeDir, '0', 'model', 'model.h5'), 'utf8')).toBe('weights-0');
    expect((await d.call('/VolumeDriver.Unmount', { Name: 'store', ID: 'job-0' })).status).toBe(200);
    expect(await readFile(join(mp, '0', 'model', 'model.h5'), 'utf8')).toBe('weights-0');
    expect(await status('store')).toMatchObject({ connection: 'connected', mounts: 1 });
  });

  it('SIGTERM unmounts and exits 0; a restart remounts the volume still in use', async () => {
    const mp = join(d.mountRoot, 'store');
    const t0 = Date.now();
    expect(await d.stop()).toEqual({ code: 0, signal: null });
    console.log(`SIGTERM to exit with one FUSE mount: ${Date.now() - t0} ms`);
    expect(isMounted(mp)).toBe(false);
    d = await startDaemon({ dir });
    await restored('store');
    expect(isMounted(mp)).toBe(true);
    expect(await readFile(join(mp, '0', 'model', 'model.h5'), 'utf8')).toBe('weights-0');
  });

  it('after a crash (SIGKILL) the dead FUSE mount is detached and the volume remounted on restart', async () => {
    const mp = join(d.mountRoot, 'store');
    expect(await d.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    // What `ls` of the volume shows a container once its FUSE server is gone.
    const dead = await readdir(mp).then(() => 'alive', (e: NodeJS.ErrnoException) => e.code);
    expect(dead).toBe('ENOTCONN');
    d = await startDaemon({ dir });
    await restored('store');
    expect(await readFile(join(mp, '0', 'model', 'model.h5'), 'utf8')).toBe('weights-0');
    expect(d.logLines().some((l) => String(l.msg).startsWith('stale FUSE mount found'))).toBe(true);
    expect((await d.call('/VolumeDriver.Unmount', { Name: 'store', ID: 'job-1' })).status).toBe(200);
    expect(isMounted(mp)).toBe(false);
    expect((await d.call('/VolumeDriver.Remove', { Name: 'store' })).json).toEqual({});
    expect(existsSync(mp)).toBe(false);
    expect(readFileSync(join(sshd.storeDir, '0', 'model', 'model.h5'), 'utf8')).toBe('weights-0');
    expect(d.stdout()).not.toContain(SECRET);
  });
});
