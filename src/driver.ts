// The set of volumes behind the VolumeDriver API. Operations on one volume
// run one at a time (a promise chain per name), and every change is written
// to the state file before the answer goes back to dockerd.
import { readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import type { Logger } from 'pino';
import type {
  CapabilitiesResponse, CreateRequest, GetRequest, GetResponse, ListResponse, MountRequest, MountResponse,
  PathRequest, PathResponse, RemoveRequest, UnmountRequest, Volume as ApiVolume, VolumeDriver,
} from './api/protocol';
import type { MountFs } from './fs/index';
import { TsfsError } from './errors';
import { parseOptions, refuseStateFiles, specDifferences } from './options';
import { STATE_VERSION, type StateStore, type VolumeRecord } from './state';
import { Volume, type Probe } from './volume';

export interface DriverDeps {
  mountRoot: string;
  sshDir: string;
  store: StateStore;
  log: Logger;
  mountFs: MountFs;
  /** Create-time remote check; injectable only so unit tests can run without sshd. */
  probe?: Probe;
  /** Finding and detaching dead FUSE mounts; injectable only for unit tests. */
  stale?: StaleMounts;
  /** Bad plugin settings replaced by their defaults (config.ts): shown in every volume's Status. */
  settingsWarnings?: string[];
}

export interface StaleMounts {
  /** Mountpoints below `root`, from the kernel's mount table. */
  list(root: string): string[];
  /** Lazily detach `mountpoint` if it is a dead FUSE mount (ENOTCONN); true if it did. */
  detach(mountpoint: string): Promise<boolean>;
}

const STALE_MOUNTS: StaleMounts = {
  list(root) {
    let info: string;
    try {
      // Synchronous on purpose: restoreAll must queue its per-volume jobs in
      // one tick, before any request; procfs answers from memory.
      info = readFileSync('/proc/self/mountinfo', 'utf8');
    } catch {
      return [];
    }
    return info
      .split('\n')
      .map((l) => l.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))))
      .filter((m): m is string => !!m && m.startsWith(root + '/'));
  },
  detach: async (mp) => (await import('./fs/index')).detachStale(mp),
};

/** A refusal by the driver; the code says which (no-such-volume, in-use, exists). */
export class DriverError extends TsfsError {}

export class Driver implements VolumeDriver {
  private readonly volumes = new Map<string, Volume>();
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: DriverDeps, records: VolumeRecord[] = []) {
    for (const r of records) this.volumes.set(r.name, this.makeVolume(r));
  }

  async create(req: CreateRequest): Promise<void> {
    const name = req.Name;
    const spec = parseOptions(req.Opts);
    await this.withLock(name, async () => {
      const existing = this.volumes.get(name);
      if (existing) {
        // Both sides derived by this version: a default changed since the volume was made is no difference.
        const diff = existing.spec ? specDifferences(existing.spec, spec) : ['all: the stored ones are refused by this version'];
        if (diff.length > 0) {
          throw new DriverError(
            `volume ${name} already exists with different options (${diff.join(', ')} differ); ` +
              `use the same options, or remove it first with docker volume rm ${name}`,
            'exists',
          );
        }
        return;
      }
      await refuseStateFiles(spec, this.deps.store.dir);
      // parseOptions has refused any value that is not a string.
      const opts = { ...((req.Opts ?? {}) as Record<string, string>) };
      const v = this.makeVolume({ name, createdAt: new Date().toISOString(), opts, mountIds: [] });
      if (spec.check) await v.checkRemote('create');
      this.volumes.set(name, v);
      await this.save();
    });
  }

  async remove(req: RemoveRequest): Promise<void> {
    const name = req.Name;
    await this.withLock(name, async () => {
      const v = this.volumes.get(name);
      if (!v) {
        // Nothing to do; answering success keeps `docker volume rm` usable after a state file was set aside.
        this.deps.log.debug({ volume: name }, 'remove of an unknown volume: nothing to do');
        return;
      }
      const ids = v.mountIds;
      if (ids.length > 0) {
        throw new DriverError(
          `volume ${name} is in use by ${ids.length} container mount(s) (mount IDs: ${ids.join(', ')}); ` +
            `stop the containers using it first (docker ps -a --filter volume=${name})`,
          'in-use',
        );
      }
      this.volumes.delete(name);
      v.discardHandoff();
      await this.save();
      // Only the local, empty mountpoint directory goes; remote data is never touched.
      await v.removeMountpoint();
    });
  }

  /**
   * A Mount dockerd gave up on (`signal` aborted: it closed the request,
   * e.g. its timeout passed while the store was slow) is rolled back: dockerd
   * treats it as failed, never sends Unmount for its ID and uses a new ID
   * next time, so keeping the ID would pin the volume forever (docker volume
   * rm refuses it). The filesystem goes too when no other ID holds it.
   */
  async mount(req: MountRequest, signal?: AbortSignal): Promise<MountResponse> {
    const name = req.Name;
    const id = req.ID;
    return this.withLock(name, async () => {
      const v = this.mustGet(name);
      if (signal?.aborted) {
        v.log.info({ mountId: id }, 'Mount abandoned by dockerd before it started: not mounting');
        throw new DriverError(`Mount of ${name} abandoned: dockerd closed the request before it was served`, 'abandoned');
      }
      const known = v.mountIds.includes(id);
      try {
        await v.mount(id, signal);
      } finally {
        // A first-mount host key pin must be saved even if the mount then failed.
        await this.save();
      }
      // Checked after the save, right before the answer: the window in which
      // dockerd can still give up unseen is as short as it can be.
      if (signal?.aborted && !known) {
        await v.unmount(id);
        await this.save();
        v.log.info({ mountId: id, mounts: v.mountIds.length, mounted: v.mounted }, 'Mount finished after dockerd gave up: rolled back');
        throw new DriverError(`Mount of ${name} abandoned: dockerd closed the request before the answer; rolled back`, 'abandoned');
      }
      return { Mountpoint: v.mountpoint };
    });
  }

  /**
   * An Unmount runs to the end even if dockerd stops waiting: undoing it
   * would leak the ID. dockerd keeps the ID of a failed Unmount and sends it
   * again with the container's next Mount (volume/mounts MountPoint.Setup),
   * which mounts anew; if the container is removed instead, nothing ever
   * unmounts it again. So "rolled back" for Unmount means completed.
   */
  async unmount(req: UnmountRequest): Promise<void> {
    const name = req.Name;
    const id = req.ID;
    await this.withLock(name, async () => {
      const v = this.volumes.get(name);
      if (!v) {
        // As with an unknown ID: nothing is mounted, so the container can stop (e.g. after a state file was set aside).
        this.deps.log.debug({ volume: name, mountId: id }, 'unmount of an unknown volume: nothing to do');
        return;
      }
      try {
        await v.unmount(id);
      } finally {
        await this.save();
      }
    });
  }

  async path(req: PathRequest): Promise<PathResponse> {
    const v = this.mustGet(req.Name);
    return { Mountpoint: v.mountpoint };
  }

  async get(req: GetRequest): Promise<GetResponse> {
    return { Volume: this.describe(this.mustGet(req.Name)) };
  }

  async list(): Promise<ListResponse> {
    return { Volumes: [...this.volumes.values()].map((v) => this.describe(v)) };
  }

  capabilities(): CapabilitiesResponse {
    // Each host mounts on its own; Docker must not assume a cluster-wide volume.
    return { Capabilities: { Scope: 'local' } };
  }

  /** Remount volumes that containers still held when the daemon stopped. Runs after the socket listens. */
  restoreAll(): Promise<void> {
    const root = this.deps.mountRoot;
    const stale = this.deps.stale ?? STALE_MOUNTS;
    // After a crash every FUSE mount this daemon served is dead (ENOTCONN),
    // including those of volumes no container holds any more or that were
    // removed from the state: each is detached so nothing under the mount
    // root keeps answering "Transport endpoint is not connected". Each check
    // and detach runs under the lock of the volume the mountpoint belongs
    // to, queued in this tick ahead of that volume's restore and of any
    // request: "is it dead?" and "umount -l" then cannot straddle a restore
    // or a Mount that has just put a live mount there.
    const swept = stale.list(root).map((mp) => {
      const log = [...this.volumes.values()].find((v) => v.mountpoint === mp)?.log ?? this.deps.log;
      return this.withLock(relative(root, mp).split(sep)[0], async () => {
        if (await stale.detach(mp).catch(() => false)) {
          log.warn({ mountpoint: mp }, 'stale FUSE mount found (Transport endpoint is not connected): detached it lazily');
        }
      });
    });
    const restored = [...this.volumes.values()]
      .filter((v) => v.mountIds.length > 0)
      .map((v) => this.withLock(v.name, () => v.restore()).then(() => this.save()));
    return Promise.allSettled([...swept, ...restored]).then(() => undefined);
  }

  /** Unmount every filesystem, keeping mount IDs so the next start restores them, and save. */
  async shutdown(): Promise<void> {
    await Promise.allSettled(
      [...this.volumes.values()].map((v) =>
        this.withLock(v.name, () => v.detach()).catch((e: Error) => v.log.error({ err: e.message }, 'unmount at shutdown failed')),
      ),
    );
    await this.save();
  }

  private describe(v: Volume): ApiVolume {
    const warnings = this.deps.settingsWarnings ?? [];
    return {
      Name: v.name, Mountpoint: v.mountpoint, CreatedAt: v.snapshot().createdAt,
      Status: { ...v.status(), ...(warnings.length > 0 && { plugin_settings: warnings }) },
    };
  }

  private mustGet(name: string): Volume {
    const v = this.volumes.get(name);
    if (!v) throw new DriverError(`no such volume: ${name} (create it with docker volume create -d <driver> -o sshcmd=... ${name}, where <driver> is the name this plugin is installed under, as docker plugin ls shows it)`, 'no-such-volume');
    return v;
  }

  private makeVolume(r: VolumeRecord): Volume {
    return new Volume(r, join(this.deps.mountRoot, r.name), {
      mountFs: this.deps.mountFs,
      sshDir: this.deps.sshDir,
      stateDir: this.deps.store.dir,
      detachStale: (this.deps.stale ?? STALE_MOUNTS).detach,
      log: this.deps.log,
      ...(this.deps.probe && { probe: this.deps.probe }),
    });
  }

  private save(): Promise<void> {
    return this.deps.store.save({ version: STATE_VERSION, volumes: [...this.volumes.values()].map((v) => v.snapshot()) });
  }

  private withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const cur = prev.then(fn);
    const tail = cur.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(name, tail);
    void tail.then(() => {
      if (this.locks.get(name) === tail) this.locks.delete(name);
    });
    return cur;
  }
}

/**
 * What a daemon answers when another one holds its state directory
 * (state.ts): every volume operation fails with why and the fix. Its volumes
 * are the other daemon's, and an empty or stale list would make dockerd
 * forget them, or let `docker run -v name:/x` quietly create a local volume
 * of the same name. Activate and Capabilities still answer, so that
 * `docker plugin enable` succeeds and the message reaches the user.
 */
export class StateDirBusyDriver implements VolumeDriver {
  readonly message: string;

  constructor(stateDir: string, holder: string) {
    this.message =
      `this tsfs instance is not serving volumes: its state directory (${stateDir} in the plugin, the host directory ` +
      `of its state.source setting) is in use by another tsfs instance (${holder}); two instances on one state ` +
      `directory overwrite each other's volumes. Give each instance its own: docker plugin disable <alias>; ` +
      `docker plugin set <alias> state.source=/another/dir; docker plugin enable <alias>`;
  }

  private refuse(): never {
    throw new DriverError(this.message, 'state-dir-busy');
  }
  async create(): Promise<void> {
    this.refuse();
  }
  async remove(): Promise<void> {
    this.refuse();
  }
  async mount(): Promise<MountResponse> {
    this.refuse();
  }
  async unmount(): Promise<void> {
    this.refuse();
  }
  async path(): Promise<PathResponse> {
    this.refuse();
  }
  async get(): Promise<GetResponse> {
    this.refuse();
  }
  async list(): Promise<ListResponse> {
    this.refuse();
  }
  capabilities(): CapabilitiesResponse {
    return { Capabilities: { Scope: 'local' } };
  }
}
