// An Unmount that dockerd abandons (it closes the request before the answer)
// runs to the end (src/driver.ts, unmount): dockerd sends a failed Unmount's
// ID again only with the container's next Mount, so an Unmount undone would
// keep the ID forever and pin the volume. Real daemon, real SFTP filesystem,
// real sshd; the Unmount is held mid-way by writes queued on a stalled link
// (the sftp-server is stopped with SIGSTOP, then let go).
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const isMounted = (p: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('an Unmount that dockerd abandons', () => {
  let sshd: Sshd;
  let d: DaemonProc;
  // sftp-server started through a wrapper that notes its PID, so the test can stall (SIGSTOP) and resume (SIGCONT) the link.
  const wrapDir = mkdtempSync(join(tmpdir(), 'tsfs-sftp-wrap-'));
  const pidFile = join(wrapDir, 'pids');
  const wrapper = join(wrapDir, 'sftp-server');
  const sftpServers = () => readFileSync(pidFile, 'utf8').split('\n').filter(Boolean).map(Number);
  const signalAll = (sig: NodeJS.Signals) => {
    for (const pid of sftpServers()) {
      try {
        process.kill(pid, sig);
      } catch {
        /* exited */
      }
    }
  };
  beforeAll(async () => {
    writeFileSync(pidFile, '');
    chmodSync(wrapDir, 0o755);
    writeFileSync(wrapper, `#!/bin/sh\necho $$ >> '${pidFile}'\nexec /usr/lib/openssh/sftp-server "$@"\n`, { mode: 0o755 });
    sshd = await startSshd({ sftpServer: wrapper });
    d = await startDaemon();
  });
  afterAll(async () => {
    signalAll('SIGCONT');
    await d?.stop();
    if (d) removeDaemonDir(d.dir);
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    rmSync(wrapDir, { recursive: true, force: true });
    removeDist();
  });

  it('runs to the end: no ID kept, the filesystem unmounted, the queued data on the store, Remove works', async () => {
    const Name = 'unmount-abandoned';
    const Opts = { sshcmd: `${sshd.user}@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath, StrictHostKeyChecking: 'no' };
    expect((await d.call('/VolumeDriver.Create', { Name, Opts })).status).toBe(200);
    const m = await d.call('/VolumeDriver.Mount', { Name, ID: 'm1' });
    expect(m.json.Err).toBeUndefined();
    const mp = m.json.Mountpoint as string;
    expect(isMounted(mp)).toBe(true);
    const status = async () => ((await d.call('/VolumeDriver.Get', { Name })).json.Volume as { Status: Record<string, unknown> }).Status;

    // A file whose writes are queued (write-behind) while the link is stalled;
    // its close(2) waits for them, as the Unmount's drain does. This process
    // only does async I/O on the mount, which the daemon (another process) serves.
    const data = randomBytes(256 * 1024);
    const fh = await open(join(mp, 'model.h5'), 'w');
    signalAll('SIGSTOP');
    await fh.write(data, 0, data.length, 0);
    const closed = fh.close();

    const req = request({ socketPath: d.socket, method: 'POST', path: '/VolumeDriver.Unmount', headers: { Accept: 'application/vnd.docker.plugins.v1.2+json' } });
    const answered = new Promise<string>((resolve) => {
      req.on('response', () => resolve('answered'));
      req.on('error', () => resolve('closed'));
      req.on('close', () => resolve('closed'));
    });
    req.end(JSON.stringify({ Name, ID: 'm1' }));
    // Mid-way: the ID is dropped but the filesystem still waits for its queued writes.
    await until(async () => (await status()).mounts === 0 && isMounted(mp), 'the Unmount to start and wait for the queued writes', { seen: status });
    req.destroy(); // dockerd gives up
    expect(await answered).toBe('closed');
    signalAll('SIGCONT'); // the link comes back; the writes land
    await closed;
    // Unmount is serialised per volume: this one (an ID the daemon does not
    // hold, which is harmless) is answered only once the abandoned one is done.
    expect((await d.call('/VolumeDriver.Unmount', { Name, ID: 'probe' })).status).toBe(200);

    expect(await status()).toMatchObject({ mounts: 0, connection: 'unmounted' });
    expect(isMounted(mp)).toBe(false);
    expect(sha256(readFileSync(join(sshd.storeDir, 'model.h5')))).toBe(sha256(data));
    // Nothing pins the volume: docker volume rm works.
    const r = await d.call('/VolumeDriver.Remove', { Name });
    expect(r.json.Err).toBeUndefined();
    expect(r.status).toBe(200);
  });
});
