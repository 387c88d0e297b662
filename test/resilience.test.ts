// Faults between a mounted volume and its server: sshd killed and restarted,
// connections cut or silently stalled by a proxy, a long outage, a server that
// comes back with another host key. What a user must see: a write either
// lands whole (dd exits 0 and the server's file has the right sha256) or
// fails with EIO at write/fsync/close, never a short file reported written;
// reads and stats are re-issued after the reconnect; the same mount serves
// new work without a remount; another volume is not held up.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountForTest, runChild, targetFor, type TestMount } from './helpers/fs-mount';
import { startProxy, type FaultProxy } from './helpers/proxy';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const CHILD = join(__dirname, 'helpers', 'fault-child.mjs');
const MiB = 1024 * 1024;
const BIG = 256 * MiB;

let sshd: Sshd;
let proxy: FaultProxy;
let other: FaultProxy;
let m: TestMount;
let m2: TestMount;
let scratch: string;
let bigSrc: string;
let bigSha: string;
const logs: Record<string, unknown>[] = [];

function capture(into: Record<string, unknown>[]) {
  return pino({ level: 'debug' }, { write: (s: string) => void into.push(JSON.parse(s) as Record<string, unknown>) });
}

/** Mount `store/<subdir>` through `via` with 1 s keepalives and a 10 s reconnect bound. */
async function mountVia(via: FaultProxy, subdir: string, log = capture(logs)): Promise<TestMount> {
  const server = { ...sshd, port: via.port };
  return mountForTest(server, {
    subdir,
    target: { ...targetFor(server, join(sshd.storeDir, subdir)), keepaliveInterval: 1000, keepaliveCountMax: 3 },
    reconnectTimeoutMs: 10_000,
    // Files are put on the server directly: no cached "absent" may hide them.
    cacheTimeout: 0,
    log,
  });
}

async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest('hex');
}

interface Child {
  proc: ChildProcess;
  lines: string[];
  /** Resolves once the child printed `n` lines equal to `line`. */
  seen(line: string, n?: number): Promise<void>;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function child(cmd: string, args: string[]): Child {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const lines: string[] = [];
  const watchers: (() => void)[] = [];
  proc.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    lines.splice(0, lines.length, ...stdout.split('\n').filter(Boolean));
    for (const w of watchers) w();
  });
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((r) => proc.once('exit', (code) => r({ code, stdout, stderr })));
  return {
    proc,
    lines,
    done,
    seen: (line, n = 1) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (lines.filter((l) => l === line).length >= n) resolve();
        };
        watchers.push(check);
        check();
        void done.then(() => setTimeout(() => reject(new Error(`child exited before printing ${line} x${n}: ${stdout} ${stderr}`)), 50));
      }),
  };
}

const lastJson = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;

/** The mount answers a new write and read right away, with no remount. */
async function servesNewWork(t: TestMount, name: string): Promise<void> {
  const body = `after-fault-${name}-${Date.now()}`;
  const w = await runChild('sh', ['-c', `printf %s "$1" > "$2" && cat "$2"`, 'sh', body, join(t.mountpoint, name)]);
  expect(w.stderr).toBe('');
  expect(w.stdout).toBe(body);
  expect(readFileSync(join(t.remoteDir, name), 'utf8')).toBe(body);
  const ls = await runChild('ls', [t.mountpoint]);
  expect(ls.stdout.split('\n')).toContain(name);
}

/** Link events the session logged for mount `t` (its logger carries the mountpoint). */
const linkEvents = (t: TestMount, msg: 'SFTP link lost: reconnecting' | 'SFTP link re-established') =>
  logs.filter((l) => l.mountpoint === t.mountpoint && l.msg === msg).length;

/** Run `fault` and wait until `t`'s session has noticed the loss and is connected again (not just still connected from before). */
async function faultAndReconnect(t: TestMount, fault: () => void | Promise<void>): Promise<void> {
  const before = linkEvents(t, 'SFTP link re-established');
  await fault();
  await until(() => linkEvents(t, 'SFTP link re-established') > before, 'the mount lost its link and reconnected');
}

/**
 * Inject `fault` while dd is mid-transfer (running, server file short of the
 * whole), then check dd's promise: exit 0 means the server holds exactly the
 * source bytes; otherwise the error was EIO. Either way the mount must have
 * lost its link, or the fault never reached it and nothing was tested.
 */
async function faultMidDd(dd: Child, serverFile: string, label: string, fault: () => Promise<void>): Promise<'complete' | 'EIO'> {
  await until(() => existsSync(serverFile) && statSync(serverFile).size > 48 * MiB, 'server file grows');
  const lost = linkEvents(m, 'SFTP link lost: reconnecting');
  const atFault = statSync(serverFile).size;
  expect(dd.proc.exitCode, 'dd still running when the fault is injected').toBeNull();
  expect(atFault).toBeLessThan(BIG);
  await fault();
  const r = await dd.done;
  expect(linkEvents(m, 'SFTP link lost: reconnecting'), 'the fault cut the mount\'s link').toBeGreaterThan(lost);
  if (r.code === 0) {
    expect(statSync(serverFile).size).toBe(BIG);
    expect(await sha256File(serverFile)).toBe(bigSha);
    console.log(`${label}: fault at ${atFault} bytes; dd completed, server sha256 matches`);
    return 'complete';
  }
  expect(r.stderr).toMatch(/Input\/output error/);
  console.log(`${label}: fault at ${atFault} bytes; dd failed with EIO (${r.stderr.trim().split('\n')[0]}); server has ${statSync(serverFile).size} bytes`);
  return 'EIO';
}

function startDd(t: TestMount, name: string): Child {
  return child('dd', [`if=${bigSrc}`, `of=${join(t.mountpoint, name)}`, 'bs=1M', 'conv=fsync']);
}

beforeAll(async () => {
  sshd = await startSshd();
  proxy = await startProxy(sshd.port);
  other = await startProxy(sshd.port);
  scratch = mkdtempSync(join(tmpdir(), 'tsfs-res-'));
  bigSrc = join(scratch, 'big.src');
  await runChild('sh', ['-c', `head -c ${BIG} /dev/urandom > ${bigSrc}`]);
  bigSha = await sha256File(bigSrc);
  m = await mountVia(proxy, 'a');
  m2 = await mountVia(other, 'b');
});

afterAll(async () => {
  await m?.cleanup();
  await m2?.cleanup();
  await proxy?.close();
  await other?.close();
  await sshd?.stop();
  if (sshd) removeSshdDir(sshd);
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('faults during a 256 MiB write (dd conv=fsync)', () => {
  it('sshd killed and restarted', async () => {
    const dd = startDd(m, 'w-sshd.bin');
    await faultMidDd(dd, join(m.remoteDir, 'w-sshd.bin'), 'sshd restart', () => sshd.restart());
    await servesNewWork(m, 'after-sshd.txt');
  });

  it('connection cut by the proxy', async () => {
    const dd = startDd(m, 'w-cut.bin');
    await faultMidDd(dd, join(m.remoteDir, 'w-cut.bin'), 'proxy cut', async () => proxy.cut());
    await servesNewWork(m, 'after-cut.txt');
  });

  it('link stalled (no bytes, nothing closed): keepalives notice it', async () => {
    const dd = startDd(m, 'w-stall.bin');
    await faultMidDd(dd, join(m.remoteDir, 'w-stall.bin'), 'proxy stall', async () => {
      proxy.stall(true);
      await until(() => m.fs.linkState !== 'connected', 'keepalive declares the stalled link dead');
      proxy.stall(false);
    });
    await servesNewWork(m, 'after-stall.txt');
    expect(logs.some((l) => l.msg === 'SFTP link lost: reconnecting' && /Keepalive timeout/.test(String(l.reason)))).toBe(true);
  });
});

describe('faults during a read: reads are re-issued after the reconnect', () => {
  const size = 48 * MiB;
  let sha: string;
  beforeAll(() => {
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    writeFileSync(join(m.remoteDir, 'r.bin'), data);
    sha = createHash('sha256').update(data).digest('hex');
  });

  const readThrough = async (fault: () => Promise<void>) => {
    const r = child(process.execPath, [CHILD, 'read', join(m.mountpoint, 'r.bin')]);
    await r.seen('progress', 4);
    expect(r.proc.exitCode, 'reader still running when the fault is injected').toBeNull();
    await faultAndReconnect(m, fault);
    const res = await r.done;
    expect(lastJson(res.stdout)).toEqual({ sha256: sha, bytes: size });
  };

  it('sshd killed and restarted', async () => {
    await readThrough(async () => {
      await sshd.stop();
      await sshd.restart();
    });
    await servesNewWork(m, 'after-read-sshd.txt');
  });
  it('connection cut', async () => {
    await readThrough(async () => proxy.cut());
  });
  it('link stalled', async () => {
    await readThrough(async () => {
      proxy.stall(true);
      await until(() => m.fs.linkState !== 'connected', 'keepalive declares the stalled link dead');
      proxy.stall(false);
    });
  });
});

describe('open files across a reconnect', () => {
  it('a file open for reading is reopened transparently', async () => {
    const data = Buffer.alloc(2 * MiB, 0x33);
    writeFileSync(join(m.remoteDir, 'held.bin'), data);
    const c = child(process.execPath, [CHILD, 'hold-read', join(m.mountpoint, 'held.bin')]);
    await c.seen('ready');
    await faultAndReconnect(m, () => proxy.cut());
    c.proc.stdin!.end('go\n');
    expect(lastJson((await c.done).stdout)).toEqual({ sha256: createHash('sha256').update(data).digest('hex'), bytes: 2 * MiB });
  });

  it('fsync and close of a file written before the link was lost fail with EIO (durability cannot be proven)', async () => {
    const c = child(process.execPath, [CHILD, 'hold-write', join(m.mountpoint, 'unsynced.bin')]);
    await c.seen('ready');
    await faultAndReconnect(m, () => proxy.cut());
    c.proc.stdin!.end('go\n');
    expect(lastJson((await c.done).stdout)).toEqual({ fsync: 'EIO', close: 'EIO' });
  });
});

describe('an outage longer than reconnect_timeout', () => {
  it('operations fail with EIO after the bound while another volume works, then the same mount recovers', async () => {
    proxy.refuse(true);
    proxy.cut();
    const stat = child('stat', [join(m.mountpoint, 'after-cut.txt')]);
    // The other volume (own link) answers while this one is down.
    const ls = await runChild('ls', [m2.mountpoint]);
    expect(ls.code).toBe(0);
    expect(stat.proc.exitCode).toBeNull();
    const r = await stat.done;
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Input\/output error/);
    const back = linkEvents(m, 'SFTP link re-established');
    proxy.refuse(false);
    await until(() => linkEvents(m, 'SFTP link re-established') > back, 'reconnected after the outage');
    const again = await runChild('cat', [join(m.mountpoint, 'after-cut.txt')]);
    expect(again.code).toBe(0);
    await servesNewWork(m, 'after-outage.txt');
  });
});

describe('host identity on reconnect', () => {
  let s2: Sshd;
  let s3: Sshd | undefined;
  let pinned: TestMount;
  let unchecked: TestMount;
  const pinnedLogs: Record<string, unknown>[] = [];
  const uncheckedLogs: Record<string, unknown>[] = [];
  beforeAll(async () => {
    s2 = await startSshd();
    const base = { log: capture(pinnedLogs), reconnectTimeoutMs: 5000 };
    // accept-new with nothing pinned: the first connection's key is pinned for reconnects.
    pinned = await mountForTest(s2, { subdir: 'p', ...base });
    unchecked = await mountForTest(s2, {
      subdir: 'u',
      target: { ...targetFor(s2, join(s2.storeDir, 'u')), strictHostKeyChecking: 'no' },
      log: capture(uncheckedLogs),
      reconnectTimeoutMs: 5000,
    });
  });
  afterAll(async () => {
    await pinned?.cleanup();
    await unchecked?.cleanup();
    await s3?.stop();
    await s2?.stop();
    if (s3) removeSshdDir(s3);
    if (s2) removeSshdDir(s2);
  });

  it('a server that comes back with another host key is refused, naming both fingerprints; StrictHostKeyChecking=no accepts it with a warning each time', async () => {
    const oldKey = s2.hostKeyFingerprint;
    await s2.stop();
    // Same address and port, new host key (and a new store, so nothing could
    // be served from it by mistake); it accepts the mounts' user key from its
    // first connection on.
    s3 = await startSshd({ port: s2.port, authorize: [s2.userKeyPath] });
    const newKey = s3.hostKeyFingerprint;
    expect(newKey).not.toBe(oldKey);
    const namesBoth = (l: Record<string, unknown>) => String(l.err).includes(oldKey) && String(l.err).includes(newKey);
    await until(() => pinnedLogs.some((l) => l.msg === 'reconnect failed; retrying' && l.level === 40 && namesBoth(l)), 'a reconnect of the pinned mount is refused for the new key');

    const r = await runChild('ls', [pinned.mountpoint]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Input\/output error/);
    expect(pinned.fs.lastError).toContain('host key mismatch');
    expect(pinned.fs.lastError).toContain(oldKey);
    expect(pinned.fs.lastError).toContain(newKey);
    expect(pinned.fs.linkState).toBe('reconnecting');

    // The unchecked mount connects to the new server (the user's store dir
    // does not exist there, which is the server's answer, not ours).
    const acceptWarns = () =>
      uncheckedLogs.filter((l) => l.level === 40 && /StrictHostKeyChecking=no: accepting host key/.test(String(l.msg))).map((w) => String(w.msg).match(/SHA256:\S+/)?.[0]);
    await until(() => acceptWarns().at(-1) === newKey, 'the unchecked mount accepts the new key');
    expect(acceptWarns()).toEqual([oldKey, newKey]);
  });
});
