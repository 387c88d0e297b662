// The daemon's durable state: TSFS_STATE_DIR/tsfs.json. Written atomically
// (temp file, fsync, rename, then fsync of the directory) at 0600 in a 0700
// directory because it holds passwords needed to remount after a restart.
// Key material is never stored, only key paths.
//
// One daemon per state directory: each writes the whole file from its own
// memory, so two (say tsfs:1 and tsfs:2 left on the default state.source)
// would overwrite each other's volumes on every save. The first one takes an
// exclusive flock(2) on TSFS_STATE_DIR/tsfs.lock for as long as it runs; the
// kernel drops it when the process dies however it dies, so a crash never
// leaves a stale lock behind (a pid file or mkdir lock would). Node has no
// flock, hence fs-ext (a small nan binding, pinned).
import { closeSync, constants as fsc, openSync, readFileSync, writeSync, ftruncateSync } from 'node:fs';
import { mkdir, chmod, readFile, rename, open } from 'node:fs/promises';
import { hostname } from 'node:os';
import { flockSync } from 'fs-ext';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { z } from 'zod';
import { MAX_DEAD_LINK_SECONDS, isVolumeName } from './options';

export const STATE_VERSION = 2;
export const STATE_FILE = 'tsfs.json';
export const LOCK_FILE = 'tsfs.lock';

/** The open lock file; closing it releases the lock. */
export interface StateLock {
  release(): void;
}

export type LockResult = { locked: true; lock: StateLock } | { locked: false; holder: string };

/** The options, as the user gave them to `docker volume create -o`: option=value strings. */
const OptsSchema = z.record(z.string(), z.string());

export const VolumeRecordSchema = z.object({
  // Checked again on load: a hand-edited name must not point a mountpoint outside TSFS_MOUNT_ROOT.
  name: z.string().refine(isVolumeName, { message: 'not a valid volume name' }),
  /** RFC 3339. */
  createdAt: z.string(),
  /**
   * What the user gave, not what tsfs made of it: the meaning (defaults,
   * notes) is derived again at every start by parseOptions.
   */
  opts: OptsSchema,
  /** Host key seen at Create or first Mount under accept-new, pinned for every later connection. */
  pinnedHostKey: z.string().optional(),
  /** The bastion's (ProxyJump) host key, pinned the same way. */
  pinnedJumpHostKey: z.string().optional(),
  /** What realpath said the remote directory is, at Create. */
  remoteRealPath: z.string().optional(),
  /** Docker mount IDs currently holding the volume mounted. */
  mountIds: z.array(z.string()),
});
export type VolumeRecord = z.infer<typeof VolumeRecordSchema>;

const StateSchema = z.object({
  version: z.literal(STATE_VERSION),
  volumes: z.array(VolumeRecordSchema),
});
export type State = z.infer<typeof StateSchema>;

// ---- version 1 (earlier tsfs): the derived spec was stored ------------------

/** Version 1's defaults, frozen: an option whose stored value equals it was not given by the user. */
const V1_DEFAULTS = { port: 22, strictHostKeyChecking: 'accept-new', allowOther: true, readOnly: false, mkdir: false, check: true, cacheTimeout: 20, reconnectTimeout: 60, serverAliveInterval: 15, serverAliveCountMax: 3, connectTimeout: 15 };

const V1SpecSchema = z.object({
  host: z.string(),
  port: z.number().int(),
  username: z.string(),
  remotePath: z.string(),
  password: z.string().optional(),
  passwordFile: z.string().optional(),
  identityFile: z.string().optional(),
  passphrase: z.string().optional(),
  hostKey: z.string().optional(),
  strictHostKeyChecking: z.enum(['yes', 'accept-new', 'no']),
  uid: z.number().int().optional(),
  gid: z.number().int().optional(),
  umask: z.number().int().optional(),
  allowOther: z.boolean(),
  readOnly: z.boolean(),
  mkdir: z.boolean(),
  check: z.boolean(),
  cacheTimeout: z.number(),
  reconnectTimeout: z.number(),
  serverAliveInterval: z.number(),
  serverAliveCountMax: z.number().int(),
  connectTimeout: z.number(),
  notes: z.array(z.string()),
});

/**
 * The options a version-1 spec came from: each value that differs from
 * version 1's default. (Options without effect, the notes, are dropped.)
 */
function optsOfV1Spec(s: z.infer<typeof V1SpecSchema>): Record<string, string> {
  const o: Record<string, string> = { sshcmd: `${s.username}@${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.remotePath}` };
  const d = V1_DEFAULTS;
  const set = (k: string, v: string | number | undefined, dflt?: string | number | boolean) => {
    if (v !== undefined && v !== dflt) o[k] = String(v);
  };
  set('port', s.port, d.port);
  set('password', s.password);
  set('password_file', s.passwordFile);
  set('IdentityFile', s.identityFile);
  set('passphrase', s.passphrase);
  set('host_key', s.hostKey);
  set('StrictHostKeyChecking', s.strictHostKeyChecking, d.strictHostKeyChecking);
  set('uid', s.uid);
  set('gid', s.gid);
  set('umask', s.umask === undefined ? undefined : s.umask.toString(8).padStart(3, '0'));
  if (s.allowOther !== d.allowOther) o.allow_other = 'no';
  if (s.readOnly !== d.readOnly) o.ro = 'yes';
  if (s.mkdir !== d.mkdir) o.mkdir = 'yes';
  if (s.check !== d.check) o.check = 'no';
  set('cache_timeout', s.cacheTimeout, d.cacheTimeout);
  set('reconnect_timeout', s.reconnectTimeout, d.reconnectTimeout);
  // Version 1 accepted 0 for these and unbounded keepalives, which hang or
  // never connect; such a volume takes today's default instead of becoming
  // unusable (its containers would lose it at the restore after the upgrade).
  if (s.serverAliveInterval > 0 && s.serverAliveInterval * s.serverAliveCountMax <= MAX_DEAD_LINK_SECONDS) {
    set('ServerAliveInterval', s.serverAliveInterval, d.serverAliveInterval);
    set('ServerAliveCountMax', s.serverAliveCountMax, d.serverAliveCountMax);
  }
  if (s.connectTimeout > 0) set('ConnectTimeout', s.connectTimeout, d.connectTimeout);
  return o;
}

const StateV1Schema = z.object({
  version: z.literal(1),
  volumes: z.array(VolumeRecordSchema.omit({ opts: true }).extend({ spec: V1SpecSchema })),
});

function fromV1(v1: z.infer<typeof StateV1Schema>): State {
  return { version: STATE_VERSION, volumes: v1.volumes.map(({ spec, ...r }) => ({ ...r, opts: optsOfV1Spec(spec) })) };
}

export interface LoadResult {
  state: State;
  /** Set when a bad file was moved aside: where it went and why. */
  quarantined?: { path: string; reason: string };
}

export class StateStore {
  readonly file: string;
  private writing: Promise<void> = Promise.resolve();
  /** The snapshot the next write will store, and everyone waiting for it. */
  private next?: { state: State; done: Promise<void> };

  constructor(readonly dir: string) {
    this.file = join(dir, STATE_FILE);
  }

  /**
   * Take the directory for this process, before load(): the answer says who
   * holds it when another daemon does (what that one wrote in the lock file).
   */
  async lock(): Promise<LockResult> {
    await this.ensureDir();
    const file = join(this.dir, LOCK_FILE);
    const fd = openSync(file, fsc.O_RDWR | fsc.O_CREAT, 0o600);
    try {
      flockSync(fd, 'exnb');
    } catch (e) {
      closeSync(fd);
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' && (e as NodeJS.ErrnoException).code !== 'EWOULDBLOCK') throw e;
      let holder = '';
      try {
        holder = readFileSync(file, 'utf8').trim();
      } catch {
        /* unreadable: the holder stays unnamed */
      }
      return { locked: false, holder: holder || 'another tsfs daemon' };
    }
    // Who holds it, for the message the refused one gives (libuv opens files close-on-exec: no child inherits the lock).
    const who = `tsfs daemon pid ${process.pid} on host ${hostname()}, since ${new Date().toISOString()}`;
    ftruncateSync(fd, 0);
    writeSync(fd, who + '\n', 0);
    let open = true;
    return {
      locked: true,
      lock: {
        release: () => {
          if (open) closeSync(fd);
          open = false;
        },
      },
    };
  }

  private async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
  }

  /** Never throws for a bad file: the daemon must start anyway, so the file is moved aside. */
  async load(): Promise<LoadResult> {
    await this.ensureDir();
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: { version: STATE_VERSION, volumes: [] } };
      throw e;
    }
    let reason: string;
    try {
      const raw: unknown = JSON.parse(text);
      const version = (raw as { version?: unknown } | null)?.version;
      if (version !== STATE_VERSION && version !== 1) {
        reason = `unknown state version ${JSON.stringify(version)} (this tsfs reads versions 1 and ${STATE_VERSION})`;
      } else {
        const r = version === 1 ? StateV1Schema.safeParse(raw) : StateSchema.safeParse(raw);
        if (r.success) return { state: r.data.version === 1 ? fromV1(r.data) : r.data };
        reason = `invalid state: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`;
      }
    } catch (e) {
      reason = `not JSON: ${(e as Error).message}`;
    }
    const aside = `${this.file}.bad-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    await rename(this.file, aside);
    return { state: { version: STATE_VERSION, volumes: [] }, quarantined: { path: aside, reason } };
  }

  /**
   * Writes are queued so that the file always ends with the last snapshot
   * asked for, and grouped: saves asked for while a write is in flight share
   * the one write after it, which stores the newest of their snapshots (each
   * is the whole state, so it holds every change before it). Without that a
   * storm of N Creates and N Mounts queued 2N fsynced writes behind each
   * other, and every call waited for all of them. A save resolves once a
   * snapshot at least as new as its own is durable.
   */
  save(state: State): Promise<void> {
    if (this.next) {
      this.next.state = state;
      return this.next.done;
    }
    const job: { state: State; done: Promise<void> } = { state, done: Promise.resolve() };
    job.done = this.writing.then(async () => {
      // From here on, new saves wait for the write after this one.
      if (this.next === job) this.next = undefined;
      await this.write(job.state);
    });
    this.next = job;
    this.writing = job.done.catch(() => undefined);
    return job.done;
  }

  private async write(state: State): Promise<void> {
    const text = JSON.stringify(state, null, 2) + '\n';
    await writeFileAtomic(this.file, text, { mode: 0o600, fsync: true });
    // The rename is only durable once the directory entry is on disk.
    const d = await open(this.dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }

}
