import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { connectSsh, ConnectError } from '../src/sftp/connect';
import type { SshTarget } from '../src/sftp/target';
import { startSshd, removeSshdDir, freePort, type Sshd } from './helpers/sshd';

let sshd: Sshd;
beforeAll(async () => { sshd = await startSshd(); });
afterAll(async () => { await sshd?.stop(); if (sshd) removeSshdDir(sshd); });

function target(over: Partial<SshTarget> = {}): SshTarget {
  return {
    host: sshd.host, port: sshd.port, username: sshd.user, remotePath: sshd.storeDir,
    privateKey: readFileSync(sshd.userKeyPath), identityFile: sshd.userKeyPath,
    strictHostKeyChecking: 'accept-new', keepaliveInterval: 0, keepaliveCountMax: 3, connectTimeout: 5000,
    ...over,
  };
}

async function failure(t: SshTarget): Promise<ConnectError> {
  try { (await connectSsh(t)).close(); } catch (e) { return e as ConnectError; }
  throw new Error('connected, but a failure was expected');
}

describe('connectSsh against a real OpenSSH sshd', () => {
  it('connects, reports the same host key fingerprint as ssh-keygen, and opens SFTP', async () => {
    const link = await connectSsh(target());
    try {
      expect(link.hostKey).toBe(sshd.hostKeyFingerprint);
      const sftp = await link.openSftp();
      expect(link.extensionsOf(sftp).has('posix-rename@openssh.com')).toBe(true);
    } finally { link.close(); }
  });
  it('accepts the pinned key with StrictHostKeyChecking=yes', async () => {
    (await connectSsh(target({ strictHostKeyChecking: 'yes', hostKey: sshd.hostKeyFingerprint }))).close();
  });
  it('refuses a different pinned key, naming both fingerprints', async () => {
    const e = await failure(target({ hostKey: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }));
    expect(e.code).toBe('host-key-mismatch');
    expect(e.message).toContain(sshd.hostKeyFingerprint);
    expect(e.message).toContain('SHA256:AAAA');
  });
  it('refuses an unpinned key with StrictHostKeyChecking=yes', async () => {
    expect((await failure(target({ strictHostKeyChecking: 'yes' }))).code).toBe('host-key-unknown');
  });
  it('names the key file when authentication fails', async () => {
    const e = await failure(target({ privateKey: readFileSync(sshd.wrongKeyPath), identityFile: sshd.wrongKeyPath }));
    expect(e.code).toBe('auth');
    expect(e.message).toContain(sshd.wrongKeyPath);
  });
  it('says refused for a closed port', async () => {
    expect((await failure(target({ port: await freePort() }))).code).toBe('refused');
  });
  it('says dns for an unresolvable name', async () => {
    expect((await failure(target({ host: 'no-such-host.invalid' }))).code).toBe('dns');
  });
});
