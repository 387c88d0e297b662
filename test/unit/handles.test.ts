// FileHandle against an in-memory SFTP channel: readahead racing a write,
// reopen after a reconnect, what fsync and close report.
import { describe, expect, it } from 'vitest';
import { FileHandle } from '../../src/fs/handles';
import type { SFTPWrapper } from 'ssh2';
import type { SftpSession } from '../../src/sftp/session';
import { FakeSession, FakeSftp } from './fake-sftp';

const CHUNK = 128 * 1024;

async function opened(content: Buffer, mtime = 100) {
  const sftp = new FakeSftp();
  sftp.files.set('/r/f', { data: content, mtime, mode: 0o100644 });
  const session = new FakeSession(sftp);
  sftp.handles.set('h0', '/r/f');
  const h = new FileHandle(1, '/f', { path: '/f', reopenFlags: 3, readable: true, toRemote: (p) => `/r${p}` }, Buffer.from('h0'), 1, session as unknown as SftpSession, sftp as unknown as SFTPWrapper);
  h.observe({ size: content.length, mtime });
  return { sftp, session, h };
}

const pattern = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => i % 251));

describe('FileHandle', () => {
  it('a read waiting for readahead still gets its bytes when a write drops the readahead meanwhile (was EIO)', async () => {
    const body = pattern(4 * CHUNK);
    const { sftp, h } = await opened(body);
    // A small read, then a sequential one that spans two readahead chunks
    // and waits on their fetches.
    await h.read(Buffer.alloc(1000), 1000, 0);
    sftp.holdReads = true;
    const out = Buffer.alloc(CHUNK);
    const reading = h.read(out, CHUNK, 1000);
    await new Promise((r) => setImmediate(r));
    h.dropReadahead(); // what a concurrent write or truncate does
    sftp.holdReads = false;
    sftp.release();
    expect(await reading).toBe(CHUNK);
    expect(out.equals(body.subarray(1000, 1000 + CHUNK))).toBe(true);
  });

  it('after a reconnect, a file that is still the one seen reopens and reads on', async () => {
    const { sftp, session, h } = await opened(pattern(1000));
    session.reconnect();
    const out = Buffer.alloc(10);
    expect(await h.read(out, 10, 0)).toBe(10);
    expect(sftp.calls.filter((c) => c.startsWith('open'))).toEqual(['open /r/f']);
  });

  it('after a reconnect, a file replaced under the same name fails with EIO instead of reading the other file', async () => {
    const { sftp, session, h } = await opened(pattern(1000));
    sftp.files.set('/r/f', { data: Buffer.from('someone else'), mtime: 200, mode: 0o100644 });
    session.reconnect();
    await expect(h.read(Buffer.alloc(10), 10, 0)).rejects.toMatchObject({ errno: 5 });
    expect(sftp.handles.size).toBe(1); // the wrong file's handle was closed again (h0 is the old one)
    await expect(h.fsync(true)).rejects.toMatchObject({ errno: 5 });
  });

  it('after a reconnect, our own writes before the loss are not mistaken for a replacement', async () => {
    const { session, h } = await opened(pattern(1000));
    await h.write(Buffer.from('grow'), 4, 1000);
    await h.settle();
    session.reconnect();
    await expect(h.write(Buffer.from('more'), 4, 1004)).resolves.toBeUndefined();
    await h.settle();
    expect(h.error).toBeUndefined();
  });

  it('fsync without the fsync extension still refuses writes acknowledged by a session that is gone', async () => {
    const { session, h } = await opened(pattern(10));
    await h.write(Buffer.from('x'), 1, 0);
    await h.settle();
    session.reconnect();
    await expect(h.fsync(false)).rejects.toMatchObject({ errno: 5 });
  });

  it('a failed CLOSE is the handle\'s error (servers that store on close report failures there)', async () => {
    const { sftp, h } = await opened(pattern(10));
    sftp.failNext.close = Object.assign(new Error('upload failed'), { code: 4 });
    await h.close();
    expect(h.error?.errno).toBe(5);
  });

  it('a stat-style settle waits for writes queued before it, not for those queued after', async () => {
    const { sftp, h } = await opened(pattern(10));
    await h.write(Buffer.from('a'), 1, 0);
    const settled = h.settle();
    let done = false;
    void settled.then(() => (done = true));
    sftp.holdReads = true; // unrelated; writes are answered on setImmediate
    await h.write(Buffer.from('b'), 1, 1);
    await settled;
    expect(done).toBe(true);
  });
});
