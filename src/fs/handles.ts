// Open files: the SFTP handle (reopened after a reconnect only if it still
// reaches the same file), its write pipeline (write-pipeline.ts) and
// sequential readahead.
import type { SFTPWrapper } from 'ssh2';
import { MIN_WRITE_CHARGE, sftpCall, type Channels, type SftpSession } from '../sftp/session';
import type { RemoteAttrs } from './attr-cache';
import { Errno, FsError, errnoOf, isGenericFailure } from './errno';
import { WritePipeline } from './write-pipeline';

/** Readahead unit: FUSE's max_read, and well under OpenSSH's 261,120-byte READ limit. */
const CHUNK = 128 * 1024;
/** Up to 8 chunks (1 MiB) in flight ahead of a sequential reader. */
const MAX_WINDOW = 8;

/**
 * Chunk buffers done with, shared by every handle of the daemon. A new
 * 128 KiB Buffer per chunk was a new ArrayBuffer that only a GC frees: 256
 * MiB of them per 256 MiB read, which pushes V8 into the mark-compacts
 * src/node-flags.ts describes. At most SPARE_MAX are kept (8 MiB), and none
 * once reading has stopped for SPARE_IDLE_MS.
 */
const spare: Buffer[] = [];
const SPARE_MAX = 64;
const SPARE_IDLE_MS = 5_000;
let spareTimer: NodeJS.Timeout | undefined;
let spareUsed = false;

function takeChunkBuffer(): Buffer {
  spareUsed = true;
  return spare.pop() ?? Buffer.allocUnsafe(CHUNK);
}

function giveBackChunkBuffer(b: Buffer): void {
  if (spare.length >= SPARE_MAX) return;
  spare.push(b);
  spareTimer ??= setInterval(() => {
    if (spareUsed) return void (spareUsed = false);
    spare.length = 0;
    clearInterval(spareTimer);
    spareTimer = undefined;
  }, SPARE_IDLE_MS).unref();
}

/**
 * One readahead chunk. Its buffer goes back for reuse only when nothing can
 * touch it again: its READs all answered (a failed chunk's other READs may
 * still be writing into it, so it is never reused), no read still copying
 * from it, and out of the handle's map.
 */
class Chunk {
  readonly data: Promise<Buffer>;
  private users = 0;
  private settled = false;
  private dropped = false;

  constructor(
    private readonly buf: Buffer,
    fill: (buf: Buffer) => Promise<number>,
  ) {
    this.data = fill(buf).then((n) => {
      this.settled = true;
      this.recycle();
      return n === CHUNK ? buf : buf.subarray(0, n);
    });
  }

  use(): Promise<Buffer> {
    this.users++;
    return this.data;
  }

  done(): void {
    this.users--;
    this.recycle();
  }

  drop(): void {
    this.dropped = true;
    this.recycle();
  }

  private recycle(): void {
    if (!this.settled || !this.dropped || this.users > 0) return;
    this.settled = false; // once
    giveBackChunkBuffer(this.buf);
  }
}

export interface OpenSpec {
  path: string;
  /** SFTP pflags to reopen with after a reconnect (no CREAT/TRUNC/EXCL). */
  reopenFlags: number;
  readable: boolean;
  /** The server-side path of a mount path (the handle's path follows renames). */
  toRemote: (path: string) => string;
  /** The errno for a WRITE the server failed with the generic FAILURE (a full store is ENOSPC); never rejects. */
  explainWrite?: (e: unknown, bytes: number) => Promise<FsError>;
}

/** What a handle knows of its file, to tell after a reconnect whether a reopen by path reaches the same file. */
export interface Identity {
  size: number;
  mtime: number;
}

export class FileHandle {
  readonly pipeline = new WritePipeline();
  private chunks = new Map<number, Chunk>();
  private nextSeq = -1;
  private window = 1;
  /** Connection generation of the oldest write not yet covered by a successful fsync. */
  private unsyncedGen?: number;
  private reopening?: Promise<void>;
  /**
   * The file as last seen (at open, by fstat), and what this handle's own
   * writes and truncates did to it since: a reopen after a reconnect must
   * find a file that matches, or the handle fails with EIO rather than read
   * or write another file that took the name meanwhile.
   */
  private seen?: Identity;
  private changedSince = false;
  private minSize = 0;
  /** Written or truncated since the last takeChanged(): flush/release must drop the file's cached attributes. */
  private changedForCache = false;

  constructor(
    readonly id: number,
    public path: string,
    private spec: OpenSpec,
    private remote: Buffer,
    private gen: number,
    private readonly session: SftpSession,
    /** The channel that opened `remote`: an SFTP handle is only valid there (src/sftp/session.ts). */
    private sftp: SFTPWrapper,
  ) {}

  /** The first failure: reported by flush/fsync/release and later writes. */
  get error(): FsError | undefined {
    return this.pipeline.error;
  }

  set error(e: FsError | undefined) {
    this.pipeline.error = e;
  }

  get writesPending(): boolean {
    return this.pipeline.pending > 0;
  }

  /** Whether this handle changed the file since the last call (and forget it). */
  takeChanged(): boolean {
    const c = this.changedForCache;
    this.changedForCache = false;
    return c;
  }

  /** Record the file's attributes as seen now (at open, or from an fstat). */
  observe(a: Identity): void {
    this.seen = { size: a.size, mtime: a.mtime };
    this.changedSince = false;
    this.minSize = a.size;
  }

  private matches(a: Identity): boolean {
    const s = this.seen;
    if (!s) return false;
    if (!this.changedSince) return a.size === s.size && a.mtime === s.mtime;
    // Our own writes moved mtime forward and may have grown the file.
    return a.size >= this.minSize && a.mtime >= s.mtime;
  }

  /** The handle valid on the current connection, reopened by path after a reconnect. */
  private async live(): Promise<{ ch: Channels; h: Buffer; s: SFTPWrapper }> {
    const ch = await this.session.channels();
    if (ch.gen !== this.gen) {
      // A handle whose writes failed with the old link is not reopened: its
      // error stands, and new writes must not land after a gap.
      if (this.error) throw this.error;
      // Concurrent reads after a reconnect share one OPEN.
      this.reopening ??= this.reopen(ch).finally(() => (this.reopening = undefined));
      await this.reopening;
      if (ch.gen !== this.gen) return this.live();
    }
    return { ch, h: this.remote, s: this.sftp };
  }

  private async reopen(ch: Channels): Promise<void> {
    const path = this.spec.toRemote(this.path);
    const s = ch.data;
    const h = await sftpCall.open(s, path, this.spec.reopenFlags, {});
    const a = await sftpCall.fstat(s, h).catch(() => undefined);
    if (!a || !this.matches(a)) {
      await sftpCall.close(s, h).catch(() => undefined);
      const was = this.seen ? `size ${this.seen.size}, mtime ${this.seen.mtime}` : 'unknown';
      const now = a ? `size ${a.size}, mtime ${a.mtime}` : 'unknown';
      this.error ??= new FsError(Errno.EIO, `${path} changed while the SFTP link was down (was ${was}, now ${now}): not reopening another file under the same name`);
      throw this.error;
    }
    this.remote = h;
    this.gen = ch.gen;
    this.sftp = s;
  }

  /** Queue a write; resolves once queued (not when the server answers). */
  async write(buf: Buffer, len: number, pos: number): Promise<void> {
    if (this.error) throw this.error;
    this.dropReadahead();
    // A small write counts MIN_WRITE_CHARGE against the session's window;
    // its first piece gives the extra back (an empty write has no piece).
    const extra = len > 0 ? Math.max(0, MIN_WRITE_CHARGE - len) : 0;
    await this.session.reserve(len, len + extra);
    let ch: Channels, h: Buffer, s: SFTPWrapper;
    try {
      ({ ch, h, s } = await this.live());
    } catch (e) {
      this.session.release(len, len + extra);
      // The binding may have answered this write already (early write
      // replies, fuse-native.c): a gap in the file is the handle's failure,
      // reported by flush, fsync and release as a server's would be.
      const err = new FsError(errnoOf(e));
      this.error ??= err;
      throw err;
    }
    // Earlier writes may have failed with the link while this one waited for it.
    if (this.error) {
      this.session.release(len, len + extra);
      throw this.error;
    }
    this.unsyncedGen ??= ch.gen;
    this.changedSince = true;
    this.changedForCache = true;
    this.minSize = Math.max(this.minSize, pos + len);
    // One SFTP WRITE per piece of at most maxWrite: ssh2 copies the first
    // maxWrite bytes into its packet synchronously but would read the rest
    // later from `buf`, which FUSE reclaims as soon as we answer.
    for (let off = 0; off < len; off += ch.maxWrite) {
      const n = Math.min(ch.maxWrite, len - off);
      const seq = this.pipeline.queue();
      const first = off === 0;
      const done = (err?: Error | null) => {
        this.session.release(n, first ? n + extra : n);
        if (!err) this.pipeline.answer(seq);
        // The piece stays unanswered until its errno is known, so flush reports the right one.
        else if (this.spec.explainWrite && isGenericFailure(err)) void this.spec.explainWrite(err, n).then((fe) => this.pipeline.answer(seq, fe));
        else this.pipeline.answer(seq, new FsError(errnoOf(err), err.message));
      };
      try {
        s.write(h, buf, off, n, pos + off, done);
      } catch (e) {
        done(e as Error);
      }
    }
  }

  /** Every write queued before this call answered (later ones are not waited for). */
  settle(): Promise<void> {
    return this.pipeline.settle();
  }

  async fsync(useExt: boolean): Promise<void> {
    await this.settle();
    if (this.error) throw this.error;
    try {
      const { ch, h, s } = useExt ? await this.live() : { ch: await this.session.channels(), h: undefined, s: undefined };
      if (this.unsyncedGen !== undefined && this.unsyncedGen !== ch.gen) {
        // Those writes were acknowledged by a server session that is gone; an
        // fsync on the new one cannot vouch for them (the server may have
        // restarted and lost its page cache).
        throw new FsError(Errno.EIO, 'writes made before the SFTP link was lost cannot be proven durable');
      }
      if (h && s) await sftpCall.fsync(s, h);
    } catch (e) {
      // Whatever made fsync fail (that, a failed reopen, the server's answer)
      // leaves the data unproven: close must report it too, not succeed.
      this.error ??= e instanceof FsError ? e : new FsError(errnoOf(e), (e as Error).message);
      throw this.error;
    }
    this.unsyncedGen = undefined;
  }

  async fstat(): Promise<RemoteAttrs> {
    await this.settle();
    const { h, s } = await this.live();
    const a = await sftpCall.fstat(s, h);
    if (!this.writesPending) this.observe(a);
    return { mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, atime: a.atime, mtime: a.mtime };
  }

  async ftruncate(size: number): Promise<void> {
    await this.settle();
    this.dropReadahead();
    const { h, s } = await this.live();
    await sftpCall.fsetstat(s, h, { size });
    this.changedSince = true;
    this.changedForCache = true;
    this.minSize = size;
  }

  /**
   * Last close: every write answered, then CLOSE. Its status counts: servers
   * that store on close (object-store gateways) report a failed upload only
   * there, so it becomes the handle's error.
   */
  async close(): Promise<void> {
    await this.settle();
    this.dropReadahead();
    const ch = await this.session.channels().catch(() => undefined);
    if (!ch || ch.gen !== this.gen) return;
    try {
      await sftpCall.close(this.sftp, this.remote);
    } catch (e) {
      this.error ??= new FsError(errnoOf(e), `CLOSE failed: ${(e as Error).message}`);
    }
  }

  dropReadahead(): void {
    for (const c of this.chunks.values()) c.drop();
    this.chunks.clear();
  }

  /** Read up to len bytes at pos into out; returns bytes read (short only at EOF). */
  async read(out: Buffer, len: number, pos: number): Promise<number> {
    if (!this.spec.readable) throw new FsError(Errno.EBADF);
    await this.settle(); // our own writes first: they may sit on the same bytes
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
    for (const [k, c] of this.chunks) {
      if (k < first - 1 || k > last + MAX_WINDOW + 1) {
        c.drop();
        this.chunks.delete(k);
      }
    }
    for (let i = first; i <= last + this.window; i++) if (!this.chunks.has(i)) this.chunks.set(i, this.fetch(i));
    // Take the chunks now: a write or truncate may clear the map (dropReadahead)
    // while this read waits, and the answers already asked for still serve it.
    const wanted: Chunk[] = [];
    for (let i = first; i <= last; i++) wanted.push(this.chunks.get(i)!);
    const pending = wanted.map((c) => c.use());
    let copied = 0;
    try {
      for (let i = first; i <= last; i++) {
        const chunk = await pending[i - first];
        const from = Math.max(pos + copied - i * CHUNK, 0);
        const n = Math.min(chunk.length - from, len - copied);
        if (n <= 0) break;
        chunk.copy(out, copied, from, from + n);
        copied += n;
        if (chunk.length < CHUNK) break; // EOF inside this chunk
      }
    } finally {
      for (const c of wanted) c.done();
    }
    return copied;
  }

  private fetch(i: number): Chunk {
    const c = new Chunk(takeChunkBuffer(), (buf) => this.readFull(buf, CHUNK, i * CHUNK));
    // A failed chunk is retried by the next read (unless the map moved on).
    c.data.catch(() => this.chunks.get(i) === c && this.chunks.delete(i));
    return c;
  }

  private async readDirect(out: Buffer, len: number, pos: number): Promise<number> {
    const tmp = Buffer.allocUnsafe(len);
    const n = await this.readFull(tmp, len, pos);
    tmp.copy(out, 0, 0, n);
    return n;
  }

  /** READs until len bytes or EOF: a server may answer a READ short before EOF. */
  private async readFull(buf: Buffer, len: number, pos: number): Promise<number> {
    const { ch, h, s } = await this.live();
    const max = ch.maxRead;
    // Pieces in parallel, then fill any gap a short answer left.
    const parts: Promise<number>[] = [];
    for (let off = 0; off < len; off += max) parts.push(readAll(s, h, buf, off, Math.min(max, len - off), pos + off));
    const got = await this.session.reading(() => Promise.all(parts));
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
    if (this.byId.size === 0) return [];
    return [...this.byId.values()].filter((h) => h.path === path);
  }

  /** Some handle of the path has writes queued and unanswered. */
  writing(path: string): boolean {
    for (const h of this.byId.values()) if (h.path === path && h.writesPending) return true;
    return false;
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
