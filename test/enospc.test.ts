// A full store: OpenSSH's sftp-server answers a WRITE that hit ENOSPC with
// the generic FAILURE, and the user must still read "No space left on
// device", not "Input/output error". The store is a 16 MiB tmpfs mounted on
// the directory the sshd serves; dd writes 40 MiB through the mount.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isMounted, mountForTest, runChild, type TestMount } from './helpers/fs-mount';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

let sshd: Sshd;
let store: string;
let m: TestMount | undefined;

beforeAll(async () => {
  sshd = await startSshd();
  store = join(sshd.storeDir, 'small');
  mkdirSync(store);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0777', 'tsfs-test-small', store]);
  m = await mountForTest(sshd, { subdir: 'small' });
});

afterAll(async () => {
  try {
    await m?.cleanup();
  } finally {
    if (store && isMounted(store)) execFileSync('umount', [store]);
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
  }
});

it('dd of 40 MiB onto a 16 MiB store says "No space left on device"', async () => {
  const r = await runChild('dd', ['if=/dev/zero', `of=${join(m!.mountpoint, 'big')}`, 'bs=1M', 'count=40', 'conv=fsync']);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/No space left on device/);
  expect(r.stderr).not.toMatch(/Input\/output error/);
  // The store holds what fitted and nothing else.
  expect(readdirSync(store)).toEqual(['big']);
});

it('after freeing space, writing works again', async () => {
  expect((await runChild('rm', [join(m!.mountpoint, 'big')])).code).toBe(0);
  const r = await runChild('dd', ['if=/dev/zero', `of=${join(m!.mountpoint, 'ok')}`, 'bs=1M', 'count=4', 'conv=fsync']);
  expect({ code: r.code, err: r.stderr.includes('error') }).toEqual({ code: 0, err: false });
});
