// What each LOG_LEVEL holds, from the real daemon serving a real mount:
// the sequence dockerd sends for `docker volume create` and `docker run -v`
// (Get of the unknown name, Create, Get, Mount), a write through the mount,
// a refused rmdir, and Unmount, once per level.
import { mkdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon } from './helpers/daemon';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

type Line = Record<string, unknown>;
let sshd: Sshd;
const logs: Record<string, Line[]> = {};

async function session(level: string): Promise<Line[]> {
  const d = await startDaemon({ env: { LOG_LEVEL: level } });
  try {
    const Name = `lv-${level}`;
    const Opts = { sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath };
    // dockerd asks Get first, and learns from "no such volume" that it must Create.
    expect((await d.call('/VolumeDriver.Get', { Name })).status).toBe(500);
    expect((await d.call('/VolumeDriver.Create', { Name, Opts })).json).toEqual({});
    expect((await d.call('/VolumeDriver.Get', { Name })).status).toBe(200);
    const m = await d.call('/VolumeDriver.Mount', { Name, ID: 'job-1' });
    const mp = m.json.Mountpoint as string;
    // This process does not serve the mount (the daemon does), so plain fs calls are safe here.
    await writeFile(join(mp, `${level}.txt`), 'x'.repeat(10_000));
    await mkdir(join(mp, `${level}-dir`));
    await writeFile(join(mp, `${level}-dir`, 'f'), 'y');
    await expect(rmdir(join(mp, `${level}-dir`))).rejects.toMatchObject({ code: 'ENOTEMPTY' });
    expect((await d.call('/VolumeDriver.Unmount', { Name, ID: 'job-1' })).json).toEqual({});
    await d.stop();
    return d.logLines();
  } finally {
    await d.stop();
    removeDaemonDir(d.dir);
  }
}

beforeAll(async () => {
  sshd = await startSshd();
  for (const level of ['info', 'debug', 'trace']) logs[level] = await session(level);
}, 120_000);
afterAll(async () => {
  await sshd?.stop();
  if (sshd) removeSshdDir(sshd);
  removeDist();
});

const at = (lines: Line[], level: string) => lines.filter((l) => l.level === level);

describe.each(['info', 'debug', 'trace'])('LOG_LEVEL=%s', (level) => {
  it('a normal create, mount, write and unmount logs no warning or error', () => {
    const bad = logs[level].filter((l) => ['warn', 'error', 'fatal'].includes(String(l.level)));
    expect(bad).toEqual([]);
  });
  it('info: one line per call that changes state, with volume, mount ID and duration', () => {
    const requests = at(logs[level], 'info').filter((l) => l.msg === 'request');
    expect(requests.map((l) => l.endpoint)).toEqual(['/Plugin.Activate', '/VolumeDriver.Create', '/VolumeDriver.Mount', '/VolumeDriver.Unmount']);
    for (const r of requests.slice(1)) {
      expect(r).toMatchObject({ volume: `lv-${level}`, outcome: 'ok' });
      expect(typeof r.ms).toBe('number');
    }
    expect(requests[2].mountId).toBe('job-1');
    expect(requests[3].mountId).toBe('job-1');
    // Besides the calls: start, the key pinned at create, stop.
    expect(at(logs[level], 'info').filter((l) => l.msg !== 'request').map((l) => l.msg)).toEqual([
      'listening', 'pinned host key seen at create', 'shutting down: unmounting volumes and saving state', 'stopped',
    ]);
  });
});

describe('LOG_LEVEL=info', () => {
  it('holds nothing below info', () => {
    expect(logs.info.filter((l) => l.level === 'debug' || l.level === 'trace')).toEqual([]);
  });
});

describe.each(['debug', 'trace'])('LOG_LEVEL=%s', (level) => {
  it('has the Get of the unknown volume at debug, not as a warning', () => {
    const get = at(logs[level], 'debug').find((l) => l.endpoint === '/VolumeDriver.Get' && l.status === 500);
    expect(get).toMatchObject({ volume: `lv-${level}`, msg: 'request failed' });
    expect(String(get!.err)).toMatch(/^no such volume/);
  });
  it('has each connection step with its time, for the create-time check, and the mount taking that connection over', () => {
    const steps = at(logs[level], 'debug').filter((l) => typeof l.step === 'string');
    for (const s of steps) expect(typeof s.ms).toBe('number');
    // Once: at Create (the check); the Mount right after it uses that connection (src/sftp/handoff.ts).
    const count = (name: string) => steps.filter((s) => s.step === name).length;
    expect(count('tcp')).toBe(1);
    expect(count('banner')).toBe(1);
    expect(at(logs[level], 'debug').find((l) => l.msg === 'mounting over the connection the check left open')).toMatchObject({ volume: `lv-${level}` });
    expect(steps.find((s) => s.step === 'banner')!.server).toMatch(/^SSH-2.0-OpenSSH_/);
    expect(steps.find((s) => s.step === 'handshake')).toMatchObject({ cipher: 'aes128-gcm@openssh.com', hostKeyAlgorithm: 'ssh-ed25519' });
    expect(steps.filter((s) => s.step === 'auth').map((s) => s.method)).toEqual(['publickey']);
    const sftp = steps.find((s) => s.step === 'sftp');
    expect(sftp!.extensions).toContain('posix-rename@openssh.com');
    expect(sftp!.volume).toBe(`lv-${level}`);
  });
});

describe('LOG_LEVEL=debug', () => {
  it('holds no per-operation lines', () => {
    expect(logs.debug.filter((l) => l.level === 'trace')).toEqual([]);
  });
});

describe('LOG_LEVEL=trace', () => {
  it('has one line per filesystem operation with its errno', () => {
    const ops = at(logs.trace, 'trace').filter((l) => l.msg === 'fs op');
    expect(ops.find((l) => l.op === 'create' && l.path === '/trace.txt')).toMatchObject({ errno: 0, volume: 'lv-trace' });
    const written = ops.filter((l) => l.op === 'write' && l.path === '/trace.txt').reduce((n, l) => n + Number(l.bytes), 0);
    expect(written).toBe(10_000);
    expect(ops.find((l) => l.op === 'rmdir')).toMatchObject({ path: '/trace-dir', errno: 'ENOTEMPTY' });
  });
});
