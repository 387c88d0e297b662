// One SSH connection with one or more SFTP channels, host key checked, and
// errors that say what failed and what to do about it (explain.ts). The
// connection is made step by step (resolve, TCP or a bastion's forward,
// banner, key exchange, authentication) so that each step can be timed in
// the debug log and a failure is explained by the step it happened in.
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { connect as tcpConnect, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { Client, type SFTPWrapper } from 'ssh2';
import { ConnectError, explainFailure, hasSshBanner, notSshYet, probeTls, type FailureContext, type Phase } from './explain';
import { describeTarget, type SshTarget } from './target';

export { ConnectError } from './explain';

/** OpenSSH's fingerprint format: `SHA256:` + unpadded base64 of the key blob's digest. */
export function fingerprintOf(keyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');
}

/** What was negotiated, for Status and the debug log. */
export interface LinkInfo {
  /** The server's identification line, e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`. */
  serverIdent?: string;
  /** Client-to-server cipher. */
  cipher?: string;
  kex?: string;
  hostKeyAlgorithm?: string;
  /** The authentication method that succeeded. */
  authMethod?: string;
  /** `host:port` of the bastion the connection goes through. */
  via?: string;
}

export interface SshLink {
  client: Client;
  /** Fingerprint of the host key the server presented on this connection. */
  hostKey: string;
  /** Fingerprint of the bastion's host key, when the connection goes through one. */
  jumpHostKey?: string;
  /** What was negotiated (absent on test doubles). */
  info?: LinkInfo;
  /** Open another SFTP channel on the same connection. */
  openSftp(): Promise<SFTPWrapper>;
  /** Extensions the server announced in its VERSION packet, e.g. `posix-rename@openssh.com`. */
  extensionsOf(sftp: SFTPWrapper): Set<string>;
  close(): void;
}

/** Receives each connection step at debug level; pino's Logger fits. */
export type StepLog = Pick<Logger, 'debug' | 'child'>;

// aes128-gcm first: with ssh2's native binding built it is the cheapest
// cipher per byte here, and it is what the benchmark pins for sshfs too.
const CIPHERS = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
];

/** Enough for a banner (at most 255 bytes, RFC 4253) and a line of whatever else answered. */
const FIRST_BYTES = 512;
/** Budget of the diagnostic TLS connection after a failure without a banner. */
const TLS_PROBE_MS = 3000;

const ms = (t0: number) => Math.round((performance.now() - t0) * 10) / 10;

/**
 * Endpoints (`host:port` as messages show it) that sent this daemon an SSH
 * banner, with the version they announced: a later connection left without
 * one then has a busy sshd, not a wrong port (explain.ts). As many entries
 * as endpoints the volumes name.
 */
const greeted = new Map<string, string>();

function openTcp(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error('TCP connect timed out'), { code: 'TCP_TIMEOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      // Nagle off: SFTP is request/response with small requests (READ, the
      // channel's WINDOW_ADJUST); with Nagle a small packet waits for the ACK of
      // the previous one, which the peer delays up to 40 ms. Measured: reads
      // stalled 35-40 ms every ~10 chunks, 53 MB/s for 64 MiB.
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** A direct-tcpip channel from the bastion to the store: ssh2's forwardOut, no program run anywhere. */
function forwardOut(jump: SshLink, host: string, port: number, timeoutMs: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    jump.client.forwardOut('127.0.0.1', 0, host, port, (err, stream) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(stream);
    });
  });
}

/**
 * Connect and authenticate. The host key is checked against `target.hostKey`
 * unless the policy is `no`; with `accept-new` and no pinned key the key seen
 * is accepted and returned as `hostKey` so the caller can pin it. With
 * `target.jump` the connection goes through that bastion, which is checked
 * and authenticated the same way with its own settings.
 */
export async function connectSsh(target: SshTarget, onWarn?: (msg: string) => void, log?: StepLog): Promise<SshLink> {
  const where = describeTarget(target);
  const t0 = performance.now();
  const step = (name: string, fields: Record<string, unknown> = {}) => log?.debug({ step: name, ms: ms(t0), ...fields }, `connect ${where}: ${name}`);
  const ctx: FailureContext = { where, host: target.host, port: target.port, connectTimeout: target.connectTimeout, firstBytes: Buffer.alloc(0), greetedBefore: greeted.get(where) };
  let sock: Duplex;
  let jump: SshLink | undefined;
  let address = target.host;
  if (target.jump) {
    const via = describeTarget(target.jump);
    try {
      jump = await connectSsh(target.jump, onWarn, log?.child({ hop: 'bastion' }));
    } catch (e) {
      const c = e as ConnectError;
      throw new ConnectError(`bastion (ProxyJump) ${via}: ${c.message}`, c.code ?? 'network');
    }
    step('bastion', { via, ms: ms(t0) });
    try {
      sock = await forwardOut(jump, target.host, target.port, target.connectTimeout);
    } catch (e) {
      jump.close();
      const r = e as Error & { reason?: number };
      // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED (1): AllowTcpForwarding/PermitOpen; CONNECT_FAILED (2): the bastion could not reach the store.
      const fix = r.reason === 1 ? 'the bastion forbids forwarding for this user (AllowTcpForwarding, PermitOpen in its sshd_config)' : 'check the store\'s host and port as the bastion sees them (sshcmd, -o port=)';
      throw new ConnectError(`bastion ${via} could not open a connection to ${where} (${r.message}): ${fix}`, 'jump');
    }
    // A channel stays half open after the store's side ends (ssh2 channels
    // allow it), so ssh2's client would never see 'close': end ours too.
    sock.once('end', () => sock.end());
    step('forward', { via });
  } else {
    if (isIP(target.host) === 0) {
      try {
        address = (await lookup(target.host)).address;
      } catch (e) {
        throw explainFailure(e as Error, 'resolve', ctx);
      }
      step('resolve', { address });
    }
    try {
      sock = await openTcp(address, target.port, target.connectTimeout);
    } catch (e) {
      throw explainFailure(e as Error, 'tcp', ctx);
    }
    step('tcp', { address });
  }
  const budget = Math.max(1, target.connectTimeout - (performance.now() - t0));
  try {
    const link = await handshake(target, sock, budget, ctx, step, onWarn, !jump ? address : undefined);
    if (jump) {
      const j = jump;
      link.jumpHostKey = j.hostKey;
      link.info.via = describeTarget(target.jump!);
      link.client.once('close', () => j.close());
      j.client.once('close', () => link.client.end());
      const close = link.close;
      link.close = () => {
        close();
        j.close();
      };
    }
    return link;
  } catch (e) {
    jump?.close();
    throw e;
  }
}

function handshake(
  target: SshTarget,
  sock: Duplex,
  readyTimeout: number,
  ctx: FailureContext,
  step: (name: string, fields?: Record<string, unknown>) => void,
  onWarn: ((msg: string) => void) | undefined,
  /** Set for a direct connection: where a diagnostic TLS connection may go. */
  address: string | undefined,
): Promise<SshLink & { info: LinkInfo }> {
  const where = ctx.where;
  return new Promise((resolve, reject) => {
    const client = new Client();
    let seenKey = '';
    let mismatch: ConnectError | undefined;
    let settled = false;
    let phase: Phase = 'banner';
    const info: LinkInfo = {};
    const tried: string[] = [];
    const used = new Set<string>();
    let offered: string[] | null = null;
    let method: string | undefined;
    const fail = (err: Error & { level?: string; code?: string | number }) => {
      if (settled) return;
      settled = true;
      client.end();
      sock.destroy();
      if (mismatch) return reject(mismatch);
      ctx.serverIdent = info.serverIdent;
      Object.assign(ctx, { username: target.username, tried, offered });
      // A TLS service closes on SSH's greeting; the diagnostic connection
      // tells it from an sshd that did. Not after a reset: an sshd past
      // MaxStartups closes with our greeting unread, which resets, and a
      // second connection per dropped attempt would only feed the storm. Nor
      // at an endpoint that greeted this daemon before: it speaks SSH.
      const bannerless = phase === 'banner' && ctx.firstBytes.length === 0 && err.code !== 'ECONNRESET';
      if (bannerless && address && !ctx.greetedBefore) {
        void probeTls(address, target.port, isIP(target.host) ? undefined : target.host, Math.min(TLS_PROBE_MS, target.connectTimeout)).then((tls) => {
          ctx.looksLikeTls = tls;
          reject(explainFailure(err, phase, ctx));
        });
        return;
      }
      reject(explainFailure(err, phase, ctx));
    };
    client.once('handshake', (n: { kex: string; serverHostKey: string; cs: { cipher: string } }) => {
      phase = 'handshake';
      Object.assign(info, { kex: n.kex, hostKeyAlgorithm: n.serverHostKey, cipher: n.cs.cipher });
      step('handshake', { server: info.serverIdent, kex: n.kex, hostKeyAlgorithm: n.serverHostKey, cipher: n.cs.cipher });
    });
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      info.authMethod = method;
      step('auth', { method, tried });
      resolve(makeLink(client, seenKey, info));
    });
    client.on('error', (err: Error & { code?: string; level?: string }) => fail(err));
    client.on('close', () => fail(Object.assign(new Error('Connection lost before handshake'), { level: 'protocol' })));
    // ssh2's own order: none (learns what the server offers), password, publickey.
    const methods = [...(target.password !== undefined ? ['password'] : []), ...(target.privateKey ? ['publickey'] : [])];
    try {
      client.connect({
        sock: sock as never,
        username: target.username,
        password: target.password,
        privateKey: target.privateKey,
        passphrase: target.passphrase,
        readyTimeout,
        keepaliveInterval: target.keepaliveInterval,
        keepaliveCountMax: target.keepaliveCountMax,
        algorithms: { cipher: CIPHERS as never },
        authHandler: ((left: string[] | null, _partial: boolean | null, _cb: unknown) => {
          if (left) offered = left;
          if (method === undefined) return (method = 'none');
          const next = methods.find((m) => !used.has(m) && (left === null || left.includes(m)));
          if (next === undefined) return false;
          used.add(next);
          tried.push(next === 'publickey' ? `publickey (${target.identityFile ?? 'key'})` : next);
          method = next;
          step('auth attempt', { method: next, serverOffers: left });
          return next;
        }) as never,
        hostVerifier: (key: Buffer) => {
          seenKey = fingerprintOf(key);
          if (target.strictHostKeyChecking === 'no') {
            onWarn?.(`StrictHostKeyChecking=no: accepting host key ${seenKey} of ${where} without checking it`);
            return true;
          }
          if (target.hostKey) {
            if (target.hostKey === seenKey) return true;
            mismatch = new ConnectError(
              `host key mismatch for ${where}: expected ${target.hostKey}, the server presented ${seenKey}. ` +
                `If the server's key really changed, recreate the volume with -o ${target.hostKeyOption ?? 'host_key'}=${seenKey}`,
              'host-key-mismatch',
            );
            return false;
          }
          if (target.strictHostKeyChecking === 'accept-new') return true;
          mismatch = new ConnectError(
            `StrictHostKeyChecking=yes but no host_key is pinned for ${where}; the server presented ${seenKey}. ` +
              `Check it out of band and pass -o ${target.hostKeyOption ?? 'host_key'}=${seenKey}`,
            'host-key-unknown',
          );
          return false;
        },
      });
    } catch (err) {
      // ssh2 throws synchronously for e.g. an unparsable private key.
      settled = true;
      sock.destroy();
      reject(new ConnectError(`${where}: ${(err as Error).message}${target.identityFile ? ` (key file ${target.identityFile})` : ''}`, 'auth'));
      return;
    }
    // Attached after connect(): ssh2 has paused the stream, so this listener
    // does not start the flow before ssh2's own parser listens.
    const onData = (d: Buffer) => {
      const room = FIRST_BYTES - ctx.firstBytes.length;
      ctx.firstBytes = Buffer.concat([ctx.firstBytes, d.subarray(0, room)]);
      if (ctx.firstBytes.length >= FIRST_BYTES || hasSshBanner(ctx.firstBytes)) {
        const m = /SSH-[^\r\n]*/.exec(ctx.firstBytes.toString('latin1'));
        if (m) {
          info.serverIdent = m[0];
          greeted.set(ctx.where, m[0]);
          step('banner', { server: m[0] });
        }
        sock.off('data', onData);
      }
      if (!info.serverIdent && notSshYet(ctx.firstBytes)) fail(new Error('not an SSH server'));
    };
    sock.on('data', onData);
  });
}

function makeLink(client: Client, hostKey: string, info: LinkInfo): SshLink & { info: LinkInfo } {
  return {
    client,
    hostKey,
    info,
    openSftp: () =>
      new Promise((resolve, reject) => client.sftp((err, sftp) => (err ? reject(err) : resolve(sftp)))),
    extensionsOf: (sftp) => new Set(Object.keys((sftp as unknown as { _extensions: Record<string, string> })._extensions ?? {})),
    close: () => client.end(),
  };
}
