// ProxyJump end to end: the real daemon mounts a store that accepts only
// connections coming through a bastion. Two real sshd: the bastion runs in a
// network namespace of its own (10.254.X.2, reached over a veth pair), the
// store on this host at 10.254.X.1 with `AllowUsers root@10.254.X.2`, so a
// direct connection (from 10.254.X.1) is turned away and only the bastion's
// forward (from 10.254.X.2) gets in. Nothing is run on either host: the hop
// is ssh2's forwardOut (a direct-tcpip channel).
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';
import { freePort, removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const tag = randomBytes(3).toString('hex');
const NS = `tsfsj${tag}`;
const VETH_HOST = `tj${tag}h`;
const VETH_NS = `tj${tag}n`;
const NET = `10.254.${randomInt(1, 255)}`;
const HOST_IP = `${NET}.1`;
const NS_IP = `${NET}.2`;
const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

let store: Sshd;
let bastion: Sshd;
let d: DaemonProc;
const status = async (Name: string) => ((await d.call('/VolumeDriver.Get', { Name })).json.Volume as { Status: Record<string, unknown> }).Status;

beforeAll(async () => {
  ip('netns', 'add', NS);
  ip('link', 'add', VETH_HOST, 'type', 'veth', 'peer', 'name', VETH_NS);
  ip('link', 'set', VETH_NS, 'netns', NS);
  ip('addr', 'add', `${HOST_IP}/30`, 'dev', VETH_HOST);
  ip('link', 'set', VETH_HOST, 'up');
  ip('netns', 'exec', NS, 'ip', 'addr', 'add', `${NS_IP}/30`, 'dev', VETH_NS);
  ip('netns', 'exec', NS, 'ip', 'link', 'set', VETH_NS, 'up');
  ip('netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up');
  store = await startSshd({ listenAddress: HOST_IP, port: await freePort(), extraConfig: `AllowUsers root@${NS_IP}` });
  bastion = await startSshd({ listenAddress: NS_IP, port: await freePort(), wrap: ['ip', 'netns', 'exec', NS] });
  // "The same key by default": the bastion also accepts the store's key.
  appendFileSync(join(bastion.dir, 'authorized_keys'), readFileSync(`${store.userKeyPath}.pub`));
  d = await startDaemon({ env: { LOG_LEVEL: 'debug' } });
}, 60_000);

afterAll(async () => {
  for (const v of ['jumped', 'own-key']) await d?.call('/VolumeDriver.Unmount', { Name: v, ID: 'job' });
  await d?.stop();
  if (d) removeDaemonDir(d.dir);
  for (const s of [bastion, store]) {
    await s?.stop();
    if (s) removeSshdDir(s);
  }
  try {
    ip('netns', 'del', NS); // takes the veth pair with it
  } catch {
    /* not created */
  }
  removeDist();
});

const storeOpts = (sub: string) => ({ sshcmd: `root@${HOST_IP}:${store.storeDir}/${sub}`, port: String(store.port), IdentityFile: store.userKeyPath, mkdir: '' });
const jump = () => `root@${NS_IP}:${bastion.port}`;

describe('ProxyJump through a bastion', () => {
  it('the store refuses a direct connection (so what follows can only have gone through the bastion)', async () => {
    const a = await d.call('/VolumeDriver.Create', { Name: 'direct', Opts: storeOpts('direct') });
    expect(a.json.Err).toMatch(new RegExp(`^authentication as root on ${HOST_IP}:${store.port} failed`));
  });

  it('create through the bastion pins both host keys, each its own', async () => {
    const a = await d.call('/VolumeDriver.Create', { Name: 'jumped', Opts: { ...storeOpts('jumped'), ProxyJump: jump() } });
    expect(a.json).toEqual({});
    expect(await status('jumped')).toMatchObject({
      host_key: store.hostKeyFingerprint,
      proxy_jump: `root@${NS_IP}:${bastion.port}`,
      jump_host_key: bastion.hostKeyFingerprint,
    });
    const steps = d.logLines().filter((l) => l.volume === 'jumped' && typeof l.step === 'string');
    expect(steps.find((l) => l.step === 'bastion')).toMatchObject({ via: `${NS_IP}:${bastion.port}` });
    expect(steps.find((l) => l.step === 'auth' && l.hop === 'bastion')).toMatchObject({ method: 'publickey' });
  });

  it('a mount through it writes to the store, and a reconnect goes through the bastion again', async () => {
    const mp = (await d.call('/VolumeDriver.Mount', { Name: 'jumped', ID: 'job' })).json.Mountpoint as string;
    await writeFile(join(mp, 'model.h5'), 'weights');
    expect(readFileSync(join(store.storeDir, 'jumped', 'model.h5'), 'utf8')).toBe('weights');
    expect(await status('jumped')).toMatchObject({ connection: 'connected', via: `${NS_IP}:${bastion.port}`, reconnects: 0 });
    // Drop the store's side of the link: only a path through the bastion can bring it back.
    store.killSessions();
    await until(async () => (await status('jumped')).reconnects === 1, 'the link re-established', { seen: () => status('jumped') });
    await writeFile(join(mp, 'after.h5'), 'again');
    expect(readFileSync(join(store.storeDir, 'jumped', 'after.h5'), 'utf8')).toBe('again');
    expect(await readFile(join(mp, 'model.h5'), 'utf8')).toBe('weights');
    // And when the bastion's side drops.
    bastion.killSessions();
    await until(async () => (await status('jumped')).reconnects === 2, 'the link re-established after the bastion dropped it', { seen: () => status('jumped') });
    await writeFile(join(mp, 'third.h5'), 'three');
    expect(readFileSync(join(store.storeDir, 'jumped', 'third.h5'), 'utf8')).toBe('three');
  });

  it('ProxyJumpIdentityFile: the bastion gets its own key; a key it refuses is named as the bastion\'s', async () => {
    const bad = await d.call('/VolumeDriver.Create', { Name: 'bad-key', Opts: { ...storeOpts('bad'), ProxyJump: jump(), ProxyJumpIdentityFile: bastion.wrongKeyPath } });
    expect(bad.json.Err).toMatch(new RegExp(`^bastion \\(ProxyJump\\) ${NS_IP}:${bastion.port}: authentication as root on ${NS_IP}:${bastion.port} failed; tried publickey \\(${bastion.wrongKeyPath}\\)`));
    const good = await d.call('/VolumeDriver.Create', { Name: 'own-key', Opts: { ...storeOpts('own'), ProxyJump: jump(), ProxyJumpIdentityFile: bastion.userKeyPath } });
    expect(good.json).toEqual({});
    const mp = (await d.call('/VolumeDriver.Mount', { Name: 'own-key', ID: 'job' })).json.Mountpoint as string;
    await writeFile(join(mp, 'f'), 'own');
    expect(readFileSync(join(store.storeDir, 'own', 'f'), 'utf8')).toBe('own');
  });

  it('a bastion presenting another key than the pinned one is refused, naming the option to change', async () => {
    const pinned = 'SHA256:' + 'A'.repeat(43);
    const a = await d.call('/VolumeDriver.Create', { Name: 'bad-pin', Opts: { ...storeOpts('pin'), ProxyJump: jump(), ProxyJumpHostKey: pinned } });
    expect(a.json.Err).toBe(
      `bastion (ProxyJump) ${NS_IP}:${bastion.port}: host key mismatch for ${NS_IP}:${bastion.port}: expected ${pinned}, the server presented ${bastion.hostKeyFingerprint}. ` +
        `If the server's key really changed, recreate the volume with -o ProxyJumpHostKey=${bastion.hostKeyFingerprint}`,
    );
  });
});
