// The boundary between a volume's mount lifecycle (src/volume.ts) and the
// SFTP-backed FUSE filesystem. volume.ts depends on nothing else in src/fs.
import type { Logger } from 'pino';
import type { HeldLink } from '../sftp/handoff';
import type { SshTarget } from '../sftp/target';
import { mountSftpFs as mountImpl, detachStale as detachImpl } from './mount';

export interface FsOptions {
  target: SshTarget;
  /** Absolute path of an existing empty directory to mount on. */
  mountpoint: string;
  /** Owner reported for every file; default: what the server says. */
  uid?: number;
  gid?: number;
  /** Permission bits masked out of every reported mode (octal number, e.g. 0o022). */
  umask?: number;
  /** Let every uid use the mount (containers run as any user). */
  allowOther: boolean;
  readOnly: boolean;
  /** Seconds a cached attribute or directory listing may be served (sshfs: 20). */
  cacheTimeout: number;
  log: Logger;
  /** Bytes of writes queued to the server but not yet acknowledged, per mount (default 2 MiB, the SSH channel window). */
  maxInFlightBytes?: number;
  /** How long an operation waits for a lost link to come back before failing with EIO (default 60 s). */
  reconnectTimeoutMs?: number;
  /** The Mount request was abandoned: stop retrying the first connection. */
  signal?: AbortSignal;
  /** A connection to `target` already open and checked (Create's): used instead of connecting; this mount owns it. */
  held?: HeldLink;
}

export type LinkState = 'connected' | 'reconnecting' | 'disconnected';

export interface MountedFs {
  readonly linkState: LinkState;
  /** Why the link is not back yet (e.g. host key mismatch naming both fingerprints); undefined while connected. */
  readonly lastError?: string;
  /** Counters and what was negotiated, for Status (absent on test doubles). */
  stats?(): Record<string, unknown>;
  /** Flush what can be flushed, detach the mount (lazily if busy), close SFTP. */
  unmount(): Promise<void>;
}

export type MountFs = (opts: FsOptions) => Promise<MountedFs>;

export const mountSftpFs: MountFs = mountImpl;

/** Lazily unmount `mountpoint` if it is a dead FUSE mount (ENOTCONN); true if it detached one. */
export const detachStale: (mountpoint: string) => Promise<boolean> = detachImpl;
