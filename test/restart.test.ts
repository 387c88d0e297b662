// Durable state across daemon restarts: volumes and mount-ID sets come back,
// in-use volumes are remounted in the background, the state file is 0600 in a
// 0700 dir, a bad state file is set aside, and the password never leaks.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type Answer, type DaemonProc } from './helpers/daemon';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
import { until } from './helpers/until';

const SECRET = 'pw-Restart-Zq7-distinctive';
const HOST_KEY = 'SHA256:' + 'A'.repeat(43);
const answers: Answer[] = [];
const logs: string[] = [];
let d: DaemonProc;
let dir: string;

async function call(endpoint: string, body?: unknown): Promise<Answer> {
  const a = await d.call(endpoint, body);
  answers.push(a);
  return a;
}
async function restart(env: Record<string, string> = {}): Promise<void> {
  const r = await d.stop();
  logs.push(d.stdout(), d.stderr());
  expect(r).toEqual({ code: 0, signal: null });
  d = await startDaemon({ marker: true, dir, env });
}
const status = async (Name: string) => ((await call('/VolumeDriver.Get', { Name })).json.Volume as { Status: Record<string, unknown> }).Status;
const marker = (name: string) => join(d.mountRoot, name, '.tsfs-marker');
beforeAll(async () => {
  d = await startDaemon({ marker: true });
  dir = d.dir;
});
afterAll(async () => {
  if (d) {
    await d.stop();
    logs.push(d.stdout(), d.stderr());
    removeDaemonDir(d.dir);
  }
  removeDist();
});

describe('restart', () => {
  it('volumes and mount-ID sets survive a SIGTERM restart, and in-use volumes are remounted', async () => {
    const opts = { sshcmd: 'bob@store.example:/data', host_key: HOST_KEY, check: 'false', password: SECRET };
    expect((await call('/VolumeDriver.Create', { Name: 'inuse', Opts: opts })).status).toBe(200);
    expect((await call('/VolumeDriver.Create', { Name: 'idle', Opts: { ...opts, ro: '' } })).status).toBe(200);
    expect((await call('/VolumeDriver.Mount', { Name: 'inuse', ID: 'a' })).status).toBe(200);
    expect((await call('/VolumeDriver.Mount', { Name: 'inuse', ID: 'b' })).status).toBe(200);
    const created = ((await call('/VolumeDriver.Get', { Name: 'inuse' })).json.Volume as { CreatedAt: string }).CreatedAt;

    await restart();
    // Shutdown unmounted the filesystem (and the restart remounts it).
    expect(readFileSync(d.markerLog, 'utf8')).toMatch(/unmount .*inuse\n/);
    const names = ((await call('/VolumeDriver.List', {})).json.Volumes as { Name: string }[]).map((v) => v.Name).sort();
    expect(names).toEqual(['idle', 'inuse']);
    expect(((await call('/VolumeDriver.Get', { Name: 'inuse' })).json.Volume as { CreatedAt: string }).CreatedAt).toBe(created);
    expect(await status('inuse')).toMatchObject({ mounts: 2 });
    expect(await status('idle')).toMatchObject({ mounts: 0, connection: 'unmounted', read_only: true });
    await until(async () => (await status('inuse')).connection === 'connected', 'volume inuse restored', { seen: () => status('inuse') });
    expect(existsSync(marker('inuse'))).toBe(true);
    expect(existsSync(marker('idle'))).toBe(false);

    // The restored set behaves like the original one.
    expect((await call('/VolumeDriver.Mount', { Name: 'inuse', ID: 'b' })).status).toBe(200);
    expect((await call('/VolumeDriver.Unmount', { Name: 'inuse', ID: 'a' })).status).toBe(200);
    expect(existsSync(marker('inuse'))).toBe(true);
    expect((await call('/VolumeDriver.Unmount', { Name: 'inuse', ID: 'b' })).status).toBe(200);
    expect(existsSync(marker('inuse'))).toBe(false);
  });

  it('a Mount that arrives while the restore is in flight waits for it instead of mounting twice', async () => {
    expect((await call('/VolumeDriver.Mount', { Name: 'inuse', ID: 'r1' })).status).toBe(200);
    const mountsBefore = readFileSync(d.markerLog, 'utf8').split('\n').filter((l) => l.startsWith('mount ')).length;
    const gate = join(dir, 'gate');
    await restart({ TSFS_MARKER_GATE: gate });
    expect((await status('inuse')).connection).toBe('restoring');
    const pending = call('/VolumeDriver.Mount', { Name: 'inuse', ID: 'r2' });
    writeFileSync(gate, '');
    const m = await pending;
    expect(m.status).toBe(200);
    expect(existsSync(marker('inuse'))).toBe(true);
    expect(await status('inuse')).toMatchObject({ connection: 'connected', mounts: 2 });
    const mounts = readFileSync(d.markerLog, 'utf8').split('\n').filter((l) => l.startsWith('mount ')).length;
    expect(mounts - mountsBefore).toBe(1);
    for (const ID of ['r1', 'r2']) expect((await call('/VolumeDriver.Unmount', { Name: 'inuse', ID })).status).toBe(200);
    expect(existsSync(marker('inuse'))).toBe(false);
  });

  it('state file is 0600 in a 0700 directory, versioned', () => {
    expect(statSync(d.stateDir).mode & 0o777).toBe(0o700);
    const f = join(d.stateDir, 'tsfs.json');
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(f, 'utf8')).version).toBe(2);
  });

  it('a leftover socket file does not stop the daemon', async () => {
    await d.stop();
    logs.push(d.stdout(), d.stderr());
    mkdirSync(join(dir, 'run'), { recursive: true });
    writeFileSync(join(dir, 'run', 'tsfs.sock'), 'stale');
    d = await startDaemon({ marker: true, dir });
    expect((await call('/VolumeDriver.List', {})).json.Volumes).toHaveLength(2);
  });

  it.each([
    ['not JSON', '{"version": 1, "volumes": [', /not JSON/],
    ['an unknown version', '{"version": 99, "volumes": []}', /unknown state version 99/],
    ['invalid records', '{"version": 1, "volumes": [{"name": 5}]}', /invalid state/],
    ['a record whose name escapes the mount root', '{"version": 1, "volumes": [{"name": "../../etc", "createdAt": "x", "mountIds": [], "spec": {}}]}', /volumes.0.name: not a valid volume name/],
  ])('a state file that is %s is set aside and the daemon starts empty', async (_what, text, reason) => {
    await d.stop();
    logs.push(d.stdout(), d.stderr());
    const before = readdirSync(d.stateDir).filter((n) => n.includes('.bad-')).length;
    writeFileSync(join(d.stateDir, 'tsfs.json'), text, { mode: 0o600 });
    d = await startDaemon({ marker: true, dir });
    expect((await call('/Plugin.Activate')).json).toEqual({ Implements: ['VolumeDriver'] });
    expect((await call('/VolumeDriver.List', {})).json).toEqual({ Volumes: [] });
    const bad = readdirSync(d.stateDir).filter((n) => n.startsWith('tsfs.json.bad-'));
    expect(bad.length).toBe(before + 1);
    const line = d.logLines().find((l) => l.msg === 'state file unreadable: moved it aside and started with no volumes');
    expect(String(line?.reason)).toMatch(reason);
    expect(bad.map((b) => join(d.stateDir, b))).toContain(line?.movedTo);
    // The daemon works on: a new volume is saved to a fresh, valid file.
    expect((await call('/VolumeDriver.Create', { Name: 'fresh', Opts: { sshcmd: 'u@h:/p', check: 'false', host_key: HOST_KEY } })).status).toBe(200);
    expect(JSON.parse(readFileSync(join(d.stateDir, 'tsfs.json'), 'utf8')).volumes[0].name).toBe('fresh');
  });

  it('a bad setting does not stop the daemon: it starts with the default, warns, and every volume says so', async () => {
    // LOG_LEVEL=verbose used to exit at start: `docker plugin enable` then failed with "dial unix ... no such file".
    await restart({ LOG_LEVEL: 'verbose' });
    const warning = 'LOG_LEVEL="verbose" is not valid (LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent): using the default "info"';
    const line = d.logLines().find((l) => String(l.msg).startsWith('bad plugin setting'));
    expect(line).toMatchObject({ level: 'warn', setting: 'LOG_LEVEL' });
    expect(String(line?.msg)).toContain(warning);
    expect(d.logLines().some((l) => l.msg === 'listening')).toBe(true);
    const vols = (await call('/VolumeDriver.List', {})).json.Volumes as { Name: string; Status: Record<string, unknown> }[];
    expect(vols.length).toBeGreaterThan(0);
    for (const v of vols) expect(v.Status.plugin_settings).toEqual([expect.stringContaining(warning)]);
    expect((await status(vols[0]!.Name)).plugin_settings).toEqual([expect.stringContaining(warning)]);
    // Fixed: the warning goes away.
    await restart();
    expect((await call('/VolumeDriver.List', {})).json.Volumes).toSatisfy((vs: { Status: Record<string, unknown> }[]) => vs.every((v) => !('plugin_settings' in v.Status)));
  });

  it('the password appears nowhere but the state file: not in logs, answers, or other files', async () => {
    logs.push(d.stdout(), d.stderr());
    expect(logs.join('\n')).not.toContain(SECRET);
    expect(answers.map((a) => a.text).join('\n')).not.toContain(SECRET);
    const holders: string[] = [];
    const walk = (p: string) => {
      for (const e of readdirSync(p, { withFileTypes: true })) {
        const f = join(p, e.name);
        if (e.isDirectory()) walk(f);
        else if (e.isFile() && readFileSync(f).includes(SECRET)) holders.push(f.slice(dir.length + 1));
      }
    };
    walk(dir);
    // The quarantined copies are whole older state files, equally 0600 in the 0700 dir.
    expect(holders.filter((h) => !/^state\/tsfs\.json(\.bad-.*)?$/.test(h))).toEqual([]);
  });
});

describe('restore after a crash', () => {
  let sshd: Sshd;
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
  });

  it('a stale FUSE mount (Transport endpoint is not connected) at the mountpoint is detached and the volume remounted', async () => {
    const opts = { sshcmd: `root@${sshd.host}:${sshd.storeDir}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath };
    expect((await call('/VolumeDriver.Create', { Name: 'crashed', Opts: opts })).status).toBe(200);
    expect((await call('/VolumeDriver.Mount', { Name: 'crashed', ID: 'c1' })).status).toBe(200);
    // A crash: the daemon dies without unmounting...
    await d.stop('SIGKILL');
    logs.push(d.stdout(), d.stderr());
    // ...leaving a dead FUSE mount behind. Made here with the C sshfs, killed hard.
    const mp = join(d.mountRoot, 'crashed');
    const sshfs = spawn('sshfs', ['-f', '-o', `IdentityFile=${sshd.userKeyPath},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,port=${sshd.port}`, `root@${sshd.host}:${sshd.storeDir}`, mp], { stdio: 'ignore' });
    await until(() => readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${mp} `), `${mp} mounted`);
    sshfs.kill('SIGKILL');
    await new Promise((r) => sshfs.once('exit', r));
    const code = await import('node:fs/promises').then((f) => f.stat(mp).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code));
    expect(code).toBe('ENOTCONN');
    try {
      d = await startDaemon({ marker: true, dir });
      await until(async () => (await status('crashed')).connection === 'connected', 'volume crashed restored', { seen: () => status('crashed') });
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(` ${mp} `);
      expect(existsSync(join(mp, '.tsfs-marker'))).toBe(true);
      expect(d.logLines().some((l) => String(l.msg).startsWith('stale FUSE mount found') && l.volume === 'crashed')).toBe(true);
      expect((await call('/VolumeDriver.Unmount', { Name: 'crashed', ID: 'c1' })).status).toBe(200);
    } finally {
      try {
        execFileSync('fusermount', ['-uz', mp], { stdio: 'ignore' });
      } catch {
        /* already gone, which is the point */
      }
    }
  });
});

describe('a promise rejection nobody handled (a tsfs bug)', () => {
  it('is logged at error level with its stack, the daemon keeps serving, and the test helper fails the run on it', async () => {
    const b = await startDaemon({ marker: true });
    try {
      const Opts = { sshcmd: 'u@store.example:/data/stray-rejection', check: 'false', host_key: 'SHA256:' + 'A'.repeat(43) };
      expect((await b.call('/VolumeDriver.Create', { Name: 'buggy', Opts })).status).toBe(200);
      expect((await b.call('/VolumeDriver.Mount', { Name: 'buggy', ID: 'c1' })).status).toBe(200);
      await until(() => b.logLines().some((l) => String(l.msg).startsWith('unhandled promise rejection')), 'the rejection is logged');
      const line = b.logLines().find((l) => String(l.msg).startsWith('unhandled promise rejection'));
      expect(line).toMatchObject({ level: 'error', err: 'stray rejection from the marker filesystem' });
      expect(String(line?.stack)).toMatch(/marker-daemon\.cjs/);
      expect((await b.call('/VolumeDriver.Get', { Name: 'buggy' })).json).toMatchObject({ Volume: { Status: { connection: 'connected' } } });
    } finally {
      await expect(b.stop()).rejects.toThrow(/the daemon logged an unhandled rejection/);
      removeDaemonDir(b.dir);
    }
  });
});
