// Directory listings with READDIRs pipelined (src/sftp/listing.ts), against
// real servers: OpenSSH's internal-sftp, which answers in order with at most
// 100 names per READDIR, and gesftpserver, which runs requests on threads.
// Every size around the 100-name batches comes back whole, errors are the
// server's, and no directory handle is left open on the server.
import { mkdirSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { SFTPWrapper } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSsh, type SshLink } from '../src/sftp/connect';
import { listDirectory } from '../src/sftp/listing';
import { sftpCall } from '../src/sftp/session';
import { targetFor } from './helpers/fs-mount';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const SIZES = [0, 1, 97, 98, 99, 100, 101, 199, 200, 201, 350, 1001];

/** Paths under `dir` that some process holds open (only this test's server can: the directory is its own). */
function openDirsUnder(dir: string): string[] {
  const held: string[] = [];
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone meanwhile
    }
    for (const fd of fds) {
      try {
        const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (target.startsWith(dir)) held.push(target);
      } catch {
        // closed meanwhile
      }
    }
  }
  return held;
}

for (const server of [
  { name: 'OpenSSH internal-sftp', sftpServer: undefined },
  { name: 'gesftpserver', sftpServer: '/usr/libexec/gesftpserver' },
]) {
  describe(`directory listings, ${server.name}`, () => {
    let sshd: Sshd;
    let link: SshLink;
    let sftp: SFTPWrapper;
    let root: string;

    beforeAll(async () => {
      sshd = await startSshd(server.sftpServer ? { sftpServer: server.sftpServer } : {});
      root = join(sshd.storeDir, 'listing');
      for (const n of SIZES) {
        mkdirSync(join(root, `d${n}`), { recursive: true });
        for (let i = 0; i < n; i++) writeFileSync(join(root, `d${n}`, `f${i}`), '');
      }
      link = await connectSsh(targetFor(sshd, sshd.storeDir));
      sftp = await link.openSftp();
    });
    afterAll(async () => {
      link?.close();
      await sshd?.stop();
      if (sshd) removeSshdDir(sshd);
    });

    it.each([1, 3, 8])('gives every name once, without . and .., whatever the size (window %i)', async (window) => {
      for (const n of SIZES) {
        const dir = join(root, `d${n}`);
        const names = (await listDirectory(sftp, dir, window)).map((e) => e.filename).sort();
        expect(names, dir).toEqual(readdirSync(dir).sort());
      }
    });

    it('gives each name its attributes', async () => {
      writeFileSync(join(root, 'd1', 'f0'), 'twelve bytes');
      const [e] = await listDirectory(sftp, join(root, 'd1'));
      expect(e.filename).toBe('f0');
      expect(e.attrs.size).toBe(12);
    });

    it("answers with the server's error for a missing directory and for a file", async () => {
      await expect(listDirectory(sftp, join(root, 'nope'))).rejects.toMatchObject({ code: 2 });
      await expect(listDirectory(sftp, join(root, 'd1', 'f0'))).rejects.toThrow();
    });

    it('leaves no directory handle open on the server', async () => {
      await Promise.all(SIZES.map((n) => listDirectory(sftp, join(root, `d${n}`))));
      // The CLOSE is not waited for by the listing: it follows shortly.
      await until(() => openDirsUnder(root).length === 0, 'every listed directory closed on the server', {
        withinMs: 5000,
        seen: () => openDirsUnder(root),
      });
    });

    it('sees a directory handle left open (so the check above can fail)', async () => {
      const h = await promisify(sftp.opendir.bind(sftp))(join(root, 'd1'));
      await until(() => openDirsUnder(root).length === 1, 'the open handle seen', { withinMs: 5000, seen: () => openDirsUnder(root) });
      await sftpCall.close(sftp, h);
      await until(() => openDirsUnder(root).length === 0, 'the handle closed', { withinMs: 5000, seen: () => openDirsUnder(root) });
    });
  });
}
