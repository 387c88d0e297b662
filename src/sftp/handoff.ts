// A connection kept from a volume's Create check for the Mount that follows.
//
// Why: dockerd sends Create and, for `docker run -v` or a Swarm task, Mount
// right after it. Each of them opening its own connection costs the store two
// logins and two sftp-server starts (through the user's login shell) per
// volume; in a storm those starts are what the store runs out of. Handing
// Create's connection, already authenticated and with its SFTP channel open,
// to the Mount halves that. A Mount that does not come within HANDOFF_TTL_MS
// (`docker volume create` alone, a Mount on another day) finds nothing and
// connects as usual; the kept connection is closed, so it never holds a store
// process for longer than that.
import type { SFTPWrapper } from 'ssh2';
import type { SshLink } from './connect';

export interface HeldLink {
  link: SshLink;
  sftp: SFTPWrapper;
}

/** dockerd's Create-to-Mount gap is milliseconds; seconds under a storm. */
export const HANDOFF_TTL_MS = 15_000;

export class Handoff {
  private held?: HeldLink;
  private readonly timer: NodeJS.Timeout;

  constructor(held: HeldLink, ttlMs = HANDOFF_TTL_MS) {
    this.held = held;
    // A link the server closed meanwhile (ClientAliveInterval, a restart) is not handed on.
    const drop = () => this.discard();
    held.link.client.once('close', drop);
    held.sftp.once('close', drop);
    this.timer = setTimeout(drop, ttlMs);
    this.timer.unref();
  }

  /** The kept connection, once; undefined after it expired, closed or was taken. */
  take(): HeldLink | undefined {
    const h = this.held;
    this.held = undefined;
    clearTimeout(this.timer);
    return h;
  }

  /** Close the kept connection if nobody took it. */
  discard(): void {
    this.take()?.link.close();
  }
}
