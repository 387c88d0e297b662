// The driver's control logic through its seams (DriverDeps.probe, .mountFs,
// .stale): no sshd, no FUSE, so orderings that a real start-up produces only
// by chance are produced on purpose.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Driver, type StaleMounts } from '../src/driver';
import type { MountFs } from '../src/fs/index';
import { StateStore, type VolumeRecord } from '../src/state';
import type { Probe } from '../src/volume';

const KEY = 'SHA256:' + 'P'.repeat(43);
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsfs-driver-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const tick = () => new Promise((r) => setImmediate(r));

function driverWith(over: { probe?: Probe; mountFs?: MountFs; stale?: StaleMounts; records?: VolumeRecord[] } = {}) {
  const events: string[] = [];
  const probe: Probe = over.probe ?? (async (t) => (events.push(`probe ${t.host}`), { hostKey: KEY, realPath: '/srv/real' }));
  const mountFs: MountFs =
    over.mountFs ??
    (async (o) => {
      events.push(`mount ${o.mountpoint} key=${o.target.hostKey}`);
      return { linkState: 'connected', unmount: async () => void events.push(`unmount ${o.mountpoint}`) };
    });
  const store = new StateStore(join(dir, 'state'));
  const driver = new Driver(
    { mountRoot: join(dir, 'mnt'), sshDir: join(dir, 'ssh'), store, log: pino({ level: 'silent' }), mountFs, probe, ...(over.stale && { stale: over.stale }) },
    over.records ?? [],
  );
  return { driver, events, store };
}

describe('Create', () => {
  it('probes the remote and pins the host key seen (accept-new), and Mount connects with it', async () => {
    const { driver, events, store } = driverWith();
    await store.load();
    await driver.create({ Name: 'v1', Opts: { sshcmd: 'u@store.example:/srv' } });
    expect(events).toEqual(['probe store.example']);
    expect((await driver.get({ Name: 'v1' })).Volume.Status).toMatchObject({ host_key: KEY, remote_realpath: '/srv/real' });
    const mp = (await driver.mount({ Name: 'v1', ID: 'c1' })).Mountpoint;
    expect(events).toEqual(['probe store.example', `mount ${mp} key=${KEY}`]);
  });

  it('with StrictHostKeyChecking=no nothing is pinned', async () => {
    const { driver, store } = driverWith();
    await store.load();
    await driver.create({ Name: 'v1', Opts: { sshcmd: 'u@store.example:/srv', StrictHostKeyChecking: 'no' } });
    expect((await driver.get({ Name: 'v1' })).Volume.Status).toMatchObject({ host_key: 'not checked (StrictHostKeyChecking=no)' });
  });

  it('check=false skips the probe at Create; the first Mount probes and pins instead', async () => {
    const { driver, events, store } = driverWith();
    await store.load();
    await driver.create({ Name: 'v1', Opts: { sshcmd: 'u@store.example:/srv', check: 'false' } });
    expect(events).toEqual([]);
    const mp = (await driver.mount({ Name: 'v1', ID: 'c1' })).Mountpoint;
    expect(events).toEqual(['probe store.example', `mount ${mp} key=${KEY}`]);
    expect((await driver.get({ Name: 'v1' })).Volume.Status).toMatchObject({ host_key: KEY });
  });

  it('a failing probe creates nothing', async () => {
    const { driver, store } = driverWith({ probe: () => Promise.reject(new Error('connection to store.example:22 refused')) });
    await store.load();
    await expect(driver.create({ Name: 'v1', Opts: { sshcmd: 'u@store.example:/srv' } })).rejects.toThrow(/refused/);
    expect((await driver.list()).Volumes).toEqual([]);
  });
});

describe('start-up: the sweep of dead mounts and the restore of a volume', () => {
  it("never detaches the mount a restore has just made (the sweep's check and detach run before the restore, under the volume's lock)", async () => {
    const mp = join(dir, 'mnt', 'held');
    const events: string[] = [];
    let live = false;
    let calls = 0;
    let mounted: () => void = () => undefined;
    const mountHappened = new Promise<void>((r) => (mounted = r));
    const stale: StaleMounts = {
      list: () => [mp, join(dir, 'mnt', 'gone')],
      // Like the real one: "is it dead?", then the detach. Between the two
      // it waits for a mount to happen there, each call longer than the one
      // before (so a later check straddles an earlier caller's mount); if
      // the calls are serialised no mount can come, and each goes on.
      detach: async (p) => {
        events.push(`check ${p}`);
        const waitMs = 100 * 2 ** calls++;
        if (!live) await Promise.race([mountHappened, new Promise((r) => setTimeout(r, waitMs))]);
        await tick();
        events.push(`detach ${p}${p === mp && live ? ' (LIVE MOUNT)' : ''}`);
        return true;
      },
    };
    const mountFs: MountFs = async (o) => {
      events.push(`mount ${o.mountpoint}`);
      live = true;
      mounted();
      return { linkState: 'connected', unmount: async () => undefined };
    };
    const records: VolumeRecord[] = [{ name: 'held', createdAt: '', opts: { sshcmd: 'u@h:/p', host_key: KEY }, mountIds: ['c1'] }];
    const { driver, store } = driverWith({ stale, mountFs, records });
    await store.load();
    await driver.restoreAll();
    expect(events.filter((e) => e.includes('LIVE MOUNT'))).toEqual([]);
    const sweepDone = events.indexOf(`detach ${mp}`);
    expect(sweepDone).toBeGreaterThanOrEqual(0);
    expect(sweepDone).toBeLessThan(events.indexOf(`mount ${mp}`));
    expect(events).toContain(`detach ${join(dir, 'mnt', 'gone')}`);
  });
});
