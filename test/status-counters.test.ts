// Status counters (`docker volume inspect`) of a mounted volume, from the
// real daemon: they move by what a job does through the mount, and say what
// the connection negotiated.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const run = promisify(execFile);
let sshd: Sshd;
let d: DaemonProc;
let mp: string;
type Status = Record<string, unknown> & { operations_by_type: Record<string, number>; errors: Record<string, number> };
const status = async () => ((await d.call('/VolumeDriver.Get', { Name: 'counted' })).json.Volume as { Status: Status }).Status;

beforeAll(async () => {
  sshd = await startSshd();
  d = await startDaemon({ env: { LOG_LEVEL: 'info' } });
  const Opts = { sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath, ServerAliveInterval: '1' };
  expect((await d.call('/VolumeDriver.Create', { Name: 'counted', Opts })).json).toEqual({});
  mp = (await d.call('/VolumeDriver.Mount', { Name: 'counted', ID: 'job' })).json.Mountpoint as string;
});
afterAll(async () => {
  await d?.call('/VolumeDriver.Unmount', { Name: 'counted', ID: 'job' });
  await d?.stop();
  if (d) removeDaemonDir(d.dir);
  await sshd?.stop();
  if (sshd) removeSshdDir(sshd);
  removeDist();
});

describe('Status of a mounted volume', () => {
  it('says what was negotiated: cipher, server, SFTP extensions; nothing counted yet but the mount\'s own lookups', async () => {
    const s = await status();
    expect(s).toMatchObject({ connection: 'connected', cipher: 'aes128-gcm@openssh.com', bytes_read: 0, bytes_written: 0, reconnects: 0 });
    expect(String(s.server)).toMatch(/^SSH-2.0-OpenSSH_/);
    expect(s.sftp_extensions).toEqual(expect.arrayContaining(['posix-rename@openssh.com', 'statvfs@openssh.com', 'fsync@openssh.com', 'limits@openssh.com']));
  });

  it('bytes written and operations move by what a write did', async () => {
    const before = await status();
    const data = randomBytes(300_000);
    await writeFile(join(mp, 'model.h5'), data);
    const after = await status();
    expect((after.bytes_written as number) - (before.bytes_written as number)).toBe(300_000);
    expect((after.operations_by_type.create ?? 0) - (before.operations_by_type.create ?? 0)).toBe(1);
    expect(after.operations_by_type.write).toBeGreaterThan(0);
    expect(after.operations as number).toBeGreaterThan(before.operations as number);
    // And the data is what the server holds.
    expect((await readFile(join(sshd.storeDir, 'model.h5'))).equals(data)).toBe(true);
  });

  it('bytes read move by what a read fetched from the server', async () => {
    const before = await status();
    await writeFile(join(sshd.storeDir, 'fresh.bin'), randomBytes(200_000));
    expect((await readFile(join(mp, 'fresh.bin'))).length).toBe(200_000);
    const after = await status();
    // Readahead may fetch past what was asked, never less than the file.
    expect((after.bytes_read as number) - (before.bytes_read as number)).toBeGreaterThanOrEqual(200_000);
  });

  it('errors are counted by errno name, and a failure other than a routine "no" sets last_error_at', async () => {
    await mkdir(join(mp, 'full'));
    await writeFile(join(mp, 'full', 'f'), 'x');
    await expect(rmdir(join(mp, 'full'))).rejects.toMatchObject({ code: 'ENOTEMPTY' });
    const s = await status();
    expect(s.errors.ENOTEMPTY).toBe(1);
    // ENOTEMPTY is how rmdir says no: it is counted but is not "the last error".
    expect(s.last_error_at).toBeUndefined();
    // SFTP cannot make a FIFO: EPERM, a real failure, which Status dates.
    const t0 = Date.now();
    await expect(run('mkfifo', [join(mp, 'fifo')])).rejects.toThrow(/Operation not permitted/);
    const s2 = await status();
    expect(s2.errors.EPERM).toBe(1);
    expect(s2.last_errno).toBe('EPERM');
    expect(Date.parse(String(s2.last_error_at))).toBeGreaterThanOrEqual(t0 - 1000);
  });

  it('round-trip time to the store is measured', async () => {
    await until(async () => typeof (await status()).rtt_ms === 'number', 'an RTT sample');
    const s = await status();
    expect(s.rtt_ms as number).toBeGreaterThan(0);
    expect(s.rtt_min_ms as number).toBeLessThanOrEqual(s.rtt_ms as number);
  });

  it('reconnects count a lost link that came back', async () => {
    sshd.killSessions();
    await until(async () => (await status()).reconnects === 1, 'one reconnect', { seen: status });
    await writeFile(join(mp, 'after.txt'), 'ok');
    expect(await readFile(join(sshd.storeDir, 'after.txt'), 'utf8')).toBe('ok');
  });
});
