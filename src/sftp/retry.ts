// Which connection-setup failures are worth another attempt, and the
// attempts themselves: jittered exponential backoff inside one deadline.
//
// When hundreds of hosts mount at once, a stock sshd sheds load: past
// MaxStartups it closes new connections before the key exchange, a busy
// listener resets them, and a Subsystem started through a login shell can
// take seconds to answer a channel. Those say nothing about the volume's
// settings, so they are retried. A wrong password, a host key mismatch, an
// unknown host name or a closed port are answers about the settings: they
// fail at once, with the message the user would get without a storm.
//
// The classification uses ConnectError's code (set from errno codes and the
// phase the connection reached, src/sftp/explain.ts), never message text.
import type { Logger } from 'pino';
import type { SFTPWrapper } from 'ssh2';
import { ConnectError, type SshLink } from './connect';

export type Verdict = 'transient' | 'permanent';

// closed-before-banner: sshd past MaxStartups (it says so, or resets);
// banner-timeout and timeout: a listener or sshd too busy to answer in time;
// channel: a channel refused (MaxSessions) or a Subsystem slow to start.
const TRANSIENT = new Set<ConnectError['code']>(['closed-before-banner', 'banner-timeout', 'timeout', 'channel']);

export function classify(err: unknown): Verdict {
  return err instanceof ConnectError && TRANSIENT.has(err.code) ? 'transient' : 'permanent';
}

/**
 * How long connection setup may keep retrying for one Create or Mount.
 * dockerd gives a managed plugin's call 30 s when the plugin was enabled with
 * `docker plugin enable` (its --timeout default) and 2 min for Create/Mount
 * otherwise (docs/scaling.md); 25 s leaves time for the FUSE mount and the
 * state file, so the answer still reaches dockerd.
 */
export const SETUP_DEADLINE_MS = 25_000;

export interface RetryPolicy {
  /** Give up once this much time has passed since the first attempt. */
  deadlineMs: number;
  /** First backoff; doubles per attempt up to maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Stop early (e.g. dockerd closed the request). */
  signal?: AbortSignal;
  random?: () => number;
}

export interface Attempt {
  /** 1-based. */
  n: number;
  /** Milliseconds left until the deadline when this attempt starts. */
  remainingMs: number;
}

export type RetryListener = (info: { attempt: number; err: Error; code: string; retryInMs: number }) => void;

/** The info line each retried attempt gets (normal under load, so not a warning). */
export function logRetries(log: Logger, count?: () => void): RetryListener {
  return ({ attempt, err, code, retryInMs }) => {
    count?.();
    log.info({ attempt, code, err: err.message, retryInMs }, 'connection setup failed (transient): retrying');
  };
}

/**
 * Run `fn` until it succeeds, fails permanently, or the deadline leaves no
 * room for another attempt. `onRetry` sees each failed attempt that will be
 * retried (for the info log line and the retry counters).
 */
export async function withRetry<T>(
  fn: (a: Attempt) => Promise<T>,
  policy: RetryPolicy,
  onRetry: RetryListener,
): Promise<T> {
  const start = Date.now();
  const base = policy.baseDelayMs ?? 250;
  const max = policy.maxDelayMs ?? 4_000;
  const random = policy.random ?? Math.random;
  for (let n = 1; ; n++) {
    const remainingMs = policy.deadlineMs - (Date.now() - start);
    try {
      return await fn({ n, remainingMs });
    } catch (e) {
      const err = e as Error;
      if (classify(err) === 'permanent' || policy.signal?.aborted) throw err;
      // Jitter (half to all of the backoff): hosts that failed together must
      // not come back together.
      const cap = Math.min(max, base * 2 ** (n - 1));
      const delay = Math.round(cap / 2 + random() * (cap / 2));
      // An attempt needs time too: do not start one that cannot finish.
      // Out of time: the last failure, saying how long it was retried.
      if (Date.now() - start + delay + MIN_ATTEMPT_MS > policy.deadlineMs) throw n > 1 ? retriedFor(err, n, Date.now() - start) : err;
      onRetry({ attempt: n, err, code: (err as ConnectError).code, retryInMs: delay });
      await sleep(delay, policy.signal);
      if (policy.signal?.aborted) throw err;
    }
  }
}

function retriedFor(err: Error, attempts: number, ms: number): Error {
  if (!(err instanceof ConnectError)) return err;
  const e = new ConnectError(`${err.message} (${attempts} attempts in ${(ms / 1000).toFixed(0)} s)`, err.code);
  e.cause = err;
  return e;
}

/** Shortest attempt worth starting: a TCP connect, key exchange and auth on a loaded server. */
const MIN_ATTEMPT_MS = 1_000;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * One SFTP channel within `timeoutMs`. A refusal (the server's
 * CHANNEL_OPEN_FAILURE, e.g. past MaxSessions) or no answer in time (a
 * Subsystem slow to start) is ConnectError 'channel', which is transient.
 */
export async function openChannel(link: SshLink, timeoutMs: number, where: string): Promise<SFTPWrapper> {
  let timer: NodeJS.Timeout | undefined;
  const opening = link.openSftp();
  try {
    return await Promise.race([
      opening,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new ConnectError(
                `${where} accepted the connection but did not answer SFTP requests within ${timeoutMs} ms: check the server's sftp subsystem and load`,
                'channel',
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  } catch (e) {
    // A channel that opens after the timeout would be an sftp-server nobody uses.
    opening.then((s) => s.end(), () => undefined);
    if (e instanceof ConnectError) throw e;
    // ssh2 sets a numeric `reason` on CHANNEL_OPEN_FAILURE; a refused
    // subsystem ("Unable to start subsystem") has none and is permanent.
    const refused = typeof (e as { reason?: unknown }).reason === 'number';
    throw new ConnectError(`${where}: ${(e as Error).message}`, refused ? 'channel' : 'network');
  } finally {
    clearTimeout(timer);
  }
}
