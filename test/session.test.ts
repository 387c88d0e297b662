// SftpSession's control logic (reconnect, close, the in-flight byte cap,
// re-issuing idempotent requests) through its `connect` seam: each link is a
// fake whose loss and arrival the test decides, so every interleaving that a
// real sshd only produces by chance is reproduced on purpose, in milliseconds.
// What is faked is only the SSH transport; the session under test is the real one.
import { EventEmitter } from 'node:events';
import pino from 'pino';
import type { Client, SFTPWrapper } from 'ssh2';
import { describe, expect, it } from 'vitest';
import type { SshLink } from '../src/sftp/connect';
import { ByteBudget } from '../src/sftp/budget';
import { LinkDownError, SftpSession } from '../src/sftp/session';
import type { SshTarget } from '../src/sftp/target';
import { until } from './helpers/until';

const TARGET: SshTarget = {
  host: 'store.example', port: 22, username: 'u', remotePath: '/srv', strictHostKeyChecking: 'accept-new',
  keepaliveInterval: 1000, keepaliveCountMax: 3, connectTimeout: 1000,
};

class FakeLink {
  readonly client = new EventEmitter();
  readonly channels: EventEmitter[] = [];
  closed = false;
  constructor(readonly hostKey = 'SHA256:' + 'k'.repeat(43)) {}
  link(): SshLink {
    return {
      client: this.client as unknown as Client,
      hostKey: this.hostKey,
      openSftp: async () => {
        const c = Object.assign(new EventEmitter(), { _maxReadLen: 261120, _maxWriteLen: 261120, _isOpenSSH: true, _extensions: { 'limits@openssh.com': '1' } });
        this.channels.push(c);
        return c as unknown as SFTPWrapper;
      },
      extensionsOf: () => new Set(['limits@openssh.com']),
      close: () => this.drop(),
    };
  }
  /** The connection goes away (what ssh2 reports when TCP closes). */
  drop(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.emit('close');
  }
}

/** A connect() whose calls the test answers one by one. */
function fakeConnect() {
  const calls: { target: SshTarget; resolve: (l: FakeLink) => void; reject: (e: Error) => void }[] = [];
  const connect = (target: SshTarget) =>
    new Promise<SshLink>((resolve, reject) => calls.push({ target, resolve: (l) => resolve(l.link()), reject }));
  return { calls, connect };
}

function captureLog() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

async function connected(opts: { reconnectWaitMs?: number; maxInFlight?: number; budget?: ByteBudget } = {}) {
  const fc = fakeConnect();
  const { log, lines } = captureLog();
  const s = new SftpSession(TARGET, log, { connect: fc.connect, reconnectWaitMs: opts.reconnectWaitMs ?? 5000, maxInFlight: opts.maxInFlight, budget: opts.budget });
  const first = new FakeLink();
  const started = s.start();
  await until(() => fc.calls.length === 1, 'first connect');
  fc.calls[0].resolve(first);
  const ch = await started;
  return { s, fc, first, ch, lines };
}

describe('reconnect', () => {
  it('a lost link is re-established and waiting requests get the new channels', async () => {
    const { s, fc, first, ch } = await connected();
    first.drop();
    expect(s.state).toBe('reconnecting');
    const waiting = s.channels();
    await until(() => fc.calls.length === 2, 'a reconnect attempt');
    const second = new FakeLink();
    fc.calls[1].resolve(second);
    const ch2 = await waiting;
    expect(ch2.gen).toBe(ch.gen + 1);
    expect(s.state).toBe('connected');
    s.close();
    expect(second.closed).toBe(true);
  });

  it('reconnects present the host key pinned at the first connection (accept-new)', async () => {
    const { s, fc, first } = await connected();
    expect(fc.calls[0].target.hostKey).toBeUndefined();
    first.drop();
    await until(() => fc.calls.length === 2, 'a reconnect attempt');
    expect(fc.calls[1].target.hostKey).toBe(first.hostKey);
    s.close();
  });

  it('an error event on an SFTP channel counts as a lost link instead of throwing', async () => {
    const { s, fc, first } = await connected();
    expect(() => first.channels[0].emit('error', new Error('bad packet'))).not.toThrow();
    expect(s.state).toBe('reconnecting');
    await until(() => fc.calls.length === 2, 'a reconnect attempt');
    s.close();
  });

  it('requests waiting for a link that stays down fail with LinkDownError naming the last reconnect error', async () => {
    const { s, fc, first } = await connected({ reconnectWaitMs: 100 });
    first.drop();
    const waiting = s.channels();
    await until(() => fc.calls.length === 2, 'a reconnect attempt');
    fc.calls[1].reject(new Error('host key mismatch for store.example:22'));
    const err = await waiting.then(() => undefined, (e: Error) => e);
    expect(err).toBeInstanceOf(LinkDownError);
    expect(err?.message).toMatch(/down for 100 ms; last reconnect attempt: host key mismatch/);
    s.close();
  });

  it('a failure that repeats is warned about when it first happens and then at doubling intervals, not at every attempt', async () => {
    const { s, fc, first, lines } = await connected();
    first.drop();
    const reasons = ['host key mismatch', 'host key mismatch', 'host key mismatch', 'host key mismatch', 'connection refused'];
    for (const [i, why] of reasons.entries()) {
      await until(() => fc.calls.length === i + 2, `reconnect attempt ${i}`);
      fc.calls[i + 1].reject(new Error(why));
    }
    await until(() => lines.filter((l) => l.msg === 'reconnect failed; retrying').length === 5, 'five failures logged');
    const failures = lines.filter((l) => l.msg === 'reconnect failed; retrying').map((l) => [l.attempt, l.level === 40 ? 'warn' : 'debug', l.err]);
    expect(failures).toEqual([
      [0, 'warn', 'host key mismatch'],
      [1, 'warn', 'host key mismatch'],
      [2, 'warn', 'host key mismatch'],
      [3, 'debug', 'host key mismatch'],
      [4, 'warn', 'connection refused'],
    ]);
    s.close();
  });
});

describe('close', () => {
  it('an unmount during a reconnect closes the link that arrives afterwards and does not revive the session', async () => {
    const { s, fc, first } = await connected();
    first.drop();
    await until(() => fc.calls.length === 2, 'a reconnect attempt');
    s.close();
    const late = new FakeLink();
    fc.calls[1].resolve(late);
    await until(() => late.closed, 'the late link is closed', { withinMs: 2000 });
    expect(s.state).toBe('disconnected');
    await expect(s.channels()).rejects.toThrow(/unmounting/);
    // And the loop has stopped: no further attempt is made.
    await new Promise((r) => setTimeout(r, 400));
    expect(fc.calls.length).toBe(2);
  });

  it('close fails the requests waiting for a reconnect at once', async () => {
    const { s, first } = await connected();
    first.drop();
    const waiting = s.channels();
    s.close();
    await expect(waiting).rejects.toBeInstanceOf(LinkDownError);
  });
});

describe('idempotent requests', () => {
  it('a request lost with the link is sent again on the next connection', async () => {
    const { s, fc, first } = await connected();
    const gens: number[] = [];
    const result = s.idempotent(async () => {
      const c = await s.channels();
      gens.push(c.gen);
      if (gens.length === 1) {
        first.drop();
        throw new Error('No response from server');
      }
      return 'answer';
    });
    await until(() => fc.calls.length === 2, 'a reconnect attempt');
    fc.calls[1].resolve(new FakeLink());
    expect(await result).toBe('answer');
    expect(gens).toEqual([1, 2]);
    s.close();
  });

  it('a request that fails while the link stays up is not re-issued', async () => {
    const { s } = await connected();
    let calls = 0;
    await expect(
      s.idempotent(async () => {
        calls++;
        throw new Error('No such file');
      }),
    ).rejects.toThrow('No such file');
    expect(calls).toBe(1);
    s.close();
  });
});

describe('reserve: the in-flight byte cap', () => {
  it('waits while the cap is full and goes on as bytes are released', async () => {
    const { s } = await connected({ maxInFlight: 100 });
    await s.reserve(60);
    let second = false;
    const p = s.reserve(60).then(() => (second = true));
    await new Promise((r) => setImmediate(r));
    expect(second).toBe(false);
    s.release(60);
    await p;
    expect(second).toBe(true);
    s.release(60);
    s.close();
  });

  it('sessions sharing a budget hold no more than it together, and the waiting ones go in the order they came', async () => {
    const budget = new ByteBudget(100);
    const sessions = await Promise.all([0, 1, 2].map(() => connected({ maxInFlight: 80, budget }).then((c) => c.s)));
    const order: number[] = [];
    await sessions[0].reserve(60);
    const waiting = [sessions[1].reserve(60).then(() => order.push(1)), sessions[2].reserve(30).then(() => order.push(2))];
    await new Promise((r) => setImmediate(r));
    // 30 more would fit, but the first waiter came first.
    expect({ held: budget.held, order }).toEqual({ held: 60, order: [] });
    sessions[0].release(60);
    await Promise.all(waiting);
    expect({ held: budget.held, order }).toEqual({ held: 90, order: [1, 2] });
    sessions[1].release(60);
    sessions[2].release(30);
    expect(budget.held).toBe(0);
    for (const s of sessions) s.close();
  });

  it('a charge above the bytes counts against the window, the bytes alone against the shared budget', async () => {
    const budget = new ByteBudget(1000);
    const { s } = await connected({ maxInFlight: 100, budget });
    await s.reserve(4, 40);
    await s.reserve(4, 40);
    let third = false;
    const p = s.reserve(4, 40).then(() => (third = true));
    await new Promise((r) => setImmediate(r));
    // 12 bytes would fit the window; three charges of 40 do not.
    expect({ third, held: budget.held }).toEqual({ third: false, held: 8 });
    s.release(4, 40);
    await p;
    expect({ third, held: budget.held }).toEqual({ third: true, held: 8 });
    s.release(4, 40);
    s.release(4, 40);
    expect(budget.held).toBe(0);
    s.close();
  });

  it('a single write larger than the cap goes through once nothing else is in flight', async () => {
    const { s } = await connected({ maxInFlight: 100 });
    await s.reserve(10);
    let big = false;
    const p = s.reserve(500).then(() => (big = true));
    await new Promise((r) => setImmediate(r));
    expect(big).toBe(false);
    s.release(10);
    await p;
    expect(big).toBe(true);
    s.close();
  });
});

describe('a connection kept from the Create check', () => {
  it('is used as the first connection: no new login, no new channel, and a loss reconnects as usual', async () => {
    const fc = fakeConnect();
    const { log } = captureLog();
    const kept = new FakeLink();
    const l = kept.link();
    const sftp = await l.openSftp();
    const s = new SftpSession(TARGET, log, { connect: fc.connect, reconnectWaitMs: 5000, held: { link: l, sftp } });
    const ch = await s.start();
    expect(ch.meta).toBe(sftp);
    expect(fc.calls.length).toBe(0);
    expect(kept.channels.length).toBe(1);
    kept.drop();
    expect(s.state).toBe('reconnecting');
    await until(() => fc.calls.length === 1, 'a reconnect attempt');
    fc.calls[0].resolve(new FakeLink());
    expect((await s.channels()).gen).toBe(ch.gen + 1);
    s.close();
  });
});
