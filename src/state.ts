// The daemon's durable state: TSFS_STATE_DIR/tsfs.json. Written atomically
// (temp file, fsync, rename, then fsync of the directory) at 0600 in a 0700
// directory because it holds passwords needed to remount after a restart.
// Key material is never stored, only key paths.
import { mkdir, chmod, readFile, rename, open } from 'node:fs/promises';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { z } from 'zod';
import { VolumeSpecSchema, isVolumeName } from './options';

export const STATE_VERSION = 1;
export const STATE_FILE = 'tsfs.json';

export const VolumeRecordSchema = z.object({
  // Checked again on load: a hand-edited name must not point a mountpoint outside TSFS_MOUNT_ROOT.
  name: z.string().refine(isVolumeName, { message: 'not a valid volume name' }),
  /** RFC 3339. */
  createdAt: z.string(),
  spec: VolumeSpecSchema,
  /** Host key seen at Create under accept-new, pinned for every later connection. */
  pinnedHostKey: z.string().optional(),
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

export interface LoadResult {
  state: State;
  /** Set when a bad file was moved aside: where it went and why. */
  quarantined?: { path: string; reason: string };
}

export class StateStore {
  readonly file: string;
  private writing: Promise<void> = Promise.resolve();

  constructor(readonly dir: string) {
    this.file = join(dir, STATE_FILE);
  }

  /** Never throws for a bad file: the daemon must start anyway, so the file is moved aside. */
  async load(): Promise<LoadResult> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
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
      if (version !== STATE_VERSION) {
        reason = `unknown state version ${JSON.stringify(version)} (this tsfs reads version ${STATE_VERSION})`;
      } else {
        const r = StateSchema.safeParse(raw);
        if (r.success) return { state: r.data };
        reason = `invalid state: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`;
      }
    } catch (e) {
      reason = `not JSON: ${(e as Error).message}`;
    }
    const aside = `${this.file}.bad-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    await rename(this.file, aside);
    return { state: { version: STATE_VERSION, volumes: [] }, quarantined: { path: aside, reason } };
  }

  /** Writes are queued so that the file always ends with the last snapshot asked for. */
  save(state: State): Promise<void> {
    const text = JSON.stringify(state, null, 2) + '\n';
    const next = this.writing.then(async () => {
      await writeFileAtomic(this.file, text, { mode: 0o600, fsync: true });
      // The rename is only durable once the directory entry is on disk.
      const d = await open(this.dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    });
    this.writing = next.catch(() => undefined);
    return next;
  }
}
