// Create-time check of a volume's remote: connect, verify the host key,
// authenticate, make sure the directory exists (or create it with -o mkdir)
// and resolve it. Errors name the host, port and what failed.
import type { SFTPWrapper, Stats } from 'ssh2';
import { ConnectError, connectSsh, type SshLink, type StepLog } from './connect';
import { withDeadline } from './deadline';
import type { HeldLink } from './handoff';
import { expandHome, HomePathError } from './paths';
import { SETUP_DEADLINE_MS, openChannel, withRetry, type RetryListener } from './retry';
import { describeTarget, type SshTarget } from './target';

export interface ProbeResult {
  /** Fingerprint of the host key the server presented. */
  hostKey: string;
  /** Fingerprint of the bastion's host key, with ProxyJump. */
  jumpHostKey?: string;
  /** Absolute path of the remote directory. */
  realPath: string;
  /** With `keep`: the checked connection, still open, for the Mount that follows (src/sftp/handoff.ts). */
  held?: HeldLink;
}

// SFTP status codes (draft-ietf-secsh-filexfer-02 section 7).
const NO_SUCH_FILE = 2;
const PERMISSION_DENIED = 3;

const call = <T>(fn: (cb: (err: (Error & { code?: number }) | null | undefined, v: T) => void) => void) =>
  new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));

export interface ProbeOptions {
  mkdir: boolean;
  log?: StepLog;
  /** Each transient connection failure that is retried (for its info log line). */
  onRetry?: RetryListener;
  /** Leave the connection open after a successful check and return it as `held`. */
  keep?: boolean;
}

export async function probeRemote(target: SshTarget, opts: ProbeOptions, onWarn?: (m: string) => void): Promise<ProbeResult> {
  const where = describeTarget(target);
  // Connection and first channel, retried as a mount's are (src/sftp/retry.ts).
  const { link, sftp } = await withRetry(
    async ({ remainingMs }) => {
      const timeoutMs = Math.max(1_000, Math.min(target.connectTimeout, remainingMs));
      const l = await connectSsh({ ...target, connectTimeout: timeoutMs }, onWarn, opts.log);
      try {
        return { link: l, sftp: await openChannel(l, timeoutMs, where) };
      } catch (e) {
        l.close();
        throw e;
      }
    },
    { deadlineMs: Math.max(SETUP_DEADLINE_MS, target.connectTimeout) },
    opts.onRetry ?? (() => undefined),
  );
  let result: ProbeResult;
  try {
    // The steps after the handshake get the same bound: this runs under the volume's lock.
    result = await withDeadline(
      check(link, sftp, target, opts),
      target.connectTimeout,
      () => new ConnectError(`${where} accepted the connection but did not answer SFTP requests within ${target.connectTimeout} ms: check the server's sftp subsystem and load`, 'timeout'),
    );
  } catch (e) {
    link.close();
    throw e;
  }
  if (!opts.keep) {
    link.close();
    return result;
  }
  return { ...result, held: { link, sftp } };
}

async function check(link: SshLink, sftp: SFTPWrapper, target: SshTarget, opts: { mkdir: boolean }): Promise<ProbeResult> {
  const where = describeTarget(target);
  const ext = link.extensionsOf(sftp);
  let dir = target.remotePath === '' ? '.' : target.remotePath;
  try {
    dir = await expandHome(sftp, ext, dir);
  } catch (e) {
    throw e instanceof HomePathError ? new ConnectError(e.message, 'no-such-directory') : new ConnectError(`cannot resolve ${dir} on ${where}: ${(e as Error).message}`, 'no-such-directory');
  }
  const explain = (e: Error & { code?: number }, what: string, path: string) => {
    if (e.code === NO_SUCH_FILE) {
      return new ConnectError(
        `remote directory ${path} does not exist on ${where}: create it, or add -o mkdir to create it at volume create`,
        'no-such-directory',
      );
    }
    if (e.code === PERMISSION_DENIED) {
      return new ConnectError(`permission denied to ${what} ${path} on ${where} as ${target.username}: fix the directory's permissions or use another user`, 'permission-denied');
    }
    return new ConnectError(`cannot ${what} ${path} on ${where}: ${e.message}`, 'network');
  };
  if (opts.mkdir) await mkdirP(sftp, dir, explain);
  let st: Stats;
  try {
    st = await call<Stats>((cb) => sftp.stat(dir, cb));
  } catch (e) {
    throw explain(e as Error & { code?: number }, 'stat', dir);
  }
  if (!st.isDirectory()) throw new ConnectError(`remote path ${dir} on ${where} is not a directory: point sshcmd at a directory`, 'not-a-directory');
  let realPath: string;
  try {
    realPath = await call<string>((cb) => sftp.realpath(dir, cb));
  } catch (e) {
    throw explain(e as Error & { code?: number }, 'resolve', dir);
  }
  return { hostKey: link.hostKey, realPath, ...(link.jumpHostKey && { jumpHostKey: link.jumpHostKey }) };
}

type Explain = (e: Error & { code?: number }, what: string, path: string) => Error;

/** `mkdir -p` over SFTP: create each missing component, tolerate ones that exist. */
async function mkdirP(sftp: SFTPWrapper, dir: string, explain: Explain): Promise<void> {
  const abs = dir.startsWith('/');
  const parts = dir.split('/').filter((p) => p !== '' && p !== '.');
  let cur = abs ? '' : '.';
  for (const p of parts) {
    cur = abs ? `${cur}/${p}` : `${cur}/${p}`;
    try {
      await call<void>((cb) => sftp.mkdir(cur, (err) => cb(err, undefined)));
    } catch (e) {
      // Already there (servers answer FAILURE, not a specific code): verified by the stat that follows.
      const exists = await call<Stats>((cb) => sftp.stat(cur, cb)).then(() => true, () => false);
      if (!exists) throw explain(e as Error & { code?: number }, 'create directory', cur);
    }
  }
}
