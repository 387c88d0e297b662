// How long a client may take to send its request, counted so that the
// server's own delays never count against it.
//
// Node's headersTimeout and requestTimeout compare wall time since the
// connection was accepted (or the last response) with the limit, from a
// timer. When this one thread is busy (256 volumes writing and unmounting
// at once lagged it by up to 13 s), that timer fires late, before the poll
// phase that would read the bytes already waiting in the socket: a request
// that arrived whole and on time was answered 408, and an Unmount answered
// 408 never ran, leaving its mount ID to pin the volume. Node's keep-alive
// timeout has the same flaw (it closes a connection whose next request is
// already in the buffer). So these three limits are ours, with one rule:
// a connection is cut only if it is still short of its request after the
// loop has polled every socket since the deadline passed. A client that
// stalls or trickles is cut one loop turn later than Node would cut it.
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';

export interface RequestTimeouts {
  /** A new connection must deliver a request's headers within this. */
  headersMs: number;
  /** ...and the whole request, body included, within this. */
  requestMs: number;
  /** A connection idle after a response is closed after this. */
  keepAliveMs: number;
  /** How often deadlines are looked at. */
  checkEveryMs: number;
}

/** Node's server options that turn its own checks off: these replace them. */
export const NODE_TIMEOUTS_OFF = { headersTimeout: 0, requestTimeout: 0, keepAliveTimeout: 0 } as const;

type Phase =
  /** No request yet (first: since the connection; else since the last response). */
  | { kind: 'waiting'; since: number; first: boolean }
  /** Headers in, body still arriving. */
  | { kind: 'body'; since: number; req: IncomingMessage }
  /** The whole request is in: handling it takes as long as it takes. */
  | { kind: 'handling' };

// What Node itself answers a client that was too slow.
const TOO_SLOW = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

export function enforceRequestTimeouts(server: Server, t: RequestTimeouts, log: Logger): void {
  const phases = new Map<Socket, Phase>();
  const now = () => performance.now();
  server.on('connection', (s: Socket) => {
    phases.set(s, { kind: 'waiting', since: now(), first: true });
    s.once('close', () => phases.delete(s));
  });
  // Before the app's own listener: the phase changes before any handler runs.
  server.prependListener('request', (req: IncomingMessage, res) => {
    const s = req.socket;
    const p = phases.get(s);
    if (!p) return; // closed meanwhile
    phases.set(s, req.complete ? { kind: 'handling' } : { kind: 'body', since: p.kind === 'waiting' ? p.since : now(), req });
    res.once('finish', () => {
      if (phases.has(s)) phases.set(s, { kind: 'waiting', since: now(), first: false });
    });
  });

  const overdue = (p: Phase, at: number): number | undefined => {
    if (p.kind === 'waiting') return at - p.since > (p.first ? t.headersMs : t.keepAliveMs) ? at - p.since : undefined;
    if (p.kind === 'body') return !p.req.complete && at - p.since > t.requestMs ? at - p.since : undefined;
    return undefined;
  };
  const timer = setInterval(() => {
    const at = now();
    const suspects = [...phases].filter(([, p]) => overdue(p, at) !== undefined);
    if (suspects.length === 0) return;
    // Timers run before the poll phase: bytes that reached the socket while
    // the loop was busy have not been parsed yet. An immediate runs after
    // this turn's poll, which reads every socket that has data.
    setImmediate(() => {
      for (const [s, p] of suspects) {
        const waited = overdue(p, at);
        if (phases.get(s) !== p || waited === undefined || s.destroyed) continue;
        if (p.kind === 'waiting' && !p.first) {
          // An idle keep-alive connection: closing it is routine.
          s.destroy();
          continue;
        }
        log.warn({ phase: p.kind === 'body' ? 'body' : 'headers', waitedMs: Math.round(waited) }, 'closed a connection whose request did not arrive in time: a VolumeDriver client must send each request whole, as dockerd does');
        if (s.writable) {
          s.write(TOO_SLOW);
          s.destroySoon();
        } else s.destroy();
        phases.delete(s);
      }
    });
  }, t.checkEveryMs);
  timer.unref();
  server.once('close', () => clearInterval(timer));
}
