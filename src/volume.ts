// One volume's mount lifecycle. The filesystem is mounted when the first
// Docker mount ID arrives and unmounted when the last one leaves; the IDs are
// a set (dockerd may repeat a Mount) and are persisted by the driver so they
// survive a daemon restart.
import { mkdir, rmdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { MountFs, MountedFs } from './fs/index';
import { describeRemote, toSshTarget } from './options';
import type { ProbeResult } from './sftp/probe';
import type { SshTarget } from './sftp/target';
import type { VolumeRecord } from './state';

export type Probe = (target: SshTarget, opts: { mkdir: boolean }, onWarn?: (m: string) => void) => Promise<ProbeResult>;

export interface VolumeDeps {
  mountFs: MountFs;
  sshDir: string;
  log: Logger;
  probe?: Probe;
}

export class Volume {
  private fs?: MountedFs;
  private readonly ids: Set<string>;
  private lastError?: string;
  private restoring = false;
  readonly log: Logger;

  constructor(
    private record: VolumeRecord,
    readonly mountpoint: string,
    private readonly deps: VolumeDeps,
  ) {
    this.ids = new Set(record.mountIds);
    this.log = deps.log.child({ volume: record.name });
  }

  get name(): string {
    return this.record.name;
  }
  get mountIds(): string[] {
    return [...this.ids];
  }
  get mounted(): boolean {
    return this.fs !== undefined;
  }

  /** The record to persist, reflecting the current mount-ID set. */
  snapshot(): VolumeRecord {
    return { ...this.record, mountIds: [...this.ids] };
  }

  /** Idempotent per ID. Mounts the filesystem if it is not mounted (first ID, or a failed restore). */
  async mount(id: string): Promise<void> {
    if (!this.fs) await this.attach();
    if (this.ids.has(id)) {
      this.log.debug({ mountId: id, mounts: this.ids.size }, 'mount ID already known: nothing to do');
      return;
    }
    this.ids.add(id);
  }

  /** Returns false for an ID that is not mounted, which is harmless (dockerd retries after our restarts). */
  async unmount(id: string): Promise<boolean> {
    if (!this.ids.delete(id)) {
      this.log.debug({ mountId: id }, 'unmount of an unknown mount ID: nothing to do');
      return false;
    }
    if (this.ids.size === 0) await this.detach();
    return true;
  }

  /** After a daemon restart: remount if containers still hold the volume. Failure is kept for Status; the IDs stay. */
  async restore(): Promise<void> {
    if (this.ids.size === 0 || this.fs) return;
    this.restoring = true;
    try {
      await this.attach();
      this.log.info({ mounts: this.ids.size }, 'restored mount after restart');
    } catch (e) {
      this.log.error({ err: (e as Error).message, mounts: this.ids.size }, 'could not restore mount after restart; the next Mount retries');
    } finally {
      this.restoring = false;
    }
  }

  /** Unmount the filesystem but keep the IDs (daemon shutdown: containers still hold it). */
  async detach(): Promise<void> {
    const fs = this.fs;
    if (!fs) return;
    this.fs = undefined;
    await fs.unmount();
    this.log.debug('filesystem unmounted');
  }

  /** Remove the (empty) local mountpoint directory; never recursive, never remote. */
  async removeMountpoint(): Promise<void> {
    try {
      await rmdir(this.mountpoint);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code === 'ENOTCONN' && (await detachStale(this.mountpoint))) {
        await rmdir(this.mountpoint).catch((e2: Error) => this.log.warn({ err: e2.message, mountpoint: this.mountpoint }, 'left the mountpoint directory in place'));
        return;
      }
      this.log.warn({ err: (e as Error).message, mountpoint: this.mountpoint }, 'left the mountpoint directory in place (not empty, or still mounted); nothing was deleted');
    }
  }

  status(): Record<string, unknown> {
    const spec = this.record.spec;
    const hostKey = spec.hostKey ?? this.record.pinnedHostKey;
    return {
      remote: describeRemote(spec),
      ...(this.record.remoteRealPath && { remote_realpath: this.record.remoteRealPath }),
      connection: this.fs ? this.fs.linkState : this.restoring ? 'restoring' : this.ids.size > 0 ? 'not mounted (mount failed)' : 'unmounted',
      ...((this.fs?.lastError ?? this.lastError) && { last_error: this.fs?.lastError ?? this.lastError }),
      mounts: this.ids.size,
      host_key: hostKey ?? (spec.strictHostKeyChecking === 'no' ? 'not checked (StrictHostKeyChecking=no)' : 'pinned at first connection'),
      read_only: spec.readOnly,
      ...(spec.notes.length > 0 && { notes: spec.notes }),
    };
  }

  private async attach(): Promise<void> {
    try {
      // Before mkdir: on a dead FUSE mount (left by a crash) even mkdir -p fails with ENOTCONN.
      if (await detachStale(this.mountpoint)) {
        this.log.warn({ mountpoint: this.mountpoint }, 'stale FUSE mount found (Transport endpoint is not connected): detached it lazily');
      }
      await mkdir(this.mountpoint, { recursive: true, mode: 0o755 });
      const spec = this.record.spec;
      let target = await toSshTarget(spec, { sshDir: this.deps.sshDir, pinnedHostKey: this.record.pinnedHostKey });
      if (spec.strictHostKeyChecking === 'accept-new' && !target.hostKey) {
        // check=false skipped the Create-time probe: pin the key on first use instead.
        const probe = this.deps.probe ?? (await import('./sftp/probe')).probeRemote;
        const seen = await probe(target, { mkdir: spec.mkdir }, (m) => this.log.warn(m));
        this.record = { ...this.record, pinnedHostKey: seen.hostKey, remoteRealPath: seen.realPath };
        target = { ...target, hostKey: seen.hostKey };
        this.log.info({ hostKey: seen.hostKey }, 'pinned host key at first mount');
      }
      this.fs = await this.deps.mountFs({
        target,
        mountpoint: this.mountpoint,
        ...(spec.uid !== undefined && { uid: spec.uid }),
        ...(spec.gid !== undefined && { gid: spec.gid }),
        ...(spec.umask !== undefined && { umask: spec.umask }),
        allowOther: spec.allowOther,
        readOnly: spec.readOnly,
        cacheTimeout: spec.cacheTimeout,
        reconnectTimeoutMs: spec.reconnectTimeout * 1000,
        log: this.log,
      });
      this.lastError = undefined;
      this.log.debug({ mountpoint: this.mountpoint, remote: describeRemote(spec) }, 'filesystem mounted');
    } catch (e) {
      this.lastError = (e as Error).message;
      throw e;
    }
  }
}

// The filesystem module (fuse-native, ssh2) loads on first use so the socket
// listens quickly at start; main.ts preloads it right after listening.
async function detachStale(mountpoint: string): Promise<boolean> {
  return (await import('./fs/index')).detachStale(mountpoint);
}
