// Why a connection failed, in the user's words, with what to do about it.
// connect.ts reports a low-level error plus the phase it happened in and what
// the server sent (its first bytes); this module turns that into one
// ConnectError whose message is the Err dockerd shows and whose code says
// which entry of docs/options.md's error catalogue it is.
import { connect as tlsConnect } from 'node:tls';
import { TsfsError } from '../errors';

export type ConnectErrorCode =
  | 'dns'
  | 'refused'
  | 'timeout'
  | 'unreachable'
  /** Something answered on the port, but not SSH (TLS, HTTP, another protocol). */
  | 'not-ssh'
  /** TCP accepted, then closed or reset with no SSH banner (MaxStartups, TCP wrappers, fail2ban). */
  | 'closed-before-banner'
  /** TCP accepted, then silence: nothing sent a banner within ConnectTimeout. */
  | 'banner-timeout'
  | 'handshake'
  | 'host-key-mismatch'
  | 'host-key-unknown'
  | 'auth'
  /** The bastion (ProxyJump) could not reach the store. */
  | 'jump'
  | 'no-such-directory'
  | 'not-a-directory'
  | 'permission-denied'
  /** An SFTP channel refused (MaxSessions) or not opened in time (a slow Subsystem); retried (retry.ts). */
  | 'channel'
  | 'network';

/** A connection failure; one of the codes of the one error type (src/errors.ts). */
export class ConnectError extends TsfsError {
  constructor(
    message: string,
    /** Machine-readable cause, for Status and tests. */
    override readonly code: ConnectErrorCode,
  ) {
    super(message, code);
  }
}

/** Where a connection attempt was when it failed. */
export type Phase =
  /** Name lookup. */
  | 'resolve'
  /** TCP connect (or, through a bastion, its forward to the store). */
  | 'tcp'
  /** TCP up, waiting for or reading the server's identification line and key exchange. */
  | 'banner'
  /** After the banner: key exchange, host key, authentication. */
  | 'handshake';

export interface FailureContext {
  /** `host:port` as messages show it. */
  where: string;
  host: string;
  port: number;
  connectTimeout: number;
  /** First bytes the server sent on this connection (at most a few hundred). */
  firstBytes: Buffer;
  /** The server's SSH software version, once its banner arrived. */
  serverIdent?: string;
  /** For an authentication failure: the user, what was tried, what the server offers. */
  username?: string;
  tried?: string[];
  offered?: string[] | null;
  /** Set when the TCP peer looked like TLS to a second, diagnostic connection (see probeTls). */
  looksLikeTls?: boolean;
  /** The SSH version this endpoint announced to an earlier connection of this daemon, if any. */
  greetedBefore?: string;
}

type LowLevel = Error & { code?: string | number; level?: string; reason?: string | number };

const USE_SSH_PORT = 'point -o port= at the SSH port (usually 22; `ssh -v -p PORT HOST` shows what answers there)';

/** The first line the server sent, printable, for quoting in a message. */
function firstLine(b: Buffer): string {
  const line = b.toString('latin1').split(/\r?\n/)[0] ?? '';
  // eslint-disable-next-line no-control-regex
  const shown = line.replace(/[^\x20-\x7e]/g, '.');
  return shown.length > 80 ? shown.slice(0, 80) + '...' : shown;
}

/** TLS record header: handshake (0x16) or alert (0x15), version 3.x. */
export const isTlsRecord = (b: Buffer) => b.length >= 2 && (b[0] === 0x16 || b[0] === 0x15) && b[1] === 0x03;
export const isHttp = (b: Buffer) => b.subarray(0, 5).toString('latin1') === 'HTTP/';
export const hasSshBanner = (b: Buffer) => /(^|\n)SSH-/.test(b.toString('latin1'));

/**
 * Bytes that already prove the peer is not an SSH server, so there is no
 * point waiting for ConnectTimeout. Other text before the banner is allowed
 * by RFC 4253 (section 4.2), so only TLS and HTTP answers fail fast.
 */
export function notSshYet(b: Buffer): boolean {
  return isTlsRecord(b) || isHttp(b);
}

/** The peer is not SSH: which protocol it looks like, and the fix. */
function notSsh(ctx: FailureContext): ConnectError | undefined {
  const b = ctx.firstBytes;
  if (isTlsRecord(b) || (b.length === 0 && ctx.looksLikeTls)) {
    return new ConnectError(`${ctx.where} speaks TLS, not SSH (an HTTPS or other TLS service listens there): ${USE_SSH_PORT}`, 'not-ssh');
  }
  if (isHttp(b)) {
    return new ConnectError(`${ctx.where} is an HTTP server, not SSH (it answered "${firstLine(b)}"): ${USE_SSH_PORT}`, 'not-ssh');
  }
  if (b.length > 0 && !hasSshBanner(b)) {
    return new ConnectError(`${ctx.where} is not an SSH server: it sent "${firstLine(b)}" where an SSH-2.0 banner belongs: ${USE_SSH_PORT}`, 'not-ssh');
  }
  return undefined;
}

const CLOSED_CAUSES =
  'sshd drops new connections while more than its MaxStartups are still unauthenticated (many mounts at once: stagger them, or raise MaxStartups in the server\'s sshd_config), ' +
  'or TCP wrappers, fail2ban or a firewall turns this host away; the server\'s sshd log says which';

/** Map a low-level failure in `phase` to the user's message. */
export function explainFailure(err: LowLevel, phase: Phase, ctx: FailureContext): ConnectError {
  if (err instanceof ConnectError) return err;
  const { where } = ctx;
  const code = typeof err.code === 'string' ? err.code : undefined;
  const timedOut = err.level === 'client-timeout' || /timed out/i.test(err.message);
  if (phase === 'resolve' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    const why = code === 'EAI_AGAIN' ? ' (the DNS server did not answer: try again, or check the resolver)' : '';
    return new ConnectError(`cannot resolve host ${ctx.host}${why}: check the host name in sshcmd`, 'dns');
  }
  if (phase === 'tcp') {
    switch (code) {
      case 'ECONNRESET':
        // On loopback the server's RST can overtake the client's view of the connect.
        return new ConnectError(`${where} accepted the TCP connection, then reset the connection before sending an SSH banner: ${CLOSED_CAUSES}`, 'closed-before-banner');
      case 'ECONNREFUSED':
        return new ConnectError(`connection to ${where} refused: is sshd running there, and is the port right (-o port=)?`, 'refused');
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
        return new ConnectError(`${where} is unreachable (${code}): check the address and the route or firewall between this host and the server`, 'unreachable');
      case 'ETIMEDOUT':
      case 'TCP_TIMEOUT':
        return new ConnectError(
          `timed out connecting to ${where} after ${ctx.connectTimeout} ms (no answer to the TCP connect): check the host, the port and the firewall; raise -o ConnectTimeout= on a slow link`,
          'timeout',
        );
    }
    return new ConnectError(`cannot connect to ${where}: ${err.message}`, 'network');
  }
  if (phase === 'banner') {
    // OpenSSH says why in plain text instead of a banner: "Exceeded MaxStartups", or "Not allowed at this time" (PerSourcePenalties, 9.8+).
    const said = firstLine(ctx.firstBytes);
    if (/^(Exceeded MaxStartups|Not allowed at this time)/.test(said)) {
      return new ConnectError(
        `sshd on ${where} turned the connection away ("${said}"): too many connections are still unauthenticated at once (MaxStartups) or this address is penalised (PerSourcePenalties); ` +
          `stagger the mounts, or raise MaxStartups in the server's sshd_config; tsfs retries on the next mount or reconnect`,
        'closed-before-banner',
      );
    }
    const other = notSsh(ctx);
    if (other) return other;
    if (!hasSshBanner(ctx.firstBytes)) {
      if (timedOut && ctx.greetedBefore) {
        // The port is right: sshd greeted this daemon here before. What
        // leaves a new connection without its banner then is a sshd busy
        // with many connections starting at once (it forks and re-executes
        // itself for each before it greets), which a fleet mounting together
        // brings about; the advice to check the port would send the user the
        // wrong way.
        return new ConnectError(
          `${where} (${ctx.greetedBefore}) greeted earlier connections but sent no SSH banner to this one within ${ctx.connectTimeout} ms: ` +
            `sshd there is too busy to start new connections in time (many mounts at once: stagger them, or raise -o ConnectTimeout=), or it is stuck; check sshd on the server`,
          'banner-timeout',
        );
      }
      if (timedOut) {
        return new ConnectError(
          `${where} accepted the TCP connection but sent no SSH banner within ${ctx.connectTimeout} ms: the port is served by something that waits for the client (a TLS, HTTP or database service), ` +
            `or sshd (or a proxy or NAT on the way) is stuck; ${USE_SSH_PORT}, or check sshd on the server`,
          'banner-timeout',
        );
      }
      const how = code === 'ECONNRESET' ? 'reset the connection' : 'closed the connection';
      return new ConnectError(`${where} accepted the TCP connection, then ${how} before sending an SSH banner: ${CLOSED_CAUSES}`, 'closed-before-banner');
    }
  }
  // The banner arrived: an SSH server that did not finish with us.
  const server = ctx.serverIdent ? ` (${ctx.serverIdent})` : '';
  if (err.level === 'client-authentication') {
    const offered = ctx.offered?.length ? `; the server accepts ${ctx.offered.join(', ')}` : '';
    return new ConnectError(
      `authentication as ${ctx.username} on ${where} failed; tried ${ctx.tried?.length ? ctx.tried.join(' and ') : 'no method (give -o IdentityFile=, or a key in sshkey.source, or -o password=)'}${offered}`,
      'auth',
    );
  }
  if (timedOut) {
    return new ConnectError(`${where}${server} did not finish the SSH handshake within ${ctx.connectTimeout} ms: the server or the link is overloaded; raise -o ConnectTimeout=`, 'timeout');
  }
  if (err.level === 'handshake') {
    return new ConnectError(`${where}${server}: SSH key exchange failed (${err.message}): the server offers no algorithm tsfs supports (AES-GCM, ChaCha20-Poly1305 or AES-CTR; curve25519/ECDH/DH group exchange); update its sshd_config`, 'handshake');
  }
  if (code === 'ECONNRESET' || code === 'EPIPE' || /Connection lost|closed/i.test(err.message)) {
    return new ConnectError(`${where}${server} closed the connection during the SSH handshake (${err.message}): the server's sshd log says why (e.g. MaxStartups, AllowUsers, a Match block, fail2ban)`, 'network');
  }
  return new ConnectError(`${where}${server}: ${err.message}`, 'network');
}

/**
 * A diagnostic second connection, only after a connection failed without a
 * banner: does the port complete (or refuse with an alert) a TLS handshake?
 * A TLS server given SSH's greeting just closes, which looks like a sshd
 * past MaxStartups; this tells the two apart.
 */
export function probeTls(host: string, port: number, servername: string | undefined, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const s = tlsConnect({ host, port, ...(servername && { servername }), rejectUnauthorized: false });
    const timer = setTimeout(() => finish(false), timeoutMs);
    s.once('secureConnect', () => finish(true));
    // An alert from the server (no shared cipher, client certificate required) is still TLS.
    s.once('error', (e: Error & { code?: string }) => finish(/alert|ERR_SSL_(?!WRONG_VERSION|PACKET_LENGTH)/i.test(`${e.code} ${e.message}`)));
    s.once('close', () => finish(false));
  });
}
