// The production daemon (real SFTP filesystem) killed with SIGKILL while a
// volume is mounted, then started again: the socket answers at once, dead
// FUSE mounts under the mount root are detached, the mount-ID set comes back
// from the state file and the volume is remounted for new containers. Also:
// a server that comes back with another host key shows in Status with both
// fingerprints; and with LOG_LEVEL=trace no password or passphrase appears in
// anything the daemon printed or answered.
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type Answer, type DaemonProc } from './helpers/daemon';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const PASSPHRASE = 'pp-Crash-Qx8-distinctive';
const PASSWORD = 'pw-Crash-Vk3-distinctive';
let sshd: Sshd;
let other: Sshd | undefined;
let d: DaemonProc;
let dir: string;
let keyPath: string;
const printed: string[] = [];
const answers: Answer[] = [];

const call = async (endpoint: string, body?: unknown) => {
  const a = await d.call(endpoint, body);
  answers.push(a);
  return a;
};
const status = async (Name: string) => ((await call('/VolumeDriver.Get', { Name })).json.Volume as { Status: Record<string, unknown> }).Status;
const mountsUnder = (root: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(root + '/'));
const errnoAt = (p: string) => stat(p).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code);
const env = { LOG_LEVEL: 'trace' };

beforeAll(async () => {
  sshd = await startSshd();
  // A passphrase-protected user key, so the passphrase is a secret in play.
  keyPath = join(sshd.dir, 'pp_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', PASSPHRASE, '-C', 'pp', '-f', keyPath]);
  appendFileSync(join(sshd.dir, 'authorized_keys'), readFileSync(`${keyPath}.pub`));
  d = await startDaemon({ env });
  dir = d.dir;
});
afterAll(async () => {
  if (d) {
    await d.stop();
    printed.push(d.stdout(), d.stderr());
    removeDaemonDir(dir);
  }
  await other?.stop();
  if (other) removeSshdDir(other);
  await sshd?.stop();
  if (sshd) removeSshdDir(sshd);
  removeDist();
});

describe('daemon killed with SIGKILL', () => {
  it('comes back: socket answers, no ENOTCONN under the mount root, IDs restored, remounted for new mount IDs', async () => {
    const Opts = {
      sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: keyPath, passphrase: PASSPHRASE,
      ServerAliveInterval: '1', reconnect_timeout: '5',
    };
    expect((await call('/VolumeDriver.Create', { Name: 'crash', Opts })).json).toEqual({});
    const mp = (await call('/VolumeDriver.Mount', { Name: 'crash', ID: 'c1' })).json.Mountpoint as string;
    expect((await call('/VolumeDriver.Mount', { Name: 'crash', ID: 'c2' })).status).toBe(200);
    await writeFile(join(mp, 'before-crash.txt'), 'kept');
    // A dead mount under the root that belongs to no volume (a removed one, say): sshfs killed hard.
    const orphan = join(d.mountRoot, 'orphan');
    execFileSync('mkdir', ['-p', orphan]);
    const sshfs = spawn('sshfs', ['-f', '-o', `IdentityFile=${sshd.userKeyPath},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,port=${sshd.port}`, `root@${sshd.host}:${sshd.storeDir}`, orphan], { stdio: 'ignore' });
    await until(() => mountsUnder(d.mountRoot).includes(orphan), 'sshfs mounted');
    sshfs.kill('SIGKILL');
    await new Promise((r) => sshfs.once('exit', r));

    expect(await d.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    printed.push(d.stdout(), d.stderr());
    expect(await errnoAt(mp)).toBe('ENOTCONN');
    expect(await errnoAt(orphan)).toBe('ENOTCONN');

    d = await startDaemon({ dir, env });
    console.log(`daemon restart after SIGKILL: Plugin.Activate answered ${d.readyMs} ms after spawn`);
    await until(async () => (await status('crash')).connection === 'connected', 'restored');
    for (const name of readdirSync(d.mountRoot)) expect(await errnoAt(join(d.mountRoot, name))).not.toBe('ENOTCONN');
    expect(mountsUnder(d.mountRoot)).toEqual([mp]);
    const state = JSON.parse(readFileSync(join(d.stateDir, 'tsfs.json'), 'utf8')) as { volumes: { name: string; mountIds: string[] }[] };
    expect(state.volumes.find((v) => v.name === 'crash')?.mountIds.sort()).toEqual(['c1', 'c2']);
    expect(await status('crash')).toMatchObject({ mounts: 2 });
    // A new container's mount works at once and sees what was written before the crash.
    expect((await call('/VolumeDriver.Mount', { Name: 'crash', ID: 'c3' })).json).toEqual({ Mountpoint: mp });
    expect(await readFile(join(mp, 'before-crash.txt'), 'utf8')).toBe('kept');
    expect(await status('crash')).toMatchObject({ mounts: 3 });
  });

  it('a server that comes back with another host key: operations fail with EIO, Status names both fingerprints', async () => {
    const mp = join(d.mountRoot, 'crash');
    const pinned = sshd.hostKeyFingerprint;
    await sshd.stop();
    other = await startSshd({ port: sshd.port });
    const l = await readdirOrCode(mp);
    expect(l).toBe('EIO');
    const s = await status('crash');
    expect(s.connection).toBe('reconnecting');
    expect(String(s.last_error)).toMatch(/host key mismatch/);
    expect(String(s.last_error)).toContain(pinned);
    expect(String(s.last_error)).toContain(other.hostKeyFingerprint);
    // The right server back: the same mount recovers without a remount.
    await other.stop();
    await sshd.restart();
    await until(async () => (await status('crash')).connection === 'connected', 'reconnected to the right server');
    expect(await readFile(join(mp, 'before-crash.txt'), 'utf8')).toBe('kept');
    expect((await status('crash')).last_error).toBeUndefined();
  });

  it('failures say what went wrong without the secret', async () => {
    const bad = await call('/VolumeDriver.Create', {
      Name: 'badpw',
      Opts: { sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), password: PASSWORD, IdentityFile: join(sshd.dir, 'nope') },
    });
    expect(bad.json.Err).toMatch(/cannot read IdentityFile/);
    const wrong = await call('/VolumeDriver.Create', {
      Name: 'badpw',
      Opts: { sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), password: PASSWORD },
    });
    expect(wrong.json.Err).toMatch(/authentication as root .* failed/);
    const badPass = await call('/VolumeDriver.Create', {
      Name: 'badpp',
      Opts: { sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: keyPath, passphrase: PASSWORD },
    });
    expect(badPass.json.Err).toBeTruthy();
    for (const ID of ['c1', 'c2', 'c3']) expect((await call('/VolumeDriver.Unmount', { Name: 'crash', ID })).status).toBe(200);
    expect((await call('/VolumeDriver.Remove', { Name: 'crash' })).json).toEqual({});
  });

  it('with LOG_LEVEL=trace, no password, passphrase or key material appears in any output or answer', async () => {
    await d.stop();
    printed.push(d.stdout(), d.stderr());
    const all = printed.join('\n') + answers.map((a) => a.text).join('\n');
    expect(all.length).toBeGreaterThan(1000);
    const key = readFileSync(keyPath, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----'));
    for (const secret of [PASSPHRASE, PASSWORD, ...key]) expect(all).not.toContain(secret);
    d = await startDaemon({ dir, env });
  });
});

/** readdir in a child (ls): 'ok' or the errno name it failed with. */
async function readdirOrCode(p: string): Promise<string> {
  return new Promise((resolve) => {
    const c = spawn('ls', [p], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    c.once('exit', (code) => resolve(code === 0 ? 'ok' : /Input\/output error/.test(err) ? 'EIO' : err));
  });
}
