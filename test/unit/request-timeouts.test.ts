// The API server's request timeouts (src/api/request-timeouts.ts) on a real
// unix socket: slow clients are cut, and a request that only waited because
// the server's own thread was busy is answered.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type RequestListener, type Server, type ServerOptions } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { NODE_TIMEOUTS_OFF, enforceRequestTimeouts, type RequestTimeouts } from '../../src/api/request-timeouts';

const LIMITS: RequestTimeouts = { headersMs: 300, requestMs: 600, keepAliveMs: 300, checkEveryMs: 50 };
const REQUEST = 'POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}';

const answer: RequestListener = (req, res) => {
  req.resume();
  req.on('end', () => {
    const reply = () => res.end('ok');
    // /slow: the handler itself takes longer than any request limit.
    if (req.url === '/slow') setTimeout(reply, 3 * LIMITS.requestMs);
    else reply();
  });
};

let dir: string;
let server: Server | undefined;
const logged: Record<string, unknown>[] = [];

async function serve(opts: { nodeOwnLimits?: boolean } = {}): Promise<string> {
  dir = mkdtempSync(join(tmpdir(), 'tsfs-rt-'));
  const socket = join(dir, 's');
  const nodeOwn: ServerOptions = { headersTimeout: LIMITS.headersMs, requestTimeout: LIMITS.requestMs, keepAliveTimeout: LIMITS.keepAliveMs, connectionsCheckingInterval: LIMITS.checkEveryMs };
  server = createServer(opts.nodeOwnLimits ? nodeOwn : NODE_TIMEOUTS_OFF, answer);
  if (!opts.nodeOwnLimits) {
    const log = pino({ level: 'debug' }, { write: (s: string) => void logged.push(JSON.parse(s) as Record<string, unknown>) });
    enforceRequestTimeouts(server, LIMITS, log);
  }
  await new Promise<void>((r) => server!.listen(socket, r));
  return socket;
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  server = undefined;
  logged.length = 0;
  rmSync(dir, { recursive: true, force: true });
});

/** Send `parts` (a string, or strings spaced `gapMs` apart) on one connection; what came back once it closed. */
function client(socket: string, parts: string[], gapMs = 0): Promise<{ answer: string; closedAfterMs: number }> {
  return new Promise((resolve) => {
    const s = connect(socket);
    const t0 = performance.now();
    let text = '';
    let closed = false;
    s.on('data', (b) => (text += b.toString()));
    s.on('error', () => undefined);
    s.on('close', () => {
      closed = true;
      resolve({ answer: text, closedAfterMs: performance.now() - t0 });
    });
    void (async () => {
      for (const p of parts) {
        if (closed) return;
        s.write(p);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
    })();
  });
}

/**
 * A request sent whole by another process while this server's thread is
 * blocked (as 256 simultaneous unmounts blocked the daemon's) for longer than
 * every limit; the answer's status line.
 */
async function requestDuringStall(socket: string): Promise<string> {
  const sent = join(dir, 'sent');
  server!.once('connection', () => {
    // Blocked until the client has written its request, then past every limit.
    const t0 = performance.now();
    while (!existsSync(sent) && performance.now() - t0 < 20_000);
    const t1 = performance.now();
    while (performance.now() - t1 < 2 * LIMITS.requestMs);
  });
  const script = `
    const s = require('node:net').connect(${JSON.stringify(socket)}, () => {
      s.write(${JSON.stringify(REQUEST.replace('HTTP/1.1\r\n', 'HTTP/1.1\r\nConnection: close\r\n'))}, () => require('node:fs').writeFileSync(${JSON.stringify(sent)}, ''));
    });
    let a = ''; s.on('data', (b) => (a += b)); s.on('error', (e) => { a = 'error ' + e.code; });
    s.on('close', () => process.stdout.write(a.split('\\r\\n')[0]));`;
  const p = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (b: Buffer) => (out += b.toString()));
  await new Promise((r) => p.on('close', r));
  return out;
}

describe('request timeouts', () => {
  it('a request that arrived whole while the server was busy is answered, not cut as slow', async () => {
    const socket = await serve();
    expect(await requestDuringStall(socket)).toBe('HTTP/1.1 200 OK');
    expect(logged.filter((l) => l.level === 40)).toEqual([]);
  });

  it("(why: Node's own limits cut that same request)", async () => {
    const socket = await serve({ nodeOwnLimits: true });
    // Node writes its 408 and destroys the socket with the request unread: the client sees a reset.
    expect(await requestDuringStall(socket)).not.toBe('HTTP/1.1 200 OK');
  });

  it('a client that stops in the middle of its headers gets 408 and is closed, with a warning that says why', async () => {
    const socket = await serve();
    const r = await client(socket, ['POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\n']);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(r.closedAfterMs).toBeGreaterThanOrEqual(LIMITS.headersMs);
    expect(logged.filter((l) => l.level === 40).map((l) => [l.phase, l.msg])).toEqual([['headers', expect.stringMatching(/did not arrive in time.*send each request whole/)]]);
  });

  it('a body that never comes, or comes a byte at a time, is cut', async () => {
    const socket = await serve();
    const head = 'POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n';
    const [stalled, trickled] = await Promise.all([client(socket, [head + '{"Na']), client(socket, [head, ...Array.from({ length: 200 }, () => 'x')], 20)]);
    for (const r of [stalled, trickled]) {
      expect(r.closedAfterMs).toBeGreaterThanOrEqual(LIMITS.requestMs);
      expect(r.answer).toMatch(/^HTTP\/1\.1 408/);
    }
    expect(logged.filter((l) => l.level === 40).map((l) => l.phase)).toEqual(['body', 'body']);
  });

  it('a handler slower than every limit still answers; the idle keep-alive connection is then closed quietly', async () => {
    const socket = await serve();
    const r = await client(socket, [REQUEST.replace('/VolumeDriver.List', '/slow')]);
    expect(r.answer).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
    expect(r.closedAfterMs).toBeGreaterThanOrEqual(3 * LIMITS.requestMs + LIMITS.keepAliveMs);
    expect(logged.filter((l) => l.level === 40)).toEqual([]);
  });

  it('a kept-alive connection serves the next request', async () => {
    const socket = await serve();
    const r = await client(socket, [REQUEST, REQUEST.replace('HTTP/1.1\r\n', 'HTTP/1.1\r\nConnection: close\r\n')], 100);
    expect(r.answer.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
  });
});
