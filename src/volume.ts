// One volume's mount lifecycle. The filesystem is mounted when the first
// Docker mount ID arrives and unmounted when the last one leaves; the IDs are
// a set (dockerd may repeat a Mount) and are persisted by the driver so they
// survive a daemon restart.
import { mkdir, rmdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { MountFs, MountedFs } from './fs/index';
import { OptionsError, describeRemote, parseOptions, toSshTarget, type VolumeSpec } from './options';
import { Handoff } from './sftp/handoff';
import type { ProbeOptions, ProbeResult } from './sftp/probe';
import { logRetries } from './sftp/retry';
import { hostKeyToPin, type SshTarget } from './sftp/target';
import type { VolumeRecord } from './state';

export type Probe = (target: SshTarget, opts: ProbeOptions, onWarn?: (m: string) => void) => Promise<ProbeResult>;

export interface VolumeDeps {
  mountFs: MountFs;
  sshDir: string;
  /** The daemon's state directory: no key or password file may be read from it. */
  stateDir: string;
  log: Logger;
  probe?: Probe;
  /** Lazily detach a dead FUSE mount (ENOTCONN) at a mountpoint; true if it did. */
  detachStale(mountpoint: string): Promise<boolean>;
}

export class Volume {
  /** What the stored options mean in this version; undefined when this version refuses them (specError says why). */
  readonly spec?: VolumeSpec;
  private readonly specError?: string;
  private fs?: MountedFs;
  private readonly ids: Set<string>;
  private lastError?: string;
  private restoring = false;
  /** The connection the last check left open, for the Mount that follows (src/sftp/handoff.ts). */
  private handoff?: Handoff;
  readonly log: Logger;

  constructor(
    private record: VolumeRecord,
    readonly mountpoint: string,
    private readonly deps: VolumeDeps,
  ) {
    this.ids = new Set(record.mountIds);
    this.log = deps.log.child({ volume: record.name });
    try {
      this.spec = parseOptions(record.opts);
    } catch (e) {
      this.specError = (e as Error).message;
    }
  }

  /** The spec, or the error a Mount of a volume whose stored options this version refuses answers. */
  private usableSpec(): VolumeSpec {
    if (this.spec) return this.spec;
    throw new OptionsError(
      `volume ${this.name} was created with options this version of tsfs refuses (${this.specError}): ` +
        `remove it (docker volume rm ${this.name}) and create it again; the remote data is not touched`,
    );
  }

  /**
   * Connect once, check the remote directory (creating it with -o mkdir) and,
   * under accept-new with no host_key given, pin the key seen: the one place
   * a volume's host key gets pinned (at Create, or at first Mount when
   * check=false skipped Create's probe). The checked connection stays open
   * for a while, for the Mount that usually follows.
   */
  async checkRemote(when: 'create' | 'first mount'): Promise<SshTarget> {
    const spec = this.usableSpec();
    let target = await this.target(spec);
    const probe = this.deps.probe ?? (await import('./sftp/probe')).probeRemote;
    const seen = await probe(target, { mkdir: spec.mkdir, log: this.log, onRetry: logRetries(this.log), keep: true }, (m) => this.log.warn(m));
    this.handoff?.discard();
    this.handoff = seen.held && new Handoff(seen.held);
    this.record = { ...this.record, remoteRealPath: seen.realPath };
    // The bastion's key is pinned the same way, on its own.
    const jumpPin = target.jump && hostKeyToPin(target.jump, seen.jumpHostKey);
    if (jumpPin) {
      this.record = { ...this.record, pinnedJumpHostKey: jumpPin };
      this.log.info({ jumpHostKey: jumpPin }, `pinned bastion host key seen at ${when}`);
      target = { ...target, jump: { ...target.jump!, hostKey: jumpPin } };
    }
    const pin = hostKeyToPin(target, seen.hostKey);
    if (!pin) return target;
    this.record = { ...this.record, pinnedHostKey: pin };
    this.log.info({ hostKey: pin }, `pinned host key seen at ${when}`);
    return { ...target, hostKey: pin };
  }

  private target(spec: VolumeSpec): Promise<SshTarget> {
    return toSshTarget(spec, {
      sshDir: this.deps.sshDir,
      stateDir: this.deps.stateDir,
      pinnedHostKey: this.record.pinnedHostKey,
      pinnedJumpHostKey: this.record.pinnedJumpHostKey,
    });
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
  async mount(id: string, signal?: AbortSignal): Promise<void> {
    if (!this.fs) await this.attach(signal);
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

  /** The volume is removed: close the connection its Create kept, if no Mount took it. */
  discardHandoff(): void {
    this.handoff?.discard();
    this.handoff = undefined;
  }

  /** Remove the (empty) local mountpoint directory; never recursive, never remote. */
  async removeMountpoint(): Promise<void> {
    try {
      await rmdir(this.mountpoint);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code === 'ENOTCONN' && (await this.deps.detachStale(this.mountpoint))) {
        await rmdir(this.mountpoint).catch((e2: Error) => this.log.warn({ err: e2.message, mountpoint: this.mountpoint }, 'left the mountpoint directory in place'));
        return;
      }
      this.log.warn({ err: (e as Error).message, mountpoint: this.mountpoint }, 'left the mountpoint directory in place (not empty, or still mounted); nothing was deleted');
    }
  }

  status(): Record<string, unknown> {
    const spec = this.spec;
    if (!spec) return { connection: 'unusable', last_error: this.specError, mounts: this.ids.size };
    const hostKey = spec.hostKey ?? this.record.pinnedHostKey;
    return {
      remote: describeRemote(spec),
      ...(this.record.remoteRealPath && { remote_realpath: this.record.remoteRealPath }),
      connection: this.fs ? this.fs.linkState : this.restoring ? 'restoring' : this.ids.size > 0 ? 'not mounted (mount failed)' : 'unmounted',
      ...((this.fs?.lastError ?? this.lastError) && { last_error: this.fs?.lastError ?? this.lastError }),
      mounts: this.ids.size,
      ...this.fs?.stats?.(),
      host_key: hostKey ?? (spec.strictHostKeyChecking === 'no' ? 'not checked (StrictHostKeyChecking=no)' : 'pinned at first connection'),
      ...(spec.proxyJump && {
        proxy_jump: describeRemote({ ...spec.proxyJump, remotePath: '' }).replace(/:$/, ''),
        jump_host_key:
          spec.proxyJumpHostKey ?? this.record.pinnedJumpHostKey ?? (spec.strictHostKeyChecking === 'no' ? 'not checked (StrictHostKeyChecking=no)' : 'pinned at first connection'),
      }),
      read_only: spec.readOnly,
      ...(spec.notes.length > 0 && { notes: spec.notes }),
    };
  }

  private async attach(signal?: AbortSignal): Promise<void> {
    try {
      // Before mkdir: on a dead FUSE mount (left by a crash) even mkdir -p fails with ENOTCONN.
      if (await this.deps.detachStale(this.mountpoint)) {
        this.log.warn({ mountpoint: this.mountpoint }, 'stale FUSE mount found (Transport endpoint is not connected): detached it lazily');
      }
      await mkdir(this.mountpoint, { recursive: true, mode: 0o755 });
      const spec = this.usableSpec();
      const unpinned = (!spec.hostKey && !this.record.pinnedHostKey) || (spec.proxyJump && !spec.proxyJumpHostKey && !this.record.pinnedJumpHostKey);
      const target = spec.strictHostKeyChecking === 'accept-new' && unpinned ? await this.checkRemote('first mount') : await this.target(spec);
      const held = this.handoff?.take();
      this.handoff = undefined;
      if (held) this.log.debug('mounting over the connection the check left open');
      this.fs = await this.deps.mountFs({
        target,
        ...(held && { held }),
        mountpoint: this.mountpoint,
        ...(spec.uid !== undefined && { uid: spec.uid }),
        ...(spec.gid !== undefined && { gid: spec.gid }),
        ...(spec.umask !== undefined && { umask: spec.umask }),
        allowOther: spec.allowOther,
        readOnly: spec.readOnly,
        cacheTimeout: spec.cacheTimeout,
        reconnectTimeoutMs: spec.reconnectTimeout * 1000,
        log: this.log,
        ...(signal && { signal }),
      });
      this.lastError = undefined;
      this.log.debug({ mountpoint: this.mountpoint, remote: describeRemote(spec) }, 'filesystem mounted');
    } catch (e) {
      this.lastError = (e as Error).message;
      throw e;
    }
  }
}
