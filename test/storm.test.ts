// Many hosts mounting at once against one store with Debian's stock sshd
// settings (test/helpers/stock-sshd.ts): every mount must succeed, a Mount
// that dockerd gave up on must not leave its ID behind, sshd's MaxStartups
// drops must be retried, and errors that are answers (wrong key, wrong host
// key, no such host, closed port) must fail at once with their message.
import { createConnection, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { open, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConnectError } from '../src/sftp/connect';
import { classify, withRetry } from '../src/sftp/retry';
import { SftpSession } from '../src/sftp/session';
import type { SshTarget } from '../src/sftp/target';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';
import { freePort, removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { startStockSshd, type StockSshd } from './helpers/stock-sshd';
import { until } from './helpers/until';
import { runStorm } from './helpers/storm';

const isMounted = (p: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);

function targetOf(s: { host: string; port: number; userKeyPath: string }, user: string, over: Partial<SshTarget> = {}): SshTarget {
  return {
    host: s.host,
    port: s.port,
    username: user,
    remotePath: '',
    privateKey: readFileSync(s.userKeyPath),
    identityFile: s.userKeyPath,
    strictHostKeyChecking: 'accept-new',
    keepaliveInterval: 0,
    keepaliveCountMax: 3,
    connectTimeout: 10_000,
    ...over,
  };
}

/**
 * A connection sshd counts as starting up (it sent its banner and waits for
 * ours). sshd may drop this one too while the port probe's connection is
 * still counted ("Exceeded MaxStartups", or a reset): then try again.
 */
async function holdStartup(port: number): Promise<Socket> {
  for (;;) {
    const sock = createConnection(port, '127.0.0.1');
    const first = await new Promise<string>((resolve) => {
      sock.once('data', (d: Buffer) => resolve(d.toString('latin1')));
      sock.once('error', () => resolve(''));
      sock.once('close', () => resolve(''));
    });
    if (first.startsWith('SSH-')) return sock;
    sock.destroy();
    await new Promise((r) => setTimeout(r, 50));
  }
}

function capture(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return { log, lines };
}

afterAll(() => removeDist());

describe('a storm of mounts against a stock sshd (slow login shell, MaxStartups 10:30:100)', () => {
  let sshd: StockSshd;
  let d: DaemonProc;
  beforeAll(async () => {
    sshd = await startStockSshd({ subsystemCpuMs: 100 });
    d = await startDaemon();
  });
  afterAll(async () => {
    await d?.stop();
    if (d) removeDaemonDir(d.dir);
    await sshd?.stop();
    sshd?.remove();
  });

  it('32 volumes created and mounted at once through the daemon: all mount, all files intact, no ID left', async () => {
    const r = await runStorm(d, sshd, 32, { bytes: 1024 * 1024 });
    console.log(`storm 32: ${r.intact}/32 intact, ${r.retries} retries, mount p50 ${r.mountMs.p50} ms p99 ${r.mountMs.p99} ms, store ${r.store.processes} processes (${r.store.sftpServers} sftp-server) for ${r.store.mounted} volumes`);
    expect([...r.failed]).toEqual([]);
    expect(r.intact).toBe(32);
    expect([...r.unmountFailed]).toEqual([]);
    expect(r.leakedIds).toBe(0);
    // One connection and at most two sftp-server per mounted volume.
    expect(r.store.sftpServers).toBeLessThanOrEqual(2 * r.store.mounted);
  });
});

describe('a Mount that dockerd abandons', () => {
  let sshd: StockSshd;
  let d: DaemonProc;
  beforeAll(async () => {
    sshd = await startStockSshd({ subsystemCpuMs: 0, gate: true });
    d = await startDaemon();
  });
  afterAll(async () => {
    sshd?.gate.open();
    await d?.stop();
    if (d) removeDaemonDir(d.dir);
    await sshd?.stop();
    sshd?.remove();
  });

  it('is rolled back: the ID is not kept and the filesystem is unmounted', async () => {
    const Name = 'abandoned';
    // check=false: no Create-time connection, so the Mount is the one held at the gate.
    const Opts = { sshcmd: `${sshd.user}@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath, check: 'false', StrictHostKeyChecking: 'no' };
    expect((await d.call('/VolumeDriver.Create', { Name, Opts })).status).toBe(200);
    // A Mount request that the client closes while the SFTP channel is still starting, as dockerd does at its timeout.
    const req = request({ socketPath: d.socket, method: 'POST', path: '/VolumeDriver.Mount', headers: { Accept: 'application/vnd.docker.plugins.v1.2+json' } });
    const answered = new Promise<string>((resolve) => {
      req.on('response', () => resolve('answered'));
      req.on('error', () => resolve('closed'));
      req.on('close', () => resolve('closed'));
    });
    req.end(JSON.stringify({ Name, ID: 'gave-up' }));
    await until(() => existsSync(sshd.gate.started), 'the sftp subsystem to start for the Mount');
    req.destroy();
    expect(await answered).toBe('closed');
    sshd.gate.open(); // let the mount finish inside the daemon
    await until(() => d.logLines().some((l) => l.msg === 'Mount finished after dockerd gave up: rolled back'), 'the daemon to finish and roll back the Mount', { withinMs: 60_000 });
    const g = await d.call('/VolumeDriver.Get', { Name });
    expect((g.json.Volume as { Status: Record<string, unknown> }).Status).toMatchObject({ mounts: 0, connection: 'unmounted' });
    expect(isMounted(join(d.mountRoot, Name))).toBe(false);
    // Nothing pins the volume: docker volume rm works.
    expect((await d.call('/VolumeDriver.Remove', { Name })).status).toBe(200);
    // A Mount that dockerd waits for still works (the gate is open now).
    expect((await d.call('/VolumeDriver.Create', { Name, Opts })).status).toBe(200);
    const m = await d.call('/VolumeDriver.Mount', { Name, ID: 'kept' });
    expect(m.json.Err).toBeUndefined();
    expect(isMounted(m.json.Mountpoint as string)).toBe(true);
    expect((await d.call('/VolumeDriver.Unmount', { Name, ID: 'kept' })).status).toBe(200);
    expect(isMounted(m.json.Mountpoint as string)).toBe(false);
  });
});

describe('the second SFTP channel', () => {
  let sshd: StockSshd;
  let d: DaemonProc;
  beforeAll(async () => {
    sshd = await startStockSshd({ subsystemCpuMs: 0 });
    d = await startDaemon();
  });
  afterAll(async () => {
    await d?.stop();
    if (d) removeDaemonDir(d.dir);
    await sshd?.stop();
    sshd?.remove();
  });

  it('a Create and the Mount right after it cost the store one login and one sftp-server; a Remove closes a kept connection', async () => {
    const Opts = { sshcmd: `${sshd.user}@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath };
    const logins = sshd.logins();
    const starts = sshd.subsystemStarts();
    expect((await d.call('/VolumeDriver.Create', { Name: 'handoff', Opts })).status).toBe(200);
    const m = await d.call('/VolumeDriver.Mount', { Name: 'handoff', ID: 'h' });
    expect(m.json.Err).toBeUndefined();
    const data = randomBytes(64 * 1024);
    await writeFile(join(m.json.Mountpoint as string, 'handed-over'), data);
    expect(readFileSync(join(sshd.storeDir, 'handed-over')).equals(data)).toBe(true);
    expect(sshd.logins() - logins).toBe(1);
    expect(sshd.subsystemStarts() - starts).toBe(1);
    expect((await d.call('/VolumeDriver.Unmount', { Name: 'handoff', ID: 'h' })).status).toBe(200);
    await until(() => sshd.storeProcesses().count === 0, 'the unmounted volume to leave the store');
    expect((await d.call('/VolumeDriver.Remove', { Name: 'handoff' })).status).toBe(200);

    // Created and removed with no Mount: the kept connection does not outlive the volume.
    expect((await d.call('/VolumeDriver.Create', { Name: 'never-mounted', Opts })).status).toBe(200);
    expect(sshd.storeProcesses().sftpServers).toBe(1);
    expect((await d.call('/VolumeDriver.Remove', { Name: 'never-mounted' })).status).toBe(200);
    await until(() => sshd.storeProcesses().count === 0, 'the kept connection to close');
  });

  it('opens when a lookup meets file data in flight; files written before and after the switch are intact', async () => {
    const Name = 'twochannels';
    const Opts = { sshcmd: `${sshd.user}@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath };
    expect((await d.call('/VolumeDriver.Create', { Name, Opts })).status).toBe(200);
    const m = await d.call('/VolumeDriver.Mount', { Name, ID: 'c' });
    const mp = m.json.Mountpoint as string;
    // A file written alone: one channel serves it.
    const small = randomBytes(256 * 1024);
    await writeFile(join(mp, 'small'), small);
    expect(sshd.storeProcesses().sftpServers).toBe(1);
    // A large write with lookups of new names beside it (the daemon serves the mount, not this process).
    const big = randomBytes(1024 * 1024);
    const fh = await open(join(mp, 'big'), 'w');
    let chunks = 0;
    try {
      for (; chunks < 256 && sshd.storeProcesses().sftpServers < 2; chunks++) {
        await Promise.all([fh.write(big, 0, big.length, chunks * big.length), stat(join(mp, `absent-${chunks}`)).catch(() => undefined)]);
      }
      // Handles opened before the switch stay on their channel; this one goes on the new one.
      const after = randomBytes(512 * 1024);
      await writeFile(join(mp, 'after'), after);
      for (let i = 0; i < 4; i++, chunks++) await fh.write(big, 0, big.length, chunks * big.length);
      await fh.close();
      expect(sshd.storeProcesses().sftpServers).toBe(2);
      expect(readFileSync(join(sshd.storeDir, 'small')).equals(small)).toBe(true);
      expect(readFileSync(join(sshd.storeDir, 'after')).equals(after)).toBe(true);
      const onStore = readFileSync(join(sshd.storeDir, 'big'));
      expect(onStore.length).toBe(chunks * big.length);
      for (let i = 0; i < chunks; i++) expect(onStore.subarray(i * big.length, (i + 1) * big.length).equals(big), `chunk ${i}`).toBe(true);
    } finally {
      await fh.close().catch(() => undefined);
      await d.call('/VolumeDriver.Unmount', { Name, ID: 'c' });
    }
  });
});

describe('connection setup: transient failures are retried, answers fail at once', () => {
  let stock: StockSshd;
  let single: Sshd;
  let held: Socket[] = [];
  beforeAll(async () => {
    stock = await startStockSshd({ subsystemCpuMs: 0 });
    single = await startSshd();
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await stock?.stop();
    stock?.remove();
    await single?.stop();
    if (single) removeSshdDir(single);
  });

  it('a connection sshd drops past MaxStartups is transient, and the mount retries until it gets in', async () => {
    const s = await startSshd({ maxStartups: '1' });
    try {
      // MaxStartups 1 and one unauthenticated connection that sshd holds
      // (it waits for our banner): every other connection is dropped.
      const hog = await holdStartup(s.port);
      held.push(hog);
      const { log, lines } = capture();
      const session = new SftpSession(targetOf(s, s.user), log);
      const started = session.start();
      // Free the slot once the first drop has been retried.
      await until(() => lines.some((l) => l.msg === 'connection setup failed (transient): retrying'), 'a retried MaxStartups drop');
      hog.destroy();
      const ch = await started;
      expect(ch.meta).toBeDefined();
      const retried = lines.filter((l) => l.msg === 'connection setup failed (transient): retrying');
      // sshd says "Exceeded MaxStartups" and closes, or resets the connection.
      expect(retried[0]).toMatchObject({ level: 30, attempt: 1, code: 'closed-before-banner' });
      expect(String(retried[0].err)).toMatch(/Exceeded MaxStartups|before sending an SSH banner/);
      expect(session.setupRetries).toBe(retried.length);
      session.close();
    } finally {
      await s.stop();
      removeSshdDir(s);
    }
  });

  it('a refused SFTP channel (MaxSessions) is transient and retried until the deadline, then reported', async () => {
    const t = await startSshd({ maxSessions: 0 });
    try {
      const { log, lines } = capture();
      const session = new SftpSession(targetOf(t, t.user), log, { setupDeadlineMs: 3_000 });
      const err = await session.start().then(() => undefined, (e: Error) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe('channel');
      expect(classify(err)).toBe('transient');
      expect(lines.filter((l) => l.msg === 'connection setup failed (transient): retrying').length).toBeGreaterThan(0);
      session.close();
    } finally {
      await t.stop();
      removeSshdDir(t);
    }
  });

  // Each permanent failure: the same message connectSsh gives without retries, and no retry.
  const permanent: [string, () => Promise<SshTarget>, ConnectError['code'], RegExp][] = [
    ['a key the server refuses', async () => targetOf({ ...single, userKeyPath: single.wrongKeyPath }, single.user), 'auth', /authentication as root on 127\.0\.0\.1:\d+ failed; tried publickey/],
    ['a host key mismatch', async () => targetOf(single, single.user, { hostKey: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', strictHostKeyChecking: 'yes' }), 'host-key-mismatch', /host key mismatch for 127\.0\.0\.1:\d+: expected SHA256:AAAA/],
    ['a closed port', async () => targetOf(single, single.user, { port: await freePort() }), 'refused', /connection to 127\.0\.0\.1:\d+ refused: is sshd running there/],
    ['a host name that does not resolve', async () => targetOf(single, single.user, { host: 'no-such-host.invalid' }), 'dns', /cannot resolve host no-such-host\.invalid: check the host name in sshcmd/],
  ];
  for (const [what, target, code, message] of permanent) {
    it(`${what} is permanent: fails at once with its message, no retry`, async () => {
      const { log, lines } = capture();
      const session = new SftpSession(await target(), log);
      const err = await session.start().then(() => undefined, (e: Error) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(code);
      expect((err as Error).message).toMatch(message);
      expect(classify(err)).toBe('permanent');
      expect(lines.filter((l) => l.msg === 'connection setup failed (transient): retrying')).toEqual([]);
      expect(session.setupRetries).toBe(0);
      session.close();
    });
  }

  it('a session starts with one SFTP channel (one sftp-server on the store) and opens the second when asked', async () => {
    const { log } = capture();
    const session = new SftpSession(targetOf(stock, stock.user), log);
    const ch = await session.start();
    await until(() => stock.storeProcesses().sftpServers === 1, 'one sftp-server');
    expect(ch.data).toBe(ch.meta);
    session.ensureDataChannel(ch);
    await until(() => ch.data !== ch.meta, 'the second channel');
    expect(stock.storeProcesses().sftpServers).toBe(2);
    session.close();
  });
});

describe('withRetry', () => {
  const dropped = () => new ConnectError('dropped', 'closed-before-banner');
  it('retries transient errors with growing, jittered delays and returns the first success', async () => {
    const delays: number[] = [];
    let calls = 0;
    const v = await withRetry(
      async () => {
        if (++calls < 4) throw dropped();
        return 'ok';
      },
      { deadlineMs: 60_000, baseDelayMs: 1, maxDelayMs: 4, random: () => 1 },
      (i) => delays.push(i.retryInMs),
    );
    expect(v).toBe('ok');
    expect(delays).toEqual([1, 2, 4]);
  });
  it('does not retry a permanent error, nor anything that is not a ConnectError', async () => {
    for (const e of [new ConnectError('no', 'auth'), new Error('bug')]) {
      let calls = 0;
      await expect(withRetry(async () => { calls++; throw e; }, { deadlineMs: 60_000, baseDelayMs: 1 }, () => undefined)).rejects.toBe(e);
      expect(calls).toBe(1);
    }
  });
  it('gives up with the last error when the deadline leaves no room for another attempt', async () => {
    let calls = 0;
    const e = dropped();
    await expect(withRetry(async () => { calls++; throw e; }, { deadlineMs: 500, baseDelayMs: 1 }, () => undefined)).rejects.toBe(e);
    expect(calls).toBe(1);
  });
});
