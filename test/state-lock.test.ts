// One state directory per instance: two real daemons (the marker filesystem,
// separate sockets and mount roots, as two plugin tags would have) pointed at
// one state directory. The second must answer the socket but refuse every
// volume operation with the directory and the fix, and never list an empty or
// stale set; it must not touch the first one's state file.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';

const HOST_KEY = 'SHA256:' + 'A'.repeat(43);
const OPTS = { sshcmd: 'u@h:/p', check: 'false', host_key: HOST_KEY };
let first: DaemonProc;
let second: DaemonProc | undefined;

beforeAll(async () => {
  first = await startDaemon({ marker: true });
  expect((await first.call('/VolumeDriver.Create', { Name: 'kept', Opts: OPTS })).status).toBe(200);
  expect((await first.call('/VolumeDriver.Mount', { Name: 'kept', ID: 'm1' })).status).toBe(200);
});

afterAll(async () => {
  await second?.stop();
  await first?.stop();
  if (second) removeDaemonDir(second.dir);
  if (first) removeDaemonDir(first.dir);
  removeDist();
});

const stateFile = () => readFileSync(join(first.stateDir, 'tsfs.json'), 'utf8');

describe('a second daemon on a state directory another one holds', () => {
  it('answers Activate and Capabilities, so `docker plugin enable` succeeds', async () => {
    second = await startDaemon({ marker: true, env: { TSFS_STATE_DIR: first.stateDir } });
    expect((await second.call('/Plugin.Activate')).json).toEqual({ Implements: ['VolumeDriver'] });
    expect((await second.call('/VolumeDriver.Capabilities', {})).json).toEqual({ Capabilities: { Scope: 'local' } });
    expect(second.logLines().find((l) => l.msg === 'listening')).toMatchObject({ serving: false });
  });

  it.each([
    ['List', {}],
    ['Get', { Name: 'kept' }],
    ['Path', { Name: 'kept' }],
    ['Create', { Name: 'other', Opts: OPTS }],
    ['Mount', { Name: 'kept', ID: 'm2' }],
    ['Unmount', { Name: 'kept', ID: 'm1' }],
    ['Remove', { Name: 'kept' }],
  ])('refuses %s with the directory and the fix, never an empty or stale answer', async (op, body) => {
    const before = stateFile();
    const a = await second!.call(`/VolumeDriver.${op}`, body);
    expect(a.status).toBe(500);
    expect(Object.keys(a.json)).toEqual(['Err']);
    const err = String(a.json.Err);
    expect(err).toContain(`its state directory (${first.stateDir} in the plugin`);
    expect(err).toContain(`in use by another tsfs instance (tsfs daemon pid ${first.proc.pid} `);
    expect(err).toContain('docker plugin set <alias> state.source=/another/dir');
    // The first daemon's volumes are untouched: same file, still mounted, still listed there.
    expect(stateFile()).toBe(before);
    expect(JSON.parse(stateFile()).volumes).toMatchObject([{ name: 'kept', mountIds: ['m1'] }]);
  });

  it('logs why it is not serving, once, at start', () => {
    const lines = second!.logLines().filter((l) => String(l.msg).startsWith('this tsfs instance is not serving volumes'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'error', stateDir: first.stateDir });
  });

  it('the first daemon serves on as before', async () => {
    const list = (await first.call('/VolumeDriver.List', {})).json.Volumes as { Name: string }[];
    expect(list.map((v) => v.Name)).toEqual(['kept']);
    expect((await first.call('/VolumeDriver.Create', { Name: 'more', Opts: OPTS })).status).toBe(200);
    expect(JSON.parse(stateFile()).volumes.map((v: { name: string }) => v.name)).toEqual(['kept', 'more']);
  });

  it('once the first one stops, a daemon started on the directory takes it and serves its volumes', async () => {
    await second!.stop();
    removeDaemonDir(second!.dir);
    second = undefined;
    expect(await first.stop()).toEqual({ code: 0, signal: null });
    second = await startDaemon({ marker: true, env: { TSFS_STATE_DIR: first.stateDir } });
    const list = (await second.call('/VolumeDriver.List', {})).json.Volumes as { Name: string }[];
    expect(list.map((v) => v.Name)).toEqual(['kept', 'more']);
  });

  it('a daemon killed with SIGKILL leaves no stale lock: the next one serves', async () => {
    await second!.stop('SIGKILL');
    removeDaemonDir(second!.dir);
    second = await startDaemon({ marker: true, env: { TSFS_STATE_DIR: first.stateDir } });
    expect(second.logLines().find((l) => l.msg === 'listening')).toMatchObject({ serving: true, volumes: 2 });
    expect((await second.call('/VolumeDriver.Get', { Name: 'more' })).status).toBe(200);
  });
});
