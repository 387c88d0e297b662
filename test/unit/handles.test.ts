// FileHandle against an in-memory SFTP channel: readahead racing a write,
// reopen after a reconnect, what fsync and close report.
import fc from 'fast-check';
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

  it('readahead buffers reused across handles never hand one read another read\'s bytes, whatever order the answers come in', async () => {
    // Chunk buffers go back to a pool shared by every handle once nothing can
    // touch them. Reads on two files, dropped readahead (what writes do) and
    // server answers released in a random order: every read gets its own file's bytes.
    const op = fc.oneof(
      fc.record({ kind: fc.constant('read' as const), file: fc.nat(1), pos: fc.nat(6 * CHUNK), len: fc.integer({ min: 1, max: 3 * CHUNK }), seq: fc.boolean() }),
      fc.record({ kind: fc.constant('drop' as const), file: fc.nat(1) }),
      // Let the server answer some of the READs it holds before the next step.
      fc.record({ kind: fc.constant('answer' as const), pick: fc.nat() }),
    );
    const bodies = [pattern(5 * CHUNK + 777), Buffer.from(pattern(5 * CHUNK + 777).map((b) => 255 - b))];
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 32 }), async (ops) => {
        const files = await Promise.all(bodies.map((b) => opened(b)));
        for (const f of files) f.sftp.holdReads = true;
        /** Answer held READs: a rotation by `pick`, some of them or all. */
        const answer = async (pick: number, all: boolean) => {
          const held = files.flatMap((f) => f.sftp.held.splice(0));
          const k = pick % Math.max(1, held.length);
          const now = [...held.slice(k), ...held.slice(0, k).reverse()];
          const later = all ? [] : now.splice(Math.max(1, now.length >> 1));
          files[0].sftp.held.push(...later);
          for (const go of now) go();
          for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
        };
        const nextSeq = [0, 0];
        const reads: Promise<void>[] = [];
        for (const o of ops) {
          if (o.kind === 'answer') {
            await answer(o.pick, false);
            continue;
          }
          const f = files[o.file];
          if (o.kind === 'drop') {
            f.h.dropReadahead();
            continue;
          }
          const pos = o.seq ? nextSeq[o.file] : o.pos;
          nextSeq[o.file] = pos + o.len;
          const out = Buffer.alloc(o.len);
          const body = bodies[o.file];
          reads.push(
            f.h.read(out, o.len, pos).then((n) => {
              const want = body.subarray(Math.min(pos, body.length), Math.min(pos + o.len, body.length));
              expect(n).toBe(want.length);
              expect(out.subarray(0, n).equals(want)).toBe(true);
            }),
          );
        }
        let done = false;
        const all = Promise.all(reads).finally(() => (done = true));
        for (let turn = 0; !done; turn++) await answer(turn, true);
        await all;
      }),
      { numRuns: 200 },
    );
  });
});
