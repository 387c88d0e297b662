// A reconnecting SSH link with two SFTP channels and promise wrappers.
//
// Why two channels: OpenSSH's sftp-server answers one request at a time per
// channel (one process, one loop), so a stat queued behind 2 MiB of WRITEs
// would wait for all of them. Metadata goes on `meta`, file handles and their
// READ/WRITE traffic on `data` (SFTP handles belong to the channel that
// opened them, so a handle keeps using the channel it was opened on).
//
// Why `data` starts as `meta`: each channel is one more process on the store
// (sftp-server, through the user's login shell), and when hundreds of hosts
// mount at once those starts are what the store runs out of. One channel
// serves everything correctly; the second only saves a metadata request the
// wait behind file data. So it is opened, in the background, the first time
// a metadata request is sent while file data is in flight on the one channel
// (channelsForMetadata), and handles opened after that use it. If the server
// refuses it (MaxSessions) or is slow, everything stays on one channel. A
// container that writes its file and exits costs the store one sftp-server.
//
// Why a byte cap: ssh2 queues SFTP writes without limit (no backpressure), so
// acknowledging FUSE writes as soon as they are queued needs a bound on what
// is queued but not yet acknowledged by the server.
import type { Logger } from 'pino';
import type { SFTPWrapper, Stats, InputAttributes } from 'ssh2';
import { TsfsError } from '../errors';
import { ByteBudget } from './budget';
import { connectSsh, type SshLink, type StepLog } from './connect';
import { listDirectory } from './listing';
import type { HeldLink } from './handoff';
import { SETUP_DEADLINE_MS, logRetries, openChannel, withRetry } from './retry';
import { describeTarget, hostKeyToPin, type SshTarget } from './target';

export type LinkState = 'connected' | 'reconnecting' | 'disconnected';

export interface Channels {
  meta: SFTPWrapper;
  /** Where new file handles are opened: `meta` until the second channel is open. */
  data: SFTPWrapper;
  /** Extensions the server offered, e.g. `posix-rename@openssh.com`. */
  ext: Set<string>;
  /** Connection generation: SFTP handles from an older one are gone. */
  gen: number;
  /** Largest READ/WRITE payload the server takes (limits@openssh.com, or ssh2's guess). */
  maxRead: number;
  maxWrite: number;
}

export interface SessionOptions {
  /** Bytes of WRITE data queued but not yet acknowledged, per mount. */
  maxInFlight?: number;
  /** The same bytes counted against a limit shared with other sessions (src/fs/memory.ts). */
  budget?: ByteBudget;
  /** How long an operation waits for a lost link to come back before failing with EIO. */
  reconnectWaitMs?: number;
  connect?: (t: SshTarget, onWarn?: (m: string) => void, log?: StepLog) => Promise<SshLink>;
  /** How long the first connection may keep retrying transient failures (default SETUP_DEADLINE_MS). */
  setupDeadlineMs?: number;
  /** dockerd gave up on the Mount: stop retrying. */
  signal?: AbortSignal;
  /** An open, checked connection to the target (Create's, src/sftp/handoff.ts): start() uses it instead of connecting. */
  held?: HeldLink;
}

/**
 * 2 MiB: OpenSSH's channel window. Bytes past the window cannot go on the
 * wire anyway; ssh2 only buffers them, and that buffering cost CPU and memory.
 * Measured (bench, 256 MiB dd conv=fsync, 8 busy volumes for RSS), cap ->
 * tsfs MB/s vs sshfs, daemon CPU s, peak RSS: 16 MiB -> 134 vs 155, 1.73 s,
 * 218 MiB; 4 MiB -> 201 vs 162, 0.87 s, 128 MiB; 2 MiB -> 260 vs 143, 0.82 s, 112 MiB.
 */
export const DEFAULT_MAX_IN_FLIGHT = 2 * 1024 * 1024;

/**
 * The least a WRITE counts against that window: 32 KiB, so at most 64 small
 * WRITEs wait at the server at once. tsfs answers small writes early, faster
 * than sftp-server works through them, and OpenSSH holds the backlog in
 * buffers it grows by reallocating and copying: with the whole window in
 * 4 KiB WRITEs (512), that growth cost the server most of a CPU-second once
 * per channel and made random rewrites 2-5 times slower (docs/performance.md,
 * "Rewrites: OpenSSH's buffers"). Large WRITEs are unaffected: the byte
 * window binds them first.
 */
export const MIN_WRITE_CHARGE = 32 * 1024;
export const DEFAULT_RECONNECT_WAIT_MS = 60_000;

/** The link is down (past the reconnect bound) or the filesystem is unmounting: the operation fails with EIO. */
export class LinkDownError extends TsfsError {
  constructor(msg: string) {
    super(msg, 'link-down');
  }
}

type Waiter = { resolve: (c: Channels) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export class SftpSession {
  state: LinkState = 'disconnected';
  private link?: SshLink;
  private current?: Channels;
  private gen = 0;
  private closed = false;
  private waiters = new Set<Waiter>();
  /** This session's WRITE bytes queued and unanswered, up to maxInFlight. */
  private readonly inFlight: ByteBudget;
  /** READs of file data awaiting their answer (a stat sent now would queue behind them). */
  private readsInFlight = 0;
  private readonly budget?: ByteBudget;
  private readonly reconnectWaitMs: number;
  private readonly connect: NonNullable<SessionOptions['connect']>;
  /** Times the link was lost: an idempotent request that saw this change is re-issued. */
  private losses = 0;
  /** Why the last reconnect attempt failed (e.g. a host key mismatch), for Status and errors. */
  lastError?: string;
  /** Times the link was lost and came back, for Status. */
  reconnects = 0;
  /** Failed connection attempts that start() retried, for Status and the storm benchmark. */
  setupRetries = 0;
  /** The generation whose second channel was asked for (at most one try per connection). */
  private dataAsked = 0;
  private readonly setupDeadlineMs: number;
  private readonly signal?: AbortSignal;
  private held?: HeldLink;

  /** What the live connection negotiated (cipher, server version), for Status. */
  get linkInfo(): SshLink['info'] {
    return this.link?.info;
  }

  /** The SFTP extensions of the live connection. */
  get extensions(): Set<string> | undefined {
    return this.current?.ext;
  }

  constructor(
    private target: SshTarget,
    private readonly log: Logger,
    opts: SessionOptions = {},
  ) {
    this.inFlight = new ByteBudget(opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    this.budget = opts.budget;
    this.reconnectWaitMs = opts.reconnectWaitMs ?? DEFAULT_RECONNECT_WAIT_MS;
    this.connect = opts.connect ?? connectSsh;
    this.setupDeadlineMs = Math.max(opts.setupDeadlineMs ?? SETUP_DEADLINE_MS, target.connectTimeout);
    this.signal = opts.signal;
    this.held = opts.held;
  }

  /**
   * First connection, retrying transient failures (src/sftp/retry.ts) with
   * backoff until the setup deadline; permanent ones (ConnectError) go to the
   * caller at once.
   */
  async start(): Promise<Channels> {
    const held = this.held;
    this.held = undefined;
    if (held) {
      try {
        return await this.adopt(held.link, performance.now(), held.sftp);
      } catch (e) {
        // Closed by the server since the check, or unmounting: connect as usual.
        this.log.debug({ err: (e as Error).message }, 'connection kept from the check is gone: connecting anew');
        this.throwIfClosed();
      }
    }
    return withRetry(
      ({ remainingMs }) => this.open(Math.max(1_000, Math.min(this.target.connectTimeout, remainingMs))),
      { deadlineMs: this.setupDeadlineMs, ...(this.signal && { signal: this.signal }) },
      logRetries(this.log, () => this.setupRetries++),
    );
  }

  private async open(timeoutMs = this.target.connectTimeout): Promise<Channels> {
    const t0 = performance.now();
    this.throwIfClosed();
    const link = await this.connect({ ...this.target, connectTimeout: timeoutMs }, (m) => this.log.warn(m), this.log);
    return this.adopt(link, t0, undefined, timeoutMs);
  }

  /** Make `link` the live connection, opening its SFTP channel unless `opened` is one already open on it. */
  private async adopt(link: SshLink, t0: number, opened?: SFTPWrapper, timeoutMs = this.target.connectTimeout): Promise<Channels> {
    try {
      // close() may have run while we connected (an unmount during a
      // reconnect): this link must not outlive it or revive the session.
      this.throwIfClosed();
      // Bounded like the handshake: a link that stalls right after it must not hang the reconnect loop.
      const meta = opened ?? (await openChannel(link, timeoutMs, describeTarget(this.target)));
      this.throwIfClosed();
      const ext = link.extensionsOf(meta);
      adaptToServer(meta, ext);
      const lim = meta as unknown as { _maxReadLen: number; _maxWriteLen: number };
      const ch: Channels = { meta, data: meta, ext, gen: ++this.gen, maxRead: lim._maxReadLen, maxWrite: lim._maxWriteLen };
      this.log.debug({ step: 'sftp', ms: Math.round((performance.now() - t0) * 10) / 10, extensions: [...ext], maxRead: ch.maxRead, maxWrite: ch.maxWrite }, 'SFTP channel open');
      // Volumes arrive pinned (src/volume.ts); a target without a pin still
      // keeps its first key in memory for the reconnects.
      const pin = hostKeyToPin(this.target, link.hostKey);
      if (pin) this.target = { ...this.target, hostKey: pin };
      // The same for the bastion: reconnects go through it and must meet the same one.
      const jumpPin = this.target.jump && hostKeyToPin(this.target.jump, link.jumpHostKey);
      if (jumpPin) this.target = { ...this.target, jump: { ...this.target.jump!, hostKey: jumpPin } };
      this.link = link;
      this.lastError = undefined;
      this.current = ch;
      this.state = 'connected';
      const onDown = (why: string) => this.lost(ch, why);
      link.client.once('close', () => onDown('connection closed'));
      link.client.on('error', (e: Error) => onDown(e.message));
      this.watchChannel(ch, meta);
      for (const w of this.waiters) {
        clearTimeout(w.timer);
        w.resolve(ch);
      }
      this.waiters.clear();
      return ch;
    } catch (e) {
      link.close();
      throw e;
    }
  }

  private throwIfClosed(): void {
    if (this.closed) throw new LinkDownError('the filesystem is unmounting');
  }

  /** A channel's end is the link's: reconnect. Without an 'error' listener a malformed packet throws and takes the daemon down. */
  private watchChannel(ch: Channels, c: SFTPWrapper): void {
    c.once('close', () => this.lost(ch, 'SFTP channel closed'));
    c.on('error', (e: Error) => this.lost(ch, `SFTP channel error: ${e.message}`));
  }

  /** The live channels for a metadata request; asks for the data channel if file data is in flight on the one channel. */
  async channelsForMetadata(): Promise<Channels> {
    const ch = await this.channels();
    if (ch.data === ch.meta && (this.inFlight.held > 0 || this.readsInFlight > 0)) this.ensureDataChannel(ch);
    return ch;
  }

  /** Count a file-data READ until it is answered (see channelsForMetadata). */
  async reading<T>(fn: () => Promise<T>): Promise<T> {
    this.readsInFlight++;
    try {
      return await fn();
    } finally {
      this.readsInFlight--;
    }
  }

  /**
   * Open the second (data) channel in the background, once per connection.
   * Handles opened meanwhile stay on `meta`; if the channel cannot be opened
   * the connection keeps working on one channel.
   */
  ensureDataChannel(ch: Channels): void {
    if (this.current !== ch || this.dataAsked === ch.gen || ch.data !== ch.meta) return;
    this.dataAsked = ch.gen;
    const link = this.link;
    if (!link) return;
    openChannel(link, this.target.connectTimeout, describeTarget(this.target)).then(
      (data) => {
        if (this.current !== ch) {
          data.end();
          return;
        }
        adaptToServer(data, ch.ext);
        ch.data = data;
        this.watchChannel(ch, data);
        this.log.debug('second SFTP channel open: file data goes there');
      },
      (e: Error) => {
        if (this.current === ch) this.log.info({ err: e.message }, 'second SFTP channel not opened: file data shares the metadata channel');
      },
    );
  }

  private lost(ch: Channels, why: string): void {
    if (this.current !== ch) return;
    this.current = undefined;
    this.losses++;
    this.link?.close();
    this.link = undefined;
    if (this.closed) return;
    this.state = 'reconnecting';
    this.log.warn({ reason: why }, 'SFTP link lost: reconnecting');
    void this.reconnectLoop();
  }

  private async reconnectLoop(): Promise<void> {
    let lastWarned = '';
    for (let attempt = 0, delay = 250; !this.closed; attempt++, delay = Math.min(delay * 2, 5000)) {
      try {
        await this.open();
        this.reconnects++;
        this.log.info({ attempt }, 'SFTP link re-established');
        return;
      } catch (e) {
        if (this.closed) return;
        this.lastError = (e as Error).message;
        // A failure that repeats (a host key mismatch, a wrong password) would
        // otherwise warn every 5 s for as long as the outage lasts: warn when
        // the reason changes, then again at attempts 2, 4, 8, 16... (the
        // retries themselves go on: the server may be fixed). Status shows
        // last_error meanwhile.
        const again = this.lastError === lastWarned;
        const level = !again || (attempt & (attempt - 1)) === 0 ? 'warn' : 'debug';
        if (level === 'warn') lastWarned = this.lastError;
        this.log[level]({ err: this.lastError, attempt, retryInMs: delay }, 'reconnect failed; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** The live channels, waiting for a reconnect up to the bound. */
  channels(): Promise<Channels> {
    if (this.current) return Promise.resolve(this.current);
    if (this.closed) return Promise.reject(new LinkDownError('the filesystem is unmounting'));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          const why = this.lastError ? `; last reconnect attempt: ${this.lastError}` : '';
          reject(new LinkDownError(`SFTP link to ${describeTarget(this.target)} down for ${this.reconnectWaitMs} ms${why}`));
        }, this.reconnectWaitMs),
      };
      this.waiters.add(w);
    });
  }

  /**
   * Run a request that may safely be sent twice (stat, readdir, read...): if
   * the link was lost while it was in flight, send it again on the next
   * connection, until the reconnect bound runs out.
   */
  async idempotent<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.reconnectWaitMs;
    for (;;) {
      const losses = this.losses;
      try {
        return await fn();
      } catch (e) {
        if (e instanceof LinkDownError || this.closed || Date.now() > deadline) throw e;
        // ssh2 fails a connection's requests before it reports the connection closed.
        if (this.losses === losses && this.current) await new Promise((r) => setImmediate(r));
        if (this.losses === losses && this.current) throw e;
        this.log.debug({ err: (e as Error).message }, 'request lost with the link: re-issuing it after reconnect');
      }
    }
  }

  /**
   * Wait until `bytes` more may be queued, then count them as in flight:
   * `charge` (at least the bytes, see MIN_WRITE_CHARGE) against this
   * session's window, the bytes themselves against the shared memory budget.
   */
  async reserve(bytes: number, charge = bytes): Promise<void> {
    // This session's place first, so a write waiting for the shared budget
    // keeps this session's later writes behind it.
    await this.inFlight.take(charge);
    await this.budget?.take(bytes);
  }

  /** Give back what reserve() took, with the same bytes and charge. */
  release(bytes: number, charge = bytes): void {
    this.budget?.give(bytes);
    this.inFlight.give(charge);
  }

  close(): void {
    this.closed = true;
    this.state = 'disconnected';
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new LinkDownError('the filesystem is unmounting'));
    }
    this.waiters.clear();
    this.link?.close();
    this.link = undefined;
    this.current = undefined;
  }
}

/** SFTP v3 guarantees 32 KiB of data per READ/WRITE; more needs limits@openssh.com. */
const SAFE_IO = 32 * 1024;

/**
 * ssh2 guesses from the SSH server's banner ("OpenSSH") what the SFTP server
 * is, but sshd may run another sftp server as its Subsystem (gesftpserver,
 * a vendor's): use what the SFTP server itself announced instead.
 */
function adaptToServer(sftp: SFTPWrapper, ext: Set<string>): void {
  const s = sftp as unknown as { _isOpenSSH: boolean; _maxReadLen: number; _maxWriteLen: number; _extensions: Record<string, string> };
  // OpenSSH swapped SYMLINK's arguments; gesftpserver says which order it wants.
  const order = s._extensions['symlink-order@rjk.greenend.org.uk'];
  if (order) s._isOpenSSH = order === 'targetpath-linkpath';
  if (!ext.has('limits@openssh.com')) {
    s._maxReadLen = Math.min(s._maxReadLen, SAFE_IO);
    s._maxWriteLen = Math.min(s._maxWriteLen, SAFE_IO);
  }
}

// Promise wrappers over ssh2's callback API. ssh2 may throw synchronously
// (e.g. on a channel that just closed); those become rejections.
function call<T>(fn: (cb: (err: Error | null | undefined, res?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    try {
      fn((err, res) => (err ? reject(err) : resolve(res as T)));
    } catch (e) {
      reject(e);
    }
  });
}

export const sftpCall = {
  lstat: (s: SFTPWrapper, p: string) => call<Stats>((cb) => s.lstat(p, cb)),
  stat: (s: SFTPWrapper, p: string) => call<Stats>((cb) => s.stat(p, cb)),
  readdir: (s: SFTPWrapper, p: string) => listDirectory(s, p),
  mkdir: (s: SFTPWrapper, p: string, mode: number) => call<void>((cb) => s.mkdir(p, { mode }, cb)),
  rmdir: (s: SFTPWrapper, p: string) => call<void>((cb) => s.rmdir(p, cb)),
  unlink: (s: SFTPWrapper, p: string) => call<void>((cb) => s.unlink(p, cb)),
  rename: (s: SFTPWrapper, a: string, b: string) => call<void>((cb) => s.rename(a, b, cb)),
  posixRename: (s: SFTPWrapper, a: string, b: string) => call<void>((cb) => s.ext_openssh_rename(a, b, cb)),
  hardlink: (s: SFTPWrapper, a: string, b: string) => call<void>((cb) => s.ext_openssh_hardlink(a, b, cb)),
  symlink: (s: SFTPWrapper, target: string, link: string) => call<void>((cb) => s.symlink(target, link, cb)),
  readlink: (s: SFTPWrapper, p: string) => call<string>((cb) => s.readlink(p, cb)),
  setstat: (s: SFTPWrapper, p: string, a: InputAttributes) => call<void>((cb) => s.setstat(p, a, cb)),
  lsetstat: (s: SFTPWrapper, p: string, a: InputAttributes) => call<void>((cb) => s.ext_openssh_lsetstat(p, a, cb)),
  fsetstat: (s: SFTPWrapper, h: Buffer, a: InputAttributes) => call<void>((cb) => s.fsetstat(h, a, cb)),
  fstat: (s: SFTPWrapper, h: Buffer) => call<Stats>((cb) => s.fstat(h, cb)),
  open: (s: SFTPWrapper, p: string, flags: number, a: InputAttributes) => call<Buffer>((cb) => s.open(p, flags, a, cb)),
  close: (s: SFTPWrapper, h: Buffer) => call<void>((cb) => s.close(h, cb)),
  fsync: (s: SFTPWrapper, h: Buffer) => call<void>((cb) => s.ext_openssh_fsync(h, cb)),
  statvfs: (s: SFTPWrapper, p: string) =>
    call<Record<string, number | bigint>>((cb) => s.ext_openssh_statvfs(p, cb as never)).then((v) => {
      const n = (k: string) => Number(v[`f_${k}`] ?? 0);
      return { bsize: n('bsize'), frsize: n('frsize'), blocks: n('blocks'), bfree: n('bfree'), bavail: n('bavail'), files: n('files'), ffree: n('ffree'), favail: n('favail'), namemax: n('namemax') };
    }),
  realpath: (s: SFTPWrapper, p: string) => call<string>((cb) => s.realpath(p, cb)),
  /** One READ of at most the server's max length; 0 bytes at EOF. */
  read: (s: SFTPWrapper, h: Buffer, buf: Buffer, off: number, len: number, pos: number) =>
    call<number>((cb) => s.read(h, buf, off, len, pos, (err, n) => cb(err, n))),
};
