// SftpOps against an in-memory SFTP server: who owns a new file, what a
// listing racing a write may cache, what a refused root setattr reports.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { SftpOps } from '../../src/fs/ops';
import type { SftpSession } from '../../src/sftp/session';
import { FakeSession, FakeSftp } from './fake-sftp';

function setup(root = '/r', mapped: { uid?: number; gid?: number } = {}) {
  const sftp = new FakeSftp();
  sftp.files.set(root, { data: Buffer.alloc(0), mtime: 1, mode: 0o40777, uid: 0, gid: 0 });
  const session = new FakeSession(sftp);
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
  const ops = new SftpOps(session as unknown as SftpSession, { root, readOnly: false, cacheTtlMs: 20_000, log, ...mapped });
  return { sftp, session, ops, lines };
}

const USER = { uid: 1000, gid: 1000 };
const own = (f?: { uid?: number; gid?: number; mode: number }) => f && { uid: f.uid, gid: f.gid, mode: (f.mode & 0o7777).toString(8) };

describe('new files belong to their creator when the SSH user may chown', () => {
  it('create: the owner in its own SETSTAT, then the mode asked for (the server umask removed bits)', async () => {
    const { sftp, ops } = setup();
    const fd = await ops.create('/f', 0o666, 0o101, USER);
    await ops.release('/f', fd);
    expect(own(sftp.files.get('/r/f'))).toEqual({ uid: 1000, gid: 1000, mode: '666' });
    expect(sftp.calls.filter((c) => c.startsWith('setstat'))).toEqual(['setstat /r/f {"uid":1000,"gid":1000}', 'setstat /r/f {"mode":438}']);
    expect((await ops.getattr('/f')).uid).toBe(1000);
  });

  it('setuid bits survive the chown (set after it)', async () => {
    const { sftp, ops } = setup();
    await ops.release('/s', await ops.create('/s', 0o4755, 0o101, USER));
    expect(own(sftp.files.get('/r/s'))).toEqual({ uid: 1000, gid: 1000, mode: '4755' });
  });

  it("mkdir in a setgid directory: the caller's uid, the directory's group", async () => {
    const { sftp, ops } = setup();
    sftp.files.set('/r/shared', { data: Buffer.alloc(0), mtime: 1, mode: 0o42775, uid: 0, gid: 50 });
    await ops.mkdir('/shared/d', 0o2775, USER);
    expect(own(sftp.files.get('/r/shared/d'))).toEqual({ uid: 1000, gid: 50, mode: '2775' });
  });

  it('symlink: owner set on the link itself (lsetstat)', async () => {
    const { sftp, ops } = setup();
    (sftp as unknown as { symlink: unknown }).symlink = (_t: string, p: string, cb: (e: null) => void) => {
      sftp.files.set(p, { data: Buffer.from('t'), mtime: 1, mode: 0o120777, uid: 0, gid: 0 });
      setImmediate(() => cb(null));
    };
    await ops.symlink('t', '/ln', USER);
    expect(own(sftp.files.get('/r/ln'))).toEqual({ uid: 1000, gid: 1000, mode: '777' });
  });

  it('an SSH user that cannot chown: the file is made, logged once, never asked again', async () => {
    const { sftp, ops, lines } = setup();
    sftp.failNext.setstat = Object.assign(new Error('Permission denied'), { code: 3 });
    await ops.release('/a', await ops.create('/a', 0o644, 0o101, USER));
    await ops.release('/b', await ops.create('/b', 0o644, 0o101, USER));
    expect(own(sftp.files.get('/r/b'))).toEqual({ uid: 0, gid: 0, mode: '644' });
    expect(sftp.calls.filter((c) => c.includes('"uid"'))).toHaveLength(1);
    expect(lines.filter((l) => l.includes('cannot chown'))).toHaveLength(1);
  });

  it("the caller's umask applies once even where the kernel left it to the filesystem (FUSE_CAP_DONT_MASK)", async () => {
    const { sftp, ops } = setup();
    sftp.umask = 0;
    await ops.release('/f', await ops.create('/f', 0o666, 0o101, { ...USER, umask: 0o027 }));
    expect(own(sftp.files.get('/r/f'))?.mode).toBe('640');
  });

  it('with uid=/gid= (one owner shown for every file) nothing is chowned on the store', async () => {
    const { sftp, ops } = setup('/r', { uid: 1000, gid: 1000 });
    await ops.release('/f', await ops.create('/f', 0o644, 0o101, USER));
    expect(sftp.calls.filter((c) => c.includes('"uid"'))).toEqual([]);
  });

  it('without a caller (binding without callerContext) nothing is chowned', async () => {
    const { sftp, ops } = setup();
    await ops.release('/f', await ops.create('/f', 0o644, 0o101));
    expect(sftp.calls.filter((c) => c.includes('"uid"'))).toEqual([]);
  });
});

describe('the ordering contract between the meta and data channels', () => {
  it('a listing answered while a WRITE to a file is unanswered does not cache that file (else the C table serves the old size)', async () => {
    const { sftp, ops } = setup();
    sftp.files.set('/r/f', { data: Buffer.from('old'), mtime: 1, mode: 0o100644 });
    const fd = await ops.open('/f', 0o2);
    sftp.holdWrites = true;
    await ops.write('/f', fd, Buffer.from('longer content'), 14, 0);
    await ops.readdir('/');
    expect(ops.cache.lookup('/f').kind).toBe('miss');
    sftp.release();
    await ops.flush('/f', fd);
    expect((await ops.getattr('/f')).size).toBe(14);
    await ops.release('/f', fd);
  });

  it('a stat waits for the writes queued before it only', async () => {
    const { sftp, ops } = setup();
    sftp.files.set('/r/f', { data: Buffer.alloc(0), mtime: 1, mode: 0o100644 });
    const fd = await ops.open('/f', 0o2);
    await ops.write('/f', fd, Buffer.from('12345'), 5, 0);
    const st = ops.getattr('/f');
    sftp.holdWrites = true;
    await ops.write('/f', fd, Buffer.from('67890'), 5, 5); // after the stat: held, never answered before it returns
    expect((await st).size).toBe(5);
    sftp.holdWrites = false;
    sftp.release();
    await ops.release('/f', fd);
  });
});

describe('writes through two descriptors of one file', () => {
  // A threaded server (gesftpserver) runs WRITEs on different handles at
  // once: an O_APPEND write through one descriptor overtook an earlier write
  // through another in ~1 run of 5 of the gesftpserver append scenario.
  it("a write is not sent while another descriptor's earlier write is unanswered", async () => {
    const { sftp, ops } = setup();
    sftp.files.set('/r/f', { data: Buffer.from('start'), mtime: 1, mode: 0o100644 });
    const a = await ops.open('/f', 0o2);
    const b = await ops.open('/f', 0o2);
    sftp.holdWrites = true;
    await ops.write('/f', a, Buffer.from('A'), 1, 5);
    const second = ops.write('/f', b, Buffer.from('B'), 1, 6);
    await new Promise((r) => setImmediate(r));
    expect(sftp.calls.filter((c) => c.startsWith('write'))).toEqual(['write 5 1']);
    sftp.holdWrites = false;
    sftp.release();
    await second;
    await ops.flush('/f', b);
    expect(sftp.calls.filter((c) => c.startsWith('write'))).toEqual(['write 5 1', 'write 6 1']);
    expect(sftp.files.get('/r/f')?.data.toString()).toBe('startAB');
    await ops.release('/f', a);
    await ops.release('/f', b);
  });

  it("a read waits for another descriptor's queued writes", async () => {
    const { sftp, ops } = setup();
    sftp.files.set('/r/f', { data: Buffer.from('old'), mtime: 1, mode: 0o100644 });
    const w = await ops.open('/f', 0o2);
    const r = await ops.open('/f', 0o0);
    sftp.holdWrites = true;
    await ops.write('/f', w, Buffer.from('new'), 3, 0);
    const out = Buffer.alloc(3);
    const reading = ops.read(r, out, 3, 0);
    await new Promise((res) => setImmediate(res));
    expect(sftp.calls.filter((c) => c.startsWith('read'))).toEqual([]);
    sftp.holdWrites = false;
    sftp.release();
    expect(await reading).toBe(3);
    expect(out.toString()).toBe('new');
    await ops.release('/f', w);
    await ops.release('/f', r);
  });
});

describe('errors are not swallowed', () => {
  it('a lost link during setattr of the volume root is EIO; a refusal by the server is ignored', async () => {
    const { sftp, ops } = setup();
    sftp.failNext.setstat = Object.assign(new Error('Permission denied'), { code: 3 });
    await expect(ops.chmod('/', 0o700)).resolves.toBeUndefined();
    sftp.failNext.setstat = new Error('No response from server');
    await expect(ops.chmod('/', 0o700)).rejects.toMatchObject({ errno: 5 });
  });

  it('mknod of a FIFO is EPERM with the reason logged', async () => {
    const { ops, lines } = setup();
    await expect(ops.mknod('/p', 0o10644)).rejects.toMatchObject({ errno: 1 });
    expect(lines.join('')).toMatch(/SFTP has no request for special files/);
  });
});
