// The same POSIX scenario against a second real SFTP server with a different
// extension set: Green End SFTP server (gesftpserver) as sshd's Subsystem.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSsh } from '../src/sftp/connect';
import { listMounts, localDir, mountStore, probe, targetOf, type TestMount } from './helpers/mount';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

const GESFTP = '/usr/libexec/gesftpserver';
let sshd: Sshd;
let m: TestMount;
let ext: Set<string>;
const locals: string[] = [];

describe.skipIf(!existsSync(GESFTP))('gesftpserver', () => {
  beforeAll(async () => {
    sshd = await startSshd({ sftpServer: GESFTP });
    const link = await connectSsh(targetOf(sshd));
    ext = link.extensionsOf(await link.openSftp());
    link.close();
    m = await mountStore(targetOf(sshd));
  });
  afterAll(async () => {
    await m?.unmount();
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    for (const d of locals) rmSync(d, { recursive: true, force: true });
    if (m) expect(listMounts().filter((l) => l.includes(m.mountpoint))).toEqual([]);
  });

  it('lists what this server cannot do', () => {
    // What gesftpserver does not offer compared with OpenSSH, and what the
    // filesystem does instead.
    const missing = ['statvfs@openssh.com', 'fsync@openssh.com', 'hardlink@openssh.com', 'limits@openssh.com'].filter((e) => !ext.has(e));
    console.log('gesftpserver extensions:', [...ext].join(' '), '| missing:', missing.join(' '));
    expect(ext.size).toBeGreaterThan(0);
  });

  it('basic scenario matches a local directory, minus the listed missing features', async () => {
    mkdirSync(join(sshd.storeDir, 'basic'));
    // Without hardlink@openssh.com link() gives EPERM (like a local fs without
    // hard links), so the hardlink steps are left out here.
    const skip = ext.has('hardlink@openssh.com') ? [] : ['hardlink', 'hardlink exists', 'hardlink shares data', 'unlink one link'];
    const l = localDir();
    locals.push(l);
    const want = await probe('basic', l, { skip });
    const got = await probe('basic', join(m.mountpoint, 'basic'), { skip });
    expect(got).toEqual(want);
    expect(readFileSync(join(sshd.storeDir, 'basic', 'two')).length).toBe(150000);
  });
});
