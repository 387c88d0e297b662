// Many parallel Create/Remove/Mount/Unmount requests against the real daemon
// (marker filesystem): per-volume operations are serialised and persisted
// before the answer, so afterwards the state file and List agree, and each
// volume's mount-ID set is exactly what was mounted minus what was unmounted.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';

const HOST_KEY = 'SHA256:' + 'A'.repeat(43);
const Opts = { sshcmd: 'u@store.example:/data', host_key: HOST_KEY, check: 'false' };
const VOLS = Array.from({ length: 8 }, (_, i) => `cv${i}`);
const RACE = Array.from({ length: 4 }, (_, i) => `race${i}`);
let d: DaemonProc;

beforeAll(async () => {
  d = await startDaemon({ marker: true, env: { LOG_LEVEL: 'warn' } });
});
afterAll(async () => {
  await d?.stop();
  if (d) removeDaemonDir(d.dir);
  removeDist();
});

type StateFile = { volumes: { name: string; mountIds: string[] }[] };
const state = () => JSON.parse(readFileSync(join(d.stateDir, 'tsfs.json'), 'utf8')) as StateFile;
const ok = async (endpoint: string, body: unknown) => {
  const a = await d.call(endpoint, body);
  expect(a.json.Err, `${endpoint} ${JSON.stringify(body)}`).toBeUndefined();
  return a;
};
const markerLines = () => (existsSync(d.markerLog) ? readFileSync(d.markerLog, 'utf8').split('\n').filter(Boolean) : []);

async function agree(expected: Map<string, Set<string>>): Promise<void> {
  const s = state();
  const listed = ((await d.call('/VolumeDriver.List', {})).json.Volumes as { Name: string; Status: { mounts: number } }[]);
  expect(listed.map((v) => v.Name).sort()).toEqual(s.volumes.map((v) => v.name).sort());
  for (const v of s.volumes) expect(listed.find((l) => l.Name === v.name)!.Status.mounts).toBe(v.mountIds.length);
  for (const [name, ids] of expected) {
    const rec = s.volumes.find((v) => v.name === name);
    expect(rec, name).toBeDefined();
    expect([...rec!.mountIds].sort()).toEqual([...ids].sort());
  }
  // The filesystem is mounted exactly while the ID set is non-empty.
  for (const v of s.volumes) {
    const lines = markerLines();
    const mp = join(d.mountRoot, v.name);
    const mounts = lines.filter((l) => l.startsWith(`mount ${mp} `)).length;
    const unmounts = lines.filter((l) => l === `unmount ${mp}`).length;
    expect(mounts - unmounts, v.name).toBe(v.mountIds.length > 0 ? 1 : 0);
  }
}

describe('parallel requests', () => {
  it('keep the state file, List and mount-ID sets consistent', async () => {
    // Creates (repeated), Gets and Lists all at once.
    await Promise.all(VOLS.flatMap((Name) => [0, 1, 2].map(() => ok('/VolumeDriver.Create', { Name, Opts }))).concat(VOLS.map(() => d.call('/VolumeDriver.List', {}))));
    const expected = new Map<string, Set<string>>(VOLS.map((v) => [v, new Set<string>()]));

    // Per volume: 10 IDs mounted (each twice), IDs 0-4 then unmounted, all volumes and IDs in parallel;
    // conflicting Creates and Removes of in-use volumes thrown in.
    const jobs: Promise<unknown>[] = [];
    for (const Name of VOLS) {
      for (let i = 0; i < 10; i++) {
        const ID = `${Name}-id${i}`;
        jobs.push(
          (async () => {
            await ok('/VolumeDriver.Mount', { Name, ID });
            await ok('/VolumeDriver.Mount', { Name, ID });
            if (i < 5) await ok('/VolumeDriver.Unmount', { Name, ID });
          })(),
        );
        if (i >= 5) expected.get(Name)!.add(ID);
      }
      jobs.push(d.call('/VolumeDriver.Create', { Name, Opts: { ...Opts, ro: '' } }).then((a) => expect(a.json.Err).toMatch(/already exists with different options/)));
      jobs.push(d.call('/VolumeDriver.Unmount', { Name, ID: 'never-mounted' }));
    }
    // Create/Remove races on other volumes: whatever the order, state and List must agree.
    for (const Name of RACE) for (let k = 0; k < 5; k++) jobs.push(d.call(k % 2 ? '/VolumeDriver.Remove' : '/VolumeDriver.Create', { Name, Opts }));
    await Promise.all(jobs);
    await agree(expected);
    // Removes while in use are refused, in parallel with more mounts.
    await Promise.all(
      VOLS.flatMap((Name) => [
        d.call('/VolumeDriver.Remove', { Name }).then((a) => expect(a.json.Err).toMatch(/in use by/)),
        ok('/VolumeDriver.Mount', { Name, ID: `${Name}-late` }).then(() => expected.get(Name)!.add(`${Name}-late`)),
      ]),
    );
    await agree(expected);

    // Half the volumes released completely and removed, all in parallel.
    const released = VOLS.slice(0, 4);
    await Promise.all(
      released.map(async (Name) => {
        await Promise.all([...expected.get(Name)!].map((ID) => ok('/VolumeDriver.Unmount', { Name, ID })));
        await ok('/VolumeDriver.Remove', { Name });
      }),
    );
    for (const Name of released) expected.delete(Name);
    await agree(expected);
    for (const Name of released) expect(state().volumes.some((v) => v.name === Name)).toBe(false);

    // What was answered was persisted: a restart shows the same.
    expect((await d.stop()).code).toBe(0);
    d = await startDaemon({ marker: true, dir: d.dir, env: { LOG_LEVEL: 'warn' } });
    await d.call('/Plugin.Activate');
    const s = state();
    for (const [name, ids] of expected) expect([...s.volumes.find((v) => v.name === name)!.mountIds].sort()).toEqual([...ids].sort());
  });
});
