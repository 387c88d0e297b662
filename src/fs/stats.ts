// Per-mount counters for Status (`docker volume inspect`): bytes, operations
// by kind, errors by errno, when the last failure happened, and the
// round-trip time to the store. Every counter is allocated when the mount
// is made; counting a FUSE operation is an index lookup and an increment,
// and the trace line per operation is only built when trace is enabled.
import { constants } from 'node:os';
import type { Logger } from 'pino';

/** The FUSE operations the adapter serves, in a fixed order (index = counter slot). */
const OPS = [
  'getattr', 'fgetattr', 'access', 'readdir', 'statfs', 'readlink', 'mkdir', 'mknod', 'rmdir', 'unlink', 'symlink', 'link', 'rename',
  'chmod', 'chown', 'utimens', 'truncate', 'ftruncate', 'open', 'create', 'read', 'write', 'flush', 'fsync', 'release',
] as const;
const SLOT = new Map<string, number>(OPS.map((o, i) => [o, i]));
const OTHER = OPS.length;

const NAME_OF = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v, k]));
const MAX_ERRNO = 256;

/**
 * Answers that are how a filesystem says "no" in normal use (a lookup of a
 * name that is not there, mkdir -p over an existing directory): counted,
 * but they do not move last_error_at.
 */
const ROUTINE = new Set<number>([constants.errno.ENOENT, constants.errno.EEXIST, constants.errno.ENOTEMPTY, constants.errno.ENAMETOOLONG]);

export class MountStats {
  bytesRead = 0;
  bytesWritten = 0;
  private readonly ops = new Float64Array(OPS.length + 1);
  private readonly errnos = new Float64Array(MAX_ERRNO);
  private lastErrorAt = 0;
  private lastErrno = 0;
  /** Last and smallest round-trip time of a small SFTP request, ms. */
  rttMs = NaN;
  rttMinMs = NaN;
  private readonly trace: boolean;

  constructor(private readonly log: Logger) {
    this.trace = log.isLevelEnabled('trace');
  }

  /** The FUSE adapter's observer: once per finished operation. */
  readonly observe = (op: string, errno: number, bytes: number, path?: string): void => {
    this.ops[SLOT.get(op) ?? OTHER]++;
    if (op === 'read') this.bytesRead += bytes;
    else if (op === 'write') this.bytesWritten += bytes;
    if (errno !== 0) {
      this.errnos[errno < MAX_ERRNO ? errno : 0]++;
      if (!ROUTINE.has(errno)) {
        this.lastErrorAt = Date.now();
        this.lastErrno = errno;
      }
    }
    if (this.trace) this.log.trace({ op, errno: errno === 0 ? 0 : (NAME_OF.get(errno) ?? errno), bytes, path }, 'fs op');
  };

  rtt(ms: number): void {
    this.rttMs = Math.round(ms * 100) / 100;
    if (!(this.rttMinMs <= this.rttMs)) this.rttMinMs = this.rttMs;
  }

  /** For Status: only what has happened (zero counts left out). */
  snapshot(): Record<string, unknown> {
    const operations: Record<string, number> = {};
    let total = 0;
    for (let i = 0; i <= OPS.length; i++) {
      if (this.ops[i] === 0) continue;
      operations[OPS[i] ?? 'other'] = this.ops[i];
      total += this.ops[i];
    }
    const errors: Record<string, number> = {};
    for (let n = 0; n < MAX_ERRNO; n++) if (this.errnos[n] > 0) errors[NAME_OF.get(n) ?? `errno ${n}`] = this.errnos[n];
    return {
      bytes_read: this.bytesRead,
      bytes_written: this.bytesWritten,
      operations: total,
      operations_by_type: operations,
      errors,
      ...(this.lastErrorAt > 0 && { last_error_at: new Date(this.lastErrorAt).toISOString(), last_errno: NAME_OF.get(this.lastErrno) ?? this.lastErrno }),
      ...(!Number.isNaN(this.rttMs) && { rtt_ms: this.rttMs, rtt_min_ms: this.rttMinMs }),
    };
  }
}
