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

async function until(what: () => boolean | Promise<boolean>, what_: string): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    if (await what()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`never happened: ${what_}`);
}

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

/** dd's promise: exit 0 means the server holds exactly the source bytes; otherwise the error was EIO. */
async function checkDdOutcome(dd: Child, serverFile: string, label: string): Promise<'complete' | 'EIO'> {
  const r = await dd.done;
  if (r.code === 0) {
    expect(statSync(serverFile).size).toBe(BIG);
    expect(await sha256File(serverFile)).toBe(bigSha);
    console.log(`${label}: dd completed, server sha256 matches`);
    return 'complete';
  }
  expect(r.stderr).toMatch(/Input\/output error/);
  console.log(`${label}: dd failed with EIO (${r.stderr.trim().split('\n')[0]}); server has ${statSync(serverFile).size} bytes`);
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
  const serverGrows = (f: string) => () => existsSync(f) && statSync(f).size > 48 * MiB;

  it('sshd killed and restarted', async () => {
    const f = join(m.remoteDir, 'w-sshd.bin');
    const dd = startDd(m, 'w-sshd.bin');
    await until(serverGrows(f), 'server file grows');
    await sshd.stop();
    await sshd.restart();
    await checkDdOutcome(dd, f, 'sshd restart');
    await servesNewWork(m, 'after-sshd.txt');
  });

  it('connection cut by the proxy', async () => {
    const f = join(m.remoteDir, 'w-cut.bin');
    const dd = startDd(m, 'w-cut.bin');
    await until(serverGrows(f), 'server file grows');
    proxy.cut();
    await checkDdOutcome(dd, f, 'proxy cut');
    await servesNewWork(m, 'after-cut.txt');
  });

  it('link stalled (no bytes, nothing closed): keepalives notice it', async () => {
    const f = join(m.remoteDir, 'w-stall.bin');
    const dd = startDd(m, 'w-stall.bin');
    await until(serverGrows(f), 'server file grows');
    proxy.stall(true);
    await until(() => m.fs.linkState !== 'connected', 'keepalive declares the stalled link dead');
    proxy.stall(false);
    await checkDdOutcome(dd, f, 'proxy stall');
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
    await fault();
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
    proxy.cut();
    await until(() => m.fs.linkState === 'connected', 'reconnected');
    c.proc.stdin!.end('go\n');
    expect(lastJson((await c.done).stdout)).toEqual({ sha256: createHash('sha256').update(data).digest('hex'), bytes: 2 * MiB });
  });

  it('fsync and close of a file written before the link was lost fail with EIO (durability cannot be proven)', async () => {
    const c = child(process.execPath, [CHILD, 'hold-write', join(m.mountpoint, 'unsynced.bin')]);
    await c.seen('ready');
    proxy.cut();
    await until(() => m.fs.linkState === 'connected', 'reconnected');
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
    proxy.refuse(false);
    await until(() => m.fs.linkState === 'connected', 'reconnected after the outage');
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
    // Same address and port, new host key (and a new store, so nothing could be served from it by mistake).
    s3 = await startSshd({ port: s2.port });
    writeFileSync(join(s3.dir, 'authorized_keys'), readFileSync(`${s2.userKeyPath}.pub`));
    const newKey = s3.hostKeyFingerprint;
    expect(newKey).not.toBe(oldKey);

    const r = await runChild('ls', [pinned.mountpoint]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Input\/output error/);
    expect(pinned.fs.lastError).toContain('host key mismatch');
    expect(pinned.fs.lastError).toContain(oldKey);
    expect(pinned.fs.lastError).toContain(newKey);
    expect(pinned.fs.linkState).toBe('reconnecting');
    const logged = pinnedLogs.filter((l) => l.msg === 'reconnect failed; retrying' && l.level === 40);
    expect(logged.some((l) => String(l.err).includes(oldKey) && String(l.err).includes(newKey))).toBe(true);

    // The unchecked mount connects to the new server (the user's store dir
    // does not exist there, which is the server's answer, not ours).
    await until(() => unchecked.fs.linkState === 'connected', 'unchecked mount reconnects');
    const warns = uncheckedLogs.filter((l) => l.level === 40 && /StrictHostKeyChecking=no: accepting host key/.test(String(l.msg)));
    expect(warns.map((w) => String(w.msg).match(/SHA256:\S+/)?.[0])).toEqual([oldKey, newKey]);
  });
});
