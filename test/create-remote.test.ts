// Create checks the remote against a real OpenSSH sshd: host key, auth,
// directory. Failures must say what failed and what to do. Also: Remove never
// touches the remote data.
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';
import { startProxy } from './helpers/proxy';
import { freePort, removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

let sshd: Sshd;
let d: DaemonProc;

beforeAll(async () => {
  sshd = await startSshd();
  d = await startDaemon({ marker: true });
});
afterAll(async () => {
  await d?.stop();
  if (d) removeDaemonDir(d.dir);
  await sshd?.stop();
  if (sshd) removeSshdDir(sshd);
  removeDist();
});

const base = () => ({ sshcmd: `${sshd.user}@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath });
const create = (Name: string, Opts: Record<string, string>) => d.call('/VolumeDriver.Create', { Name, Opts });
const status = async (Name: string) => ((await d.call('/VolumeDriver.Get', { Name })).json.Volume as { Status: Record<string, unknown> }).Status;
const where = () => `${sshd.host}:${sshd.port}`;

describe('Create against a real sshd', () => {
  it('succeeds, pins the host key it saw, and resolves the directory', async () => {
    const a = await create('ok', base());
    expect(a.json).toEqual({});
    expect(await status('ok')).toMatchObject({ host_key: sshd.hostKeyFingerprint, remote_realpath: sshd.storeDir, mounts: 0 });
    const state = readFileSync(join(d.stateDir, 'tsfs.json'), 'utf8');
    expect(state).toContain(sshd.hostKeyFingerprint);
    // The key's path is stored, never its material.
    expect(state).toContain(sshd.userKeyPath);
    expect(state).not.toContain(readFileSync(sshd.userKeyPath, 'utf8').split('\n')[1]);
  });

  it('finds the default key in the ssh dir when no IdentityFile is given', async () => {
    copyFileSync(sshd.userKeyPath, join(d.sshDir, 'id_ed25519'));
    try {
      const { IdentityFile: _, ...opts } = base();
      expect((await create('defaultkey', opts)).json).toEqual({});
    } finally {
      rmSync(join(d.sshDir, 'id_ed25519'));
    }
  });

  it('wrong key: names the user, host, port and key file tried', async () => {
    const a = await create('wrongkey', { ...base(), IdentityFile: sshd.wrongKeyPath });
    expect(a.status).toBe(500);
    expect(a.json.Err).toContain(`authentication as root on ${where()} failed; tried publickey (${sshd.wrongKeyPath})`);
    expect((await d.call('/VolumeDriver.Get', { Name: 'wrongkey' })).status).toBe(500);
  });

  it('wrong password: says password was tried, without the password; an unusable default key is skipped', async () => {
    writeFileSync(join(d.sshDir, 'id_ed25519'), 'not a key');
    const { IdentityFile: _, ...opts } = base();
    const a = await create('wrongpw', { ...opts, password: 'Wr0ng-Pw-Zq7' });
    expect(a.json.Err).toMatch(/authentication as root on .* failed; tried password/);
    expect(a.text).not.toContain('Wr0ng-Pw-Zq7');
  });

  it('missing IdentityFile: says where keys go', async () => {
    const a = await create('nokey', { ...base(), IdentityFile: join(d.sshDir, 'absent') });
    expect(a.json.Err).toMatch(/cannot read IdentityFile .*absent \(ENOENT\): put the key in the directory mounted as sshkey.source/);
  });

  it('wrong pinned host key: names both fingerprints and how to re-pin', async () => {
    const pinned = 'SHA256:' + 'B'.repeat(43);
    const a = await create('wronghost', { ...base(), host_key: pinned });
    expect(a.json.Err).toContain(`host key mismatch for ${where()}: expected ${pinned}, the server presented ${sshd.hostKeyFingerprint}`);
  });

  it('StrictHostKeyChecking=yes with the right key works', async () => {
    expect((await create('strict', { ...base(), StrictHostKeyChecking: 'yes', host_key: sshd.hostKeyFingerprint })).json).toEqual({});
  });

  it('missing directory: suggests -o mkdir and creates nothing', async () => {
    const a = await create('nodir', { ...base(), sshcmd: `root@${sshd.host}:${sshd.storeDir}/missing/dir` });
    expect(a.json.Err).toBe(`remote directory ${sshd.storeDir}/missing/dir does not exist on ${where()}: create it, or add -o mkdir to create it at volume create`);
    expect(existsSync(join(sshd.storeDir, 'missing'))).toBe(false);
  });

  it('a file instead of a directory is refused', async () => {
    writeFileSync(join(sshd.storeDir, 'plainfile'), 'x');
    const a = await create('notdir', { ...base(), sshcmd: `root@${sshd.host}:${sshd.storeDir}/plainfile` });
    expect(a.json.Err).toMatch(/is not a directory/);
  });

  it('-o mkdir creates the directory path on the server', async () => {
    const a = await create('made', { ...base(), sshcmd: `root@${sshd.host}:${sshd.storeDir}/jobs/42/model`, mkdir: '' });
    expect(a.json).toEqual({});
    expect(existsSync(join(sshd.storeDir, 'jobs/42/model'))).toBe(true);
  });

  it('a closed port: says refused and names the port option', async () => {
    const port = await freePort();
    const a = await create('refused', { ...base(), port: String(port) });
    expect(a.json.Err).toBe(`connection to ${sshd.host}:${port} refused: is sshd running there, and is the port right (-o port=)?`);
  });

  it('a server that accepts TCP and never answers: says no banner, with host, port and the time waited', async () => {
    const proxy = await startProxy(sshd.port);
    try {
      proxy.stall(true);
      const a = await create('stalled', { ...base(), port: String(proxy.port), ConnectTimeout: '1' });
      expect(a.json.Err).toMatch(new RegExp(`^127.0.0.1:${proxy.port} accepted the TCP connection but sent no SSH banner within 1000 ms: `));
    } finally {
      await proxy.close();
    }
  });

  it('a server whose SFTP subsystem never answers: Create fails after ConnectTimeout, naming it, instead of holding the volume forever', async () => {
    // sshd authenticates and starts the subsystem, which never sends SFTP's VERSION.
    const mute = await startSshd({ sftpServer: '/bin/sleep 600' });
    try {
      const a = await create('mute', { sshcmd: `${mute.user}@${mute.host}:${mute.storeDir}`, port: String(mute.port), IdentityFile: mute.userKeyPath, ConnectTimeout: '2' });
      // A subsystem slow to answer is transient (a login shell under a storm looks the same): retried until the setup deadline.
      // The last attempt gets what is left of the deadline, at most ConnectTimeout, so its bound is not always 2000 ms.
      const m = new RegExp(`^${mute.host}:${mute.port} accepted the connection but did not answer SFTP requests within (\\d+) ms: check the server's sftp subsystem and load \\(\\d+ attempts in \\d+ s\\)$`).exec(String(a.json.Err));
      expect(m, String(a.json.Err)).not.toBeNull();
      expect(Number(m![1])).toBeGreaterThanOrEqual(1000);
      expect(Number(m![1])).toBeLessThanOrEqual(2000);
      // The volume's lock was released: the daemon answers for that name at once.
      expect((await d.call('/VolumeDriver.Get', { Name: 'mute' })).json.Err).toMatch(/no such volume: mute/);
    } finally {
      await mute.stop();
      removeSshdDir(mute);
    }
  });

  it('an unresolvable host: says dns', async () => {
    const a = await create('nodns', { ...base(), sshcmd: 'root@no-such-host.invalid:/x' });
    expect(a.json.Err).toMatch(/cannot resolve host no-such-host.invalid/);
  });

  it('check=false skips the remote at Create; the key is pinned at the first Mount', async () => {
    expect((await create('lazy', { ...base(), check: 'false' })).json).toEqual({});
    expect(await status('lazy')).toMatchObject({ host_key: 'pinned at first connection' });
    expect((await d.call('/VolumeDriver.Mount', { Name: 'lazy', ID: 'm1' })).status).toBe(200);
    expect(await status('lazy')).toMatchObject({ host_key: sshd.hostKeyFingerprint, mounts: 1 });
    expect(readFileSync(d.markerLog, 'utf8')).toContain(`hostKey=${sshd.hostKeyFingerprint}`);
    expect((await d.call('/VolumeDriver.Unmount', { Name: 'lazy', ID: 'm1' })).status).toBe(200);
  });

  it('check=false with an unreachable server: Create succeeds, Mount fails saying why', async () => {
    const port = await freePort();
    expect((await create('lazybad', { ...base(), port: String(port), check: 'false' })).json).toEqual({});
    const m = await d.call('/VolumeDriver.Mount', { Name: 'lazybad', ID: 'm1' });
    expect(m.json.Err).toMatch(/refused/);
    expect(await status('lazybad')).toMatchObject({ mounts: 0 });
  });
});

describe('Remove never touches remote data', () => {
  it('files in the remote directory survive mount, unmount and remove', async () => {
    mkdirSync(join(sshd.storeDir, 'keep'), { recursive: true });
    writeFileSync(join(sshd.storeDir, 'keep', 'model.h5'), 'weights');
    expect((await create('keeper', { ...base(), sshcmd: `root@${sshd.host}:${sshd.storeDir}/keep` })).json).toEqual({});
    expect((await d.call('/VolumeDriver.Mount', { Name: 'keeper', ID: 'k1' })).status).toBe(200);
    expect((await d.call('/VolumeDriver.Unmount', { Name: 'keeper', ID: 'k1' })).status).toBe(200);
    expect((await d.call('/VolumeDriver.Remove', { Name: 'keeper' })).json).toEqual({});
    expect(readFileSync(join(sshd.storeDir, 'keep', 'model.h5'), 'utf8')).toBe('weights');
  });
});
