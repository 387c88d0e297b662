// An in-memory stand-in for ssh2's SFTP channel and for SftpSession, enough
// for FileHandle and SftpOps unit tests: files by path, handles by id, and
// requests held until the test releases them when it needs to interleave.
import type { Channels } from '../../src/sftp/session';

type Cb = (err: Error | null | undefined, ...res: unknown[]) => void;

export interface FakeFile {
  data: Buffer;
  mtime: number;
  mode: number;
}

export class FakeSftp {
  files = new Map<string, FakeFile>();
  handles = new Map<string, string>();
  private nextHandle = 1;
  /** When true, READs wait in `held` until release(). */
  holdReads = false;
  held: (() => void)[] = [];
  /** Errors to answer the next request of a kind with. */
  failNext: Record<string, Error | undefined> = {};
  calls: string[] = [];

  release(): void {
    const h = this.held;
    this.held = [];
    for (const f of h) f();
  }

  private fail(kind: string, cb: Cb): boolean {
    const e = this.failNext[kind];
    if (!e) return false;
    this.failNext[kind] = undefined;
    setImmediate(() => cb(e));
    return true;
  }

  open(path: string, _flags: number, _attrs: unknown, cb: Cb): void {
    this.calls.push(`open ${path}`);
    if (this.fail('open', cb)) return;
    if (!this.files.has(path)) return void setImmediate(() => cb(Object.assign(new Error('No such file'), { code: 2 })));
    const id = String(this.nextHandle++);
    this.handles.set(id, path);
    setImmediate(() => cb(null, Buffer.from(id)));
  }

  private fileOf(h: Buffer): FakeFile {
    return this.files.get(this.handles.get(h.toString())!)!;
  }

  read(h: Buffer, buf: Buffer, off: number, len: number, pos: number, cb: Cb): void {
    this.calls.push(`read ${pos}`);
    const go = () => {
      const f = this.fileOf(h);
      const n = Math.max(0, Math.min(len, f.data.length - pos));
      f.data.copy(buf, off, pos, pos + n);
      cb(null, n);
    };
    if (this.holdReads) this.held.push(go);
    else setImmediate(go);
  }

  write(h: Buffer, buf: Buffer, off: number, len: number, pos: number, cb: Cb): void {
    this.calls.push(`write ${pos} ${len}`);
    const chunk = Buffer.from(buf.subarray(off, off + len));
    if (this.fail('write', cb)) return;
    setImmediate(() => {
      const f = this.fileOf(h);
      if (f.data.length < pos + len) f.data = Buffer.concat([f.data, Buffer.alloc(pos + len - f.data.length)]);
      chunk.copy(f.data, pos);
      f.mtime++;
      cb(null);
    });
  }

  fstat(h: Buffer, cb: Cb): void {
    const f = this.fileOf(h);
    setImmediate(() => cb(null, { mode: f.mode, uid: 0, gid: 0, size: f.data.length, atime: f.mtime, mtime: f.mtime }));
  }

  close(h: Buffer, cb: Cb): void {
    this.calls.push('close');
    if (this.fail('close', cb)) return;
    this.handles.delete(h.toString());
    setImmediate(() => cb(null));
  }

  ext_openssh_fsync(_h: Buffer, cb: Cb): void {
    this.calls.push('fsync');
    setImmediate(() => cb(null));
  }

  fsetstat(h: Buffer, a: { size?: number }, cb: Cb): void {
    const f = this.fileOf(h);
    if (a.size !== undefined) f.data = a.size <= f.data.length ? f.data.subarray(0, a.size) : Buffer.concat([f.data, Buffer.alloc(a.size - f.data.length)]);
    setImmediate(() => cb(null));
  }
}

/** A session whose link can be "lost": the next channels() has a new generation. */
export class FakeSession {
  gen = 1;
  constructor(readonly sftp: FakeSftp) {}

  channels(): Promise<Channels> {
    const s = this.sftp as unknown as Channels['data'];
    return Promise.resolve({ meta: s, data: s, ext: new Set(['fsync@openssh.com']), gen: this.gen, maxRead: 32 * 1024, maxWrite: 32 * 1024 });
  }

  reconnect(): void {
    this.gen++;
  }

  async reserve(): Promise<void> {}
  release(): void {}
  idempotent<T>(f: () => Promise<T>): Promise<T> {
    return f();
  }
}
