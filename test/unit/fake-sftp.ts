// An in-memory stand-in for ssh2's SFTP channel and for SftpSession, enough
// for FileHandle and SftpOps unit tests: files by path, handles by id, and
// requests held until the test releases them when it needs to interleave.
import type { Channels } from '../../src/sftp/session';

type Cb = (err: Error | null | undefined, ...res: unknown[]) => void;

export interface FakeFile {
  data: Buffer;
  mtime: number;
  mode: number;
  uid?: number;
  gid?: number;
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

  /** What the server does to a new node's mode (its umask). */
  umask = 0o022;
  /** When true, WRITEs wait in `held` until release(). */
  holdWrites = false;

  private attrsOf(f: FakeFile) {
    return { mode: f.mode, uid: f.uid ?? 0, gid: f.gid ?? 0, size: f.data.length, atime: f.mtime, mtime: f.mtime };
  }

  private noent(cb: Cb): void {
    setImmediate(() => cb(Object.assign(new Error('No such file'), { code: 2 })));
  }

  /** A setgid parent gives its group to new entries (as Linux does on the server). */
  private inheritedGid(path: string): number {
    const parent = this.files.get(path.slice(0, path.lastIndexOf('/')) || '/');
    return parent && parent.mode & 0o2000 ? (parent.gid ?? 0) : 0;
  }

  lstat(path: string, cb: Cb): void {
    this.calls.push(`lstat ${path}`);
    const f = this.files.get(path);
    if (!f) return this.noent(cb);
    const a = this.attrsOf(f);
    setImmediate(() => cb(null, a));
  }

  stat(path: string, cb: Cb): void {
    this.lstat(path, cb);
  }

  /** Open directory handles: the names not yet given out. */
  private dirs = new Map<string, { filename: string; longname: string; attrs: unknown }[]>();

  opendir(path: string, cb: Cb): void {
    this.calls.push(`readdir ${path}`);
    const list = [...this.files.entries()].filter(([p]) => p !== path && p.startsWith(path + '/') && !p.slice(path.length + 1).includes('/'));
    const h = `dir${this.nextHandle++}`;
    this.dirs.set(h, list.map(([p, f]) => ({ filename: p.slice(path.length + 1), longname: '', attrs: this.attrsOf(f) })));
    setImmediate(() => cb(null, Buffer.from(h)));
  }

  /** Two names per answer, so that listings take several READDIRs; then EOF, as SFTP ends a listing. */
  readdir(h: Buffer, cb: Cb): void {
    const rest = this.dirs.get(h.toString());
    if (!rest) return void setImmediate(() => cb(Object.assign(new Error('bad handle'), { code: 4 })));
    const batch = rest.splice(0, 2);
    setImmediate(() => (batch.length ? cb(null, batch) : cb(Object.assign(new Error('EOF'), { code: 1 }))));
  }

  setstat(path: string, a: { mode?: number; uid?: number; gid?: number }, cb: Cb): void {
    this.calls.push(`setstat ${path} ${JSON.stringify(a)}`);
    if (this.fail('setstat', cb)) return;
    const f = this.files.get(path);
    if (!f) return this.noent(cb);
    if (a.uid !== undefined) {
      f.uid = a.uid;
      f.gid = a.gid;
      f.mode &= ~0o6000; // chown clears setuid/setgid
    }
    if (a.mode !== undefined) f.mode = (f.mode & ~0o7777) | a.mode;
    setImmediate(() => cb(null));
  }

  ext_openssh_lsetstat(path: string, a: { uid?: number; gid?: number }, cb: Cb): void {
    this.setstat(path, a, cb);
  }

  mkdir(path: string, a: { mode: number }, cb: Cb): void {
    this.calls.push(`mkdir ${path}`);
    this.files.set(path, { data: Buffer.alloc(0), mtime: 1, mode: 0o40000 | (a.mode & ~this.umask), uid: 0, gid: this.inheritedGid(path) });
    setImmediate(() => cb(null));
  }

  open(path: string, flags: number, attrs: { mode?: number }, cb: Cb): void {
    this.calls.push(`open ${path}`);
    if (this.fail('open', cb)) return;
    if (!this.files.has(path) && flags & 8) {
      this.files.set(path, { data: Buffer.alloc(0), mtime: 1, mode: 0o100000 | ((attrs.mode ?? 0o644) & ~this.umask), uid: 0, gid: this.inheritedGid(path) });
    }
    if (!this.files.has(path)) return this.noent(cb);
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
      if (n > 0) f.data.copy(buf, off, pos, pos + n);
      cb(null, n);
    };
    if (this.holdReads) this.held.push(go);
    else setImmediate(go);
  }

  write(h: Buffer, buf: Buffer, off: number, len: number, pos: number, cb: Cb): void {
    this.calls.push(`write ${pos} ${len}`);
    const chunk = Buffer.from(buf.subarray(off, off + len));
    if (this.fail('write', cb)) return;
    const go = () => {
      const f = this.fileOf(h);
      if (f.data.length < pos + len) f.data = Buffer.concat([f.data, Buffer.alloc(pos + len - f.data.length)]);
      chunk.copy(f.data, pos);
      f.mtime++;
      cb(null);
    };
    if (this.holdWrites) this.held.push(go);
    else setImmediate(go);
  }

  fstat(h: Buffer, cb: Cb): void {
    const f = this.fileOf(h);
    setImmediate(() => cb(null, { mode: f.mode, uid: 0, gid: 0, size: f.data.length, atime: f.mtime, mtime: f.mtime }));
  }

  close(h: Buffer, cb: Cb): void {
    if (this.dirs.delete(h.toString())) return void setImmediate(() => cb(null));
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
  ext = new Set(['fsync@openssh.com', 'lsetstat@openssh.com', 'statvfs@openssh.com']);
  constructor(readonly sftp: FakeSftp) {}

  channels(): Promise<Channels> {
    const s = this.sftp as unknown as Channels['data'];
    return Promise.resolve({ meta: s, data: s, ext: this.ext, gen: this.gen, maxRead: 32 * 1024, maxWrite: 32 * 1024 });
  }

  reconnect(): void {
    this.gen++;
  }

  channelsForMetadata(): Promise<Channels> {
    return this.channels();
  }

  reading<T>(f: () => Promise<T>): Promise<T> {
    return f();
  }

  async reserve(): Promise<void> {}
  release(): void {}
  idempotent<T>(f: () => Promise<T>): Promise<T> {
    return f();
  }
}
