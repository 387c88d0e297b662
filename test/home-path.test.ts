// `~` and `~/path` in sshcmd mean the SSH user's home directory, at Create
// (also with -o mkdir) and at mount: through expand-path@openssh.com on
// OpenSSH's sftp server, through realpath(".") on gesftpserver, which does
// not offer it. The user is a throwaway one whose home is a temp directory,
// so nothing is written to a real home.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSsh } from '../src/sftp/connect';
import { probeRemote } from '../src/sftp/probe';
import { mountForTest, runChild, targetFor } from './helpers/fs-mount';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

// A user of its own per server: userdel after the first block can fail while
// a session process of the user is still exiting (the error was swallowed),
// and the second block's useradd of the same name then failed (CI run 7 of 10).
const run = randomBytes(3).toString('hex');
const SERVERS = [
  { name: 'OpenSSH (internal-sftp)', sftpServer: undefined, expandPath: true, USER: `tsfs-h${run}o` },
  { name: 'gesftpserver', sftpServer: '/usr/libexec/gesftpserver', expandPath: false, USER: `tsfs-h${run}g` },
];

describe.each(SERVERS)('~ in sshcmd on $name', ({ sftpServer, expandPath, USER }) => {
  let sshd: Sshd;
  let home: string;
  beforeAll(async () => {
    sshd = await startSshd({ ...(sftpServer && { sftpServer }) });
    home = join(sshd.dir, 'home');
    mkdirSync(home);
    // -p '*': no password, but not locked ('!'), which sshd would refuse for key authentication too.
    execFileSync('useradd', ['-M', '-d', home, '-s', '/bin/sh', '-p', '*', USER]);
    chmodSync(home, 0o755);
    execFileSync('chown', [USER, home]);
    home = realpathSync(home);
  });
  afterAll(async () => {
    await sshd?.stop();
    try {
      // -f: also while a session process of the user is still exiting.
      execFileSync('userdel', ['-f', USER]);
    } catch {
      /* not created */
    }
    if (sshd) removeSshdDir(sshd);
  });
  const target = (remotePath: string) => ({ ...targetFor({ ...sshd, user: USER }, remotePath) });

  it(`the server ${expandPath ? 'offers' : 'does not offer'} expand-path@openssh.com`, async () => {
    const link = await connectSsh(target(''));
    try {
      expect(link.extensionsOf(await link.openSftp()).has('expand-path@openssh.com')).toBe(expandPath);
    } finally {
      link.close();
    }
  });

  it('~ alone is the home directory', async () => {
    expect((await probeRemote(target('~'), { mkdir: false })).realPath).toBe(home);
  });

  it('~/missing says the expanded directory does not exist, and -o mkdir creates it inside the home (no directory named ~)', async () => {
    await expect(probeRemote(target('~/jobs/7'), { mkdir: false })).rejects.toThrow(`remote directory ${home}/jobs/7 does not exist`);
    expect((await probeRemote(target('~/jobs/7'), { mkdir: true })).realPath).toBe(`${home}/jobs/7`);
    expect(existsSync(join(home, 'jobs/7'))).toBe(true);
    expect(existsSync(join(home, '~'))).toBe(false);
  });

  it('a mount of ~/jobs/7 writes into the home directory', async () => {
    const m = await mountForTest({ ...sshd, user: USER }, { remotePath: '~/jobs/7' });
    try {
      const w = await runChild('sh', ['-c', `echo model > ${m.mountpoint}/model.h5`]);
      expect(w.code).toBe(0);
      expect(readFileSync(join(home, 'jobs/7/model.h5'), 'utf8')).toBe('model\n');
    } finally {
      await m.cleanup();
    }
  });
});

describe('~otheruser', () => {
  let sshd: Sshd;
  beforeAll(async () => {
    sshd = await startSshd({ sftpServer: '/usr/libexec/gesftpserver' });
  });
  afterAll(async () => {
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
  });
  it('without expand-path: says to give the absolute path', async () => {
    await expect(probeRemote(targetFor(sshd, '~nobody/x'), { mkdir: false })).rejects.toThrow(/~nobody in sshcmd needs the server's expand-path@openssh.com extension/);
  });
  it('with expand-path (OpenSSH): resolves another user\'s home', async () => {
    const s = await startSshd();
    try {
      expect((await probeRemote(targetFor(s, '~root'), { mkdir: false })).realPath).toBe('/root');
    } finally {
      await s.stop();
      removeSshdDir(s);
    }
  });
});
