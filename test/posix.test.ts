// POSIX behaviour of the SFTP filesystem against a real OpenSSH sshd: every
// probe scenario (test/helpers/posix-scenarios.mjs) runs on a local directory and
// on the mount, in child processes, and the two answers must be equal step by
// step; then the server's directory must hold exactly what the local one
// holds (type, mode, size, sha256, symlink targets). Plus what only a mount
// has: permission checks for other uids (allow_other), read-only mounts,
// uid/gid/umask mapping, and Docker's chown/chmod of the volume root.
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffSteps, fuseMounts, localScratch, mountForTest, probe, runChild, treeOf, type TestMount } from './helpers/fs-mount';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
// @ts-ignore -- plain ESM helper without types; vitest loads it
import { COMPARED } from './helpers/posix-scenarios.mjs';

const NOBODY = { uid: 65534, gid: 65534 };

let sshd: Sshd;
let local: { dir: string; remove(): void };
let m: TestMount | undefined;
const mounts: string[] = [];

beforeAll(async () => {
  sshd = await startSshd();
  local = localScratch();
  m = await mountForTest(sshd, { subdir: 'posix' });
  mounts.push(m.mountpoint);
});

afterAll(async () => {
  try {
    await m?.cleanup();
  } finally {
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    local?.remove();
  }
  expect(fuseMounts().filter((l) => mounts.some((p) => l.includes(p)))).toEqual([]);
});

/** Make the scenario's directory through the mount (so its caches learn of it the normal way). */
async function scenarioDirs(name: string): Promise<{ l: string; r: string; server: string }> {
  const l = join(local.dir, name);
  mkdirSync(l);
  const r = join(m!.mountpoint, name);
  const mk = await runChild('mkdir', [r]);
  expect(mk.stderr).toBe('');
  return { l, r, server: join(m!.remoteDir, name) };
}

describe('POSIX calls through the mount answer as a local directory does (OpenSSH sftp-server)', () => {
  for (const name of COMPARED as string[]) {
    it(name, async () => {
      const { l, r, server } = await scenarioDirs(name);
      const want = await probe(name, l);
      const got = await probe(name, r);
      expect(diffSteps(name, want, got)).toEqual([]);
      // What landed on the server is byte for byte what landed locally.
      expect(treeOf(server)).toEqual(treeOf(l));
    });
  }

  it('another uid meets the same permission checks (EACCES) as on a local directory', async () => {
    const { l, r, server } = await scenarioDirs('perm');
    expect(diffSteps('perm-setup', await probe('perm-setup', l), await probe('perm-setup', r))).toEqual([]);
    const want = await probe('perm', l, NOBODY);
    expect(want.find((s) => s.step === 'readdir 0700 dir')?.code).toBe('EACCES'); // the local answer is the reference
    const got = await probe('perm', r, NOBODY);
    expect(diffSteps('perm', want, got)).toEqual([]);
    expect(treeOf(server)).toEqual(treeOf(l));
  });
});

describe('attribute changes are seen at once', () => {
  it('a chmod/chown made through the mount is what the next permission check of another uid sees', async () => {
    const d = join(m!.mountpoint, 'opened-up');
    const write = (f: string) => runChild('setpriv', [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups', 'sh', '-c', `echo a > ${join(d, f)}`]);
    for (let i = 0; i < 10; i++) {
      // Created 0755 root-owned, looked at (so its attributes are cached), then opened up and used at once.
      expect((await runChild('sh', ['-c', `mkdir ${d} && stat ${d} >/dev/null && ls -l ${m!.mountpoint} >/dev/null && chmod 777 ${d}`])).stderr).toBe('');
      expect({ i, ...(await write('u')) }).toEqual({ i, code: 0, stdout: '', stderr: '' });
      expect((await runChild('sh', ['-c', `chmod 755 ${d} && chown ${NOBODY.uid}:${NOBODY.gid} ${d}`])).stderr).toBe('');
      expect({ i, ...(await write('v')) }).toEqual({ i, code: 0, stdout: '', stderr: '' });
      expect((await runChild('rm', ['-r', d])).stderr).toBe('');
    }
  });
});

describe('what SFTP cannot make', () => {
  it('mkfifo, mknod and bind on a socket path fail with EPERM ("Operation not permitted"), not ENOSYS', async () => {
    const { l, r } = await scenarioDirs('special-files');
    const local = await probe('special-files', l);
    // Locally they are made: the mount's refusal is SFTP's limit, said plainly.
    expect(local.map((s) => s.value)).toEqual([{ status: 0, stderr: '' }, { status: 0, stderr: '' }, { status: 0, code: '' }]);
    const got = await probe('special-files', r);
    expect(got.map((s) => s.value)).toEqual([
      { status: 1, stderr: "mkfifo: cannot create fifo '<dir>/fifo': Operation not permitted" },
      { status: 1, stderr: "mknod: <dir>/null: Operation not permitted" },
      { status: 1, code: 'EPERM' },
    ]);
  });
});

describe('mount options', () => {
  it('a read-only mount reads but refuses every change with EROFS', async () => {
    const ro = join(sshd.storeDir, 'ro');
    mkdirSync(join(ro, 'dir'), { recursive: true });
    writeFileSync(join(ro, 'file'), 'ro');
    const before = treeOf(ro);
    const t = await mountForTest(sshd, { subdir: 'ro', readOnly: true });
    mounts.push(t.mountpoint);
    try {
      const got = await probe('readonly', t.mountpoint);
      const byStep = Object.fromEntries(got.map((s) => [s.step, s.ok ? { ok: true, value: s.value } : s.code]));
      expect(byStep).toEqual({
        read: { ok: true, value: { size: 2, text: 'ro' } },
        readdir: { ok: true, value: ['dir/', 'file'] },
        stat: { ok: true, value: { type: 'file', mode: '644', size: 2 } },
        'write existing': 'EROFS',
        'open O_RDWR': 'EROFS',
        create: 'EROFS',
        mkdir: 'EROFS',
        unlink: 'EROFS',
        rmdir: 'EROFS',
        rename: 'EROFS',
        chmod: 'EROFS',
        truncate: 'EROFS',
        symlink: 'EROFS',
        utimes: 'EROFS',
        'read again': { ok: true, value: { size: 2, text: 'ro' } },
      });
      expect(treeOf(ro)).toEqual(before);
    } finally {
      await t.cleanup();
    }
  });

  it('uid/gid/umask options set the owner and mask the modes that stat shows', async () => {
    const dir = join(sshd.storeDir, 'owners');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    writeFileSync(join(dir, 'rw'), 'x');
    writeFileSync(join(dir, 'exe'), '#!/bin/sh\n');
    chmodSync(join(dir, 'sub'), 0o777);
    chmodSync(join(dir, 'rw'), 0o666);
    chmodSync(join(dir, 'exe'), 0o755);
    const t = await mountForTest(sshd, { subdir: 'owners', uid: 1234, gid: 5678, umask: 0o027 });
    mounts.push(t.mountpoint);
    try {
      const made = await runChild('sh', ['-c', `umask 022 && echo new > ${t.mountpoint}/new`]);
      expect(made.stderr).toBe('');
      const st = await runChild('stat', ['-c', '%n %u %g %a', ...['rw', 'exe', 'sub', 'new'].map((n) => join(t.mountpoint, n)), t.mountpoint]);
      expect(st.stderr).toBe('');
      expect(st.stdout.trim().split('\n').map((line) => line.replace(`${t.mountpoint}/`, '').replace(t.mountpoint, '.'))).toEqual([
        'rw 1234 5678 640',
        'exe 1234 5678 750',
        'sub 1234 5678 750',
        'new 1234 5678 640',
        '. 1234 5678 750', // the store directory is 0755 on the server
      ]);
      // Docker chowns and chmods a volume's root to the image directory's owner
      // and mode when it first mounts it; those must succeed even when the
      // mount maps owners.
      for (const [cmd, ...args] of [
        ['chown', '0:0', t.mountpoint],
        ['chown', '1000:1000', t.mountpoint],
        ['chmod', '755', t.mountpoint],
        ['touch', t.mountpoint],
      ]) {
        const r = await runChild(cmd, args);
        expect({ cmd: [cmd, ...args].join(' '), code: r.code, stderr: r.stderr }).toEqual({ cmd: [cmd, ...args].join(' '), code: 0, stderr: '' });
      }
      expect(treeOf(dir)['new']).toMatch(/^file 644 4 /);
    } finally {
      await t.cleanup();
    }
  });

  it("Docker's chown/chmod/utimes of the volume root succeed and reach the server", async () => {
    const root = m!.mountpoint;
    for (const [cmd, ...args] of [
      ['chown', '0:0', root],
      ['chmod', '0775', root],
      ['touch', '-m', '-d', '@1500000000', root],
      ['touch', root],
      ['touch', '-d', '@1500000001', root],
    ]) {
      const r = await runChild(cmd, args);
      expect({ cmd: [cmd, ...args].join(' '), code: r.code, stderr: r.stderr }).toEqual({ cmd: [cmd, ...args].join(' '), code: 0, stderr: '' });
    }
    const st = statSync(m!.remoteDir);
    expect((st.mode & 0o7777).toString(8)).toBe('775');
    expect(Math.floor(st.mtimeMs / 1000)).toBe(1500000001);
    // A child sees the same through the mount.
    const seen = await runChild('stat', ['-c', '%a %Y', root]);
    expect(seen.stdout.trim()).toBe('775 1500000001');
  });
});
