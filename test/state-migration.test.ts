// The state file keeps the options a user gave (plus the pinned host key),
// and their meaning is derived at every start: a default changed in a new
// version applies to old volumes and never makes an identical Create fail
// with "differ". test/fixtures/state-v1.json was written by tsfs 2a6c755's
// own parseOptions (version 1 stored the derived spec, defaults and notes
// baked in); it must load, and identical Creates must succeed, under today's
// defaults and under changed ones.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Driver } from '../src/driver';
import type { MountFs } from '../src/fs/index';
import { DEFAULTS } from '../src/options';
import { STATE_VERSION, StateStore, type VolumeRecord } from '../src/state';
import { Volume } from '../src/volume';

/** The -o options each fixture volume was created with (what dockerd would send again). */
const CREATED_WITH: Record<string, Record<string, string>> = {
  plain: { sshcmd: 'alice@files.example:/srv/ml', host_key: 'SHA256:' + 'A'.repeat(43), check: 'false' },
  tuned: {
    sshcmd: 'bob@[fd00::5]:/data', port: '2222', password: 'pw-Fixture-1', ro: '', uid: '1000', gid: '100', umask: '022',
    cache_timeout: '5', ServerAliveInterval: '30', Compression: 'no', allow_other: 'no', StrictHostKeyChecking: 'no',
  },
  // Accepted by version 1, refused today: the migration takes the defaults instead.
  nokeepalive: { sshcmd: 'carol@files.example:/m', host_key: 'SHA256:' + 'D'.repeat(43), ServerAliveInterval: '0', ConnectTimeout: '0' },
  pinned: { sshcmd: 'root@10.0.0.7:', IdentityFile: '/root/.ssh/id_ed25519', mkdir: 'yes', reconnect_timeout: '120', ConnectTimeout: '30', cache: 'no' },
};

const neverMounts: MountFs = () => Promise.reject(new Error('not mounted in this test'));
const volumeOf = (record: VolumeRecord) =>
  new Volume(record, join(dir, 'mnt', record.name), { mountFs: neverMounts, sshDir: '', stateDir: dir, log: pino({ level: 'silent' }), detachStale: async () => false });
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsfs-state-'));
  copyFileSync(join(__dirname, 'fixtures', 'state-v1.json'), join(dir, 'tsfs.json'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function loadDriver(): Promise<{ driver: Driver; store: StateStore }> {
  const store = new StateStore(dir);
  const { state, quarantined } = await store.load();
  expect(quarantined).toBeUndefined();
  const driver = new Driver({ mountRoot: join(dir, 'mnt'), sshDir: join(dir, 'ssh'), store, log: pino({ level: 'silent' }), mountFs: neverMounts }, state.volumes);
  return { driver, store };
}

describe('a version-1 state file', () => {
  it('loads with every volume, its pinned key and mount IDs, as the options the user gave', async () => {
    const { state } = await new StateStore(dir).load();
    expect(state.version).toBe(STATE_VERSION);
    const byName = Object.fromEntries(state.volumes.map((v) => [v.name, v]));
    expect(Object.keys(byName).sort()).toEqual(['nokeepalive', 'pinned', 'plain', 'tuned']);
    expect(byName.pinned).toMatchObject({ pinnedHostKey: 'SHA256:' + 'B'.repeat(43), remoteRealPath: '/root', mountIds: ['c1'] });
    // The notes (Compression) had no effect and are not carried.
    const { Compression: _ignored, ...tunedEffective } = CREATED_WITH.tuned;
    expect(byName.tuned.opts).toMatchObject({ sshcmd: tunedEffective.sshcmd, port: '2222', password: 'pw-Fixture-1', cache_timeout: '5', allow_other: 'no' });
  });

  it('a volume whose version-1 values are refused today (ServerAliveInterval=0, ConnectTimeout=0) keeps working with the defaults', async () => {
    const { state } = await new StateStore(dir).load();
    const record = state.volumes.find((v) => v.name === 'nokeepalive')!;
    expect(record.opts).toEqual({ sshcmd: 'carol@files.example:/m', host_key: 'SHA256:' + 'D'.repeat(43) });
    expect(record.mountIds).toEqual(['k1']);
    expect(volumeOf(record).spec).toMatchObject({ serverAliveInterval: DEFAULTS.serverAliveInterval, connectTimeout: DEFAULTS.connectTimeout });
  });

  it('identical Creates succeed, and different ones are refused naming the option', async () => {
    const { driver } = await loadDriver();
    for (const [Name, Opts] of Object.entries(CREATED_WITH)) {
      if (Name !== 'nokeepalive') await driver.create({ Name, Opts });
    }
    await expect(driver.create({ Name: 'tuned', Opts: { ...CREATED_WITH.tuned, cache_timeout: '6' } })).rejects.toThrow(/cache_timeout differ/);
    await expect(driver.create({ Name: 'plain', Opts: { ...CREATED_WITH.plain, port: '2200' } })).rejects.toThrow(/port differ/);
  });

  it('is written back in the current version with the options, not a derived spec', async () => {
    const { driver } = await loadDriver();
    await driver.create({ Name: 'new-one', Opts: { sshcmd: 'u@h:/p', check: 'false', host_key: 'SHA256:' + 'C'.repeat(43) } });
    const saved = JSON.parse(readFileSync(join(dir, 'tsfs.json'), 'utf8')) as { version: number; volumes: Record<string, unknown>[] };
    expect(saved.version).toBe(STATE_VERSION);
    expect(saved.volumes.find((v) => v.name === 'new-one')).toMatchObject({ opts: { sshcmd: 'u@h:/p', check: 'false' } });
    expect(saved.volumes.every((v) => !('spec' in v))).toBe(true);
  });

  describe('under changed defaults (a newer version)', () => {
    const saved = { ...DEFAULTS };
    beforeEach(() => Object.assign(DEFAULTS, { cacheTimeout: 7, serverAliveInterval: 10, connectTimeout: 20 }));
    afterEach(() => Object.assign(DEFAULTS, saved));

    it('identical Creates still succeed, and volumes that took the old default get the new one', async () => {
      const { driver } = await loadDriver();
      for (const [Name, Opts] of Object.entries(CREATED_WITH)) {
        if (Name !== 'nokeepalive') await driver.create({ Name, Opts });
      }
      const { state } = await new StateStore(dir).load();
      const spec = (name: string) => volumeOf(state.volumes.find((v) => v.name === name)!).spec;
      expect(spec('plain')).toMatchObject({ cacheTimeout: 7, serverAliveInterval: 10, connectTimeout: 20 });
      // What the user gave stays theirs.
      expect(spec('tuned')).toMatchObject({ cacheTimeout: 5, serverAliveInterval: 30, connectTimeout: 20, port: 2222, readOnly: true, umask: 0o022 });
      expect(spec('pinned')).toMatchObject({ cacheTimeout: 0, reconnectTimeout: 120, connectTimeout: 30, mkdir: true });
    });
  });
});

describe('a stored volume whose options this version refuses (a hand-edited or future state file)', () => {
  it('stays listed, its Mount says to recreate it, and it can be removed', async () => {
    const store = new StateStore(dir);
    await store.save({ version: STATE_VERSION, volumes: [{ name: 'odd', createdAt: '', opts: { sshcmd: 'u@h:/p', frobnicate: '1' }, mountIds: [] }] });
    const { driver } = await loadDriver();
    expect((await driver.list()).Volumes.map((v) => v.Name)).toEqual(['odd']);
    expect((await driver.get({ Name: 'odd' })).Volume.Status).toMatchObject({ connection: 'unusable', last_error: expect.stringMatching(/unknown option "frobnicate"/) });
    await expect(driver.mount({ Name: 'odd', ID: 'c1' })).rejects.toThrow(/volume odd was created with options this version of tsfs refuses \(unknown option "frobnicate".*remove it \(docker volume rm odd\) and create it again/);
    await driver.remove({ Name: 'odd' });
    expect((await driver.list()).Volumes).toEqual([]);
  });
});
