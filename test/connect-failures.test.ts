// The connection-failure catalogue (docs/options.md, src/sftp/explain.ts),
// one case per kind of endpoint that is not a working SSH server, each
// against a real listener on loopback: what the user reads must name what
// answered and what to do.
import { createServer as createHttp } from 'node:http';
import { createServer as createTcp, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { createServer as createTls } from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConnectError, connectSsh } from '../src/sftp/connect';
import type { SshTarget } from '../src/sftp/target';
import { startProxy } from './helpers/proxy';
import { removeSshdDir, startSshd } from './helpers/sshd';

const servers: Server[] = [];
const sockets: Socket[] = [];
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

async function listen(s: Server): Promise<number> {
  servers.push(s);
  s.on('connection', (c: Socket) => sockets.push(c));
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

function target(port: number, connectTimeout = 2000): SshTarget {
  return { host: '127.0.0.1', port, username: 'root', remotePath: '', password: 'x', strictHostKeyChecking: 'accept-new', keepaliveInterval: 0, keepaliveCountMax: 3, connectTimeout };
}

async function failure(t: SshTarget): Promise<ConnectError> {
  try {
    (await connectSsh(t)).close();
  } catch (e) {
    return e as ConnectError;
  }
  throw new Error('connected, but a failure was expected');
}

describe('a port that is not an SSH server', () => {
  it('another protocol\'s banner (SMTP), then close: not an SSH server, quoting what it said', async () => {
    const port = await listen(createTcp((c) => c.end('220 mail.example.com ESMTP Postfix\r\n')));
    const e = await failure(target(port));
    expect(e.code).toBe('not-ssh');
    expect(e.message).toBe(`127.0.0.1:${port} is not an SSH server: it sent "220 mail.example.com ESMTP Postfix" where an SSH-2.0 banner belongs: point -o port= at the SSH port (usually 22; \`ssh -v -p PORT HOST\` shows what answers there)`);
  });

  it('garbage that never becomes a banner, connection held open: not an SSH server once ConnectTimeout runs out', async () => {
    const port = await listen(createTcp((c) => c.write('\x00\x01garbage\r\n')));
    const e = await failure(target(port, 1000));
    expect(e.code).toBe('not-ssh');
    expect(e.message).toContain('it sent "..garbage"');
  });

  it('TLS on the port (an HTTPS service): says TLS', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsfs-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k'), '-out', join(dir, 'c'), '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
      const port = await listen(createTls({ key: readFileSync(join(dir, 'k')), cert: readFileSync(join(dir, 'c')) }, (c) => c.end()));
      const e = await failure(target(port));
      expect(e.code).toBe('not-ssh');
      expect(e.message).toMatch(new RegExp(`^127.0.0.1:${port} speaks TLS, not SSH .*point -o port= at the SSH port`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('HTTP on the port: says HTTP, quoting the status line, without waiting for the timeout', async () => {
    const port = await listen(createHttp((_q, r) => r.end('hi')));
    const t0 = Date.now();
    const e = await failure(target(port, 60_000));
    expect(e.code).toBe('not-ssh');
    expect(e.message).toMatch(new RegExp(`^127.0.0.1:${port} is an HTTP server, not SSH \\(it answered "HTTP/1.1 400 Bad Request"\\)`));
    // Fails on the answer, not after ConnectTimeout (60 s here); the test's own timeout would catch a wait.
    expect(Date.now() - t0).toBeLessThan(30_000);
  });

  it('accepts TCP, then silence: no banner within ConnectTimeout', async () => {
    const port = await listen(createTcp(() => undefined));
    const e = await failure(target(port, 1000));
    expect(e.code).toBe('banner-timeout');
    expect(e.message).toMatch(new RegExp(`^127.0.0.1:${port} accepted the TCP connection but sent no SSH banner within 1000 ms`));
  });
});

describe('an SSH server that greeted this daemon before and is silent now', () => {
  it('says sshd is too busy (or stuck), not that the port may be wrong, and sends no TLS probe', async () => {
    const sshd = await startSshd();
    const proxy = await startProxy(sshd.port);
    try {
      // The first connection gets sshd's banner (and fails to log in: the
      // password is wrong); that is all this daemon needs to have seen.
      const first = await failure(target(proxy.port));
      expect(first.code).toBe('auth');
      // Then the endpoint stops answering, as a sshd busy forking for a storm of connections does.
      proxy.stall(true);
      const before = proxy.accepted;
      const e = await failure(target(proxy.port, 1000));
      expect(e.code).toBe('banner-timeout');
      expect(e.message).toMatch(
        new RegExp(`^127.0.0.1:${proxy.port} \\(SSH-2\\.0-OpenSSH_[^)]*\\) greeted earlier connections but sent no SSH banner to this one within 1000 ms: sshd there is too busy`),
      );
      expect(e.message).toContain('stagger them, or raise -o ConnectTimeout=');
      expect(e.message).not.toContain('point -o port=');
      // One connection: no second, diagnostic TLS connection to a server known to speak SSH.
      expect(proxy.accepted - before).toBe(1);
    } finally {
      await proxy.close();
      await sshd.stop();
      removeSshdDir(sshd);
    }
  });
});

describe('an SSH server that turns the connection away before its banner', () => {
  it('reset right after accept: names MaxStartups as a likely cause', async () => {
    const port = await listen(createTcp((c) => c.resetAndDestroy()));
    const e = await failure(target(port));
    expect(e.code).toBe('closed-before-banner');
    expect(e.message).toMatch(new RegExp(`^127.0.0.1:${port} accepted the TCP connection, then (reset|closed) the connection before sending an SSH banner: sshd drops new connections while more than its MaxStartups`));
  });

  it('a real sshd past its MaxStartups: quotes sshd and names MaxStartups', async () => {
    const sshd = await startSshd({ maxStartups: '1' });
    // One unauthenticated connection holds the only start-up slot. Until the
    // child of the helper's own port check has exited, that slot is still
    // taken and the holder itself is turned away: take it once it is free.
    let held = tcpConnect(sshd.port, sshd.host);
    for (let i = 0; ; i++) {
      const first = await new Promise<string>((r) => held.once('data', (d: Buffer) => r(d.toString('latin1'))));
      if (first.startsWith('SSH-')) break;
      held.destroy();
      if (i === 50) throw new Error(`sshd kept refusing the holding connection: ${first}`);
      await new Promise((r) => setTimeout(r, 100));
      held = tcpConnect(sshd.port, sshd.host);
    }
    try {
      const e = await failure(target(sshd.port));
      expect(e.code).toBe('closed-before-banner');
      // OpenSSH 9.2 says "Exceeded MaxStartups" instead of its banner, then closes.
      expect(e.message).toMatch(new RegExp(`^sshd on 127.0.0.1:${sshd.port} turned the connection away \\("Exceeded MaxStartups"\\): too many connections are still unauthenticated at once \\(MaxStartups\\)`));
    } finally {
      held.destroy();
      await sshd.stop();
      removeSshdDir(sshd);
    }
  });
});
