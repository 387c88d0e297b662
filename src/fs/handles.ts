// Open files: the SFTP handle, the write pipeline (acknowledged to FUSE once
// queued, first error kept for flush/fsync/release) and sequential readahead.
import type { SFTPWrapper } from 'ssh2';
import { sftpCall, type Channels, type SftpSession } from '../sftp/session';
import type { RemoteAttrs } from './attr-cache';
import { Errno, FsError, errnoOf } from './errno';

/** Readahead unit: FUSE's max_read, and well under OpenSSH's 261,120-byte READ limit. */
const CHUNK = 128 * 1024;
/** Up to 8 chunks (1 MiB) in flight ahead of a sequential reader. */
const MAX_WINDOW = 8;

export interface OpenSpec {
  path: string;
  /** SFTP pflags to reopen with after a reconnect (no CREAT/TRUNC/EXCL). */
  reopenFlags: number;
  readable: boolean;
  /** The server-side path of a mount path (the handle's path follows renames). */
  toRemote: (path: string) => string;
}

export class FileHandle {
  private pending = 0;
  private drained: (() => void)[] = [];
  /** First write error, reported by flush/fsync/release (and later writes). */
  error?: FsError;
  private chunks = new Map<number, Promise<Buffer>>();
  private nextSeq = -1;
  private window = 1;
  /** Connection generation of the oldest write not yet covered by a successful fsync. */
  private unsyncedGen?: number;
  private reopening?: Promise<void>;

  constructor(
    readonly id: number,
    public path: string,
    private spec: OpenSpec,
    private remote: Buffer,
    private gen: number,
    private readonly session: SftpSession,
  ) {}

  get writesPending(): boolean {
    return this.pending > 0;
  }

  /** The handle valid on the current connection, reopened by path after a reconnect. */
  private async live(): Promise<{ ch: Channels; h: Buffer }> {
    const ch = await this.session.channels();
    if (ch.gen !== this.gen) {
      // A handle whose writes failed with the old link is not reopened: its
      // error stands, and new writes must not land after a gap.
      if (this.error) throw this.error;
      // Concurrent reads after a reconnect share one OPEN.
      this.reopening ??= sftpCall.open(ch.data, this.spec.toRemote(this.path), this.spec.reopenFlags, {}).then(
        (h) => {
          this.remote = h;
          this.gen = ch.gen;
        },
      ).finally(() => (this.reopening = undefined));
      await this.reopening;
      if (ch.gen !== this.gen) return this.live();
    }
    return { ch, h: this.remote };
  }

  /** Queue a write; resolves once queued (not when the server answers). */
  async write(buf: Buffer, len: number, pos: number): Promise<void> {
    if (this.error) throw this.error;
    this.dropReadahead();
    await this.session.reserve(len);
    let ch: Channels, h: Buffer;
    try {
      ({ ch, h } = await this.live());
    } catch (e) {
      this.session.release(len);
      throw new FsError(errnoOf(e));
    }
    // Earlier writes may have failed with the link while this one waited for it.
    if (this.error) {
      this.session.release(len);
      throw this.error;
    }
    this.unsyncedGen ??= ch.gen;
    // One SFTP WRITE per piece of at most maxWrite: ssh2 copies the first
    // maxWrite bytes into its packet synchronously but would read the rest
    // later from `buf`, which FUSE reclaims as soon as we answer.
    for (let off = 0; off < len; off += ch.maxWrite) {
      const n = Math.min(ch.maxWrite, len - off);
      this.pending++;
      const done = (err?: Error | null) => {
        this.session.release(n);
        if (err && !this.error) this.error = new FsError(errnoOf(err), err.message);
        if (--this.pending === 0) this.wake();
      };
      try {
        ch.data.write(h, buf, off, n, pos + off, done);
      } catch (e) {
        done(e as Error);
      }
    }
  }

  /** All queued writes answered. */
  drain(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((r) => this.drained.push(r));
  }

  private wake(): void {
    const ws = this.drained;
    this.drained = [];
    for (const w of ws) w();
  }

  async fsync(useExt: boolean): Promise<void> {
    await this.drain();
    if (this.error) throw this.error;
    if (!useExt) return;
    try {
      const { ch, h } = await this.live();
      if (this.unsyncedGen !== undefined && this.unsyncedGen !== ch.gen) {
        // Those writes were acknowledged by a server session that is gone; an
        // fsync on the new one cannot vouch for them (the server may have
        // restarted and lost its page cache).
        throw new FsError(Errno.EIO, 'writes made before the SFTP link was lost cannot be proven durable');
      }
      await sftpCall.fsync(ch.data, h);
    } catch (e) {
      // Whatever made fsync fail (that, a failed reopen, the server's answer)
      // leaves the data unproven: close must report it too, not succeed.
      this.error ??= e instanceof FsError ? e : new FsError(errnoOf(e), (e as Error).message);
      throw this.error;
    }
    this.unsyncedGen = undefined;
  }

  async fstat(): Promise<RemoteAttrs> {
    const { ch, h } = await this.live();
    const s = await sftpCall.fstat(ch.data, h);
    return { mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, atime: s.atime, mtime: s.mtime };
  }

  async ftruncate(size: number): Promise<void> {
    await this.drain();
    this.dropReadahead();
    const { ch, h } = await this.live();
    await sftpCall.fsetstat(ch.data, h, { size });
  }

  async close(): Promise<void> {
    await this.drain();
    this.dropReadahead();
    const ch = await this.session.channels().catch(() => undefined);
    if (ch && ch.gen === this.gen) await sftpCall.close(ch.data, this.remote).catch(() => undefined);
  }

  dropReadahead(): void {
    this.chunks.clear();
  }

  /** Read up to len bytes at pos into out; returns bytes read (short only at EOF). */
  async read(out: Buffer, len: number, pos: number): Promise<number> {
    if (!this.spec.readable) throw new FsError(Errno.EBADF);
    await this.drain(); // our own writes first: they may sit on the same bytes
    const first = Math.floor(pos / CHUNK);
    const last = Math.floor((pos + len - 1) / CHUNK);
    // The kernel sends readahead READs concurrently, so they may arrive out
    // of order: a read landing on a chunk we already fetch counts as sequential.
    const sequential = pos === this.nextSeq || this.chunks.has(first);
    this.nextSeq = pos + len;
    if (sequential) this.window = Math.min(this.window * 2, MAX_WINDOW);
    else {
      this.window = 1;
      if (pos % CHUNK !== 0 || len < CHUNK / 2) return this.readDirect(out, len, pos);
    }
    for (const k of this.chunks.keys()) if (k < first - 1 || k > last + MAX_WINDOW + 1) this.chunks.delete(k);
    for (let i = first; i <= last + this.window; i++) if (!this.chunks.has(i)) this.chunks.set(i, this.fetch(i));
    let copied = 0;
    for (let i = first; i <= last; i++) {
      const chunk = await this.chunks.get(i)!;
      const from = Math.max(pos + copied - i * CHUNK, 0);
      const n = Math.min(chunk.length - from, len - copied);
      if (n <= 0) break;
      chunk.copy(out, copied, from, from + n);
      copied += n;
      if (chunk.length < CHUNK) break; // EOF inside this chunk
    }
    return copied;
  }

  private fetch(i: number): Promise<Buffer> {
    const p = (async () => {
      const buf = Buffer.allocUnsafe(CHUNK);
      const n = await this.readFull(buf, CHUNK, i * CHUNK);
      return n === CHUNK ? buf : buf.subarray(0, n);
    })();
    p.catch(() => this.chunks.delete(i)); // a failed chunk is retried by the next read
    return p;
  }

  private async readDirect(out: Buffer, len: number, pos: number): Promise<number> {
    const tmp = Buffer.allocUnsafe(len);
    const n = await this.readFull(tmp, len, pos);
    tmp.copy(out, 0, 0, n);
    return n;
  }

  /** READs until len bytes or EOF: a server may answer a READ short before EOF. */
  private async readFull(buf: Buffer, len: number, pos: number): Promise<number> {
    const { ch, h } = await this.live();
    const max = ch.maxRead;
    // Pieces in parallel, then fill any gap a short answer left.
    const parts: Promise<number>[] = [];
    for (let off = 0; off < len; off += max) parts.push(readAll(ch.data, h, buf, off, Math.min(max, len - off), pos + off));
    const got = await Promise.all(parts);
    let total = 0;
    for (let i = 0; i < got.length; i++) {
      total += got[i];
      if (got[i] < Math.min(max, len - i * max)) break; // EOF
    }
    return total;
  }
}

async function readAll(s: SFTPWrapper, h: Buffer, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  let done = 0;
  while (done < len) {
    const n = await sftpCall.read(s, h, buf, off + done, len - done, pos + done).catch((e) => {
      throw new FsError(errnoOf(e));
    });
    if (n === 0) break;
    done += n;
  }
  return done;
}

export class HandleTable {
  private next = 1; // fuse-native treats fh 0 as "no handle"
  private byId = new Map<number, FileHandle>();

  add(make: (id: number) => FileHandle): FileHandle {
    while (this.byId.has(this.next) || this.next === 0) this.next = (this.next + 1) >>> 0;
    const h = make(this.next);
    this.byId.set(h.id, h);
    this.next = (this.next + 1) >>> 0;
    return h;
  }

  get(id: number): FileHandle | undefined {
    return this.byId.get(id);
  }

  delete(id: number): void {
    this.byId.delete(id);
  }

  forPath(path: string): FileHandle[] {
    return [...this.byId.values()].filter((h) => h.path === path);
  }

  all(): FileHandle[] {
    return [...this.byId.values()];
  }

  /** After a rename, open handles follow the file (reopen after reconnect uses the new name). */
  renamed(from: string, to: string): void {
    const prefix = from + '/';
    for (const h of this.byId.values()) {
      if (h.path === from) h.path = to;
      else if (h.path.startsWith(prefix)) h.path = to + h.path.slice(from.length);
    }
  }
}
