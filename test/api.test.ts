// The VolumeDriver API contract over the real unix socket of the real daemon
// process, with requests shaped like dockerd's (POST, no Content-Type).
// Mount needs a filesystem; this file uses the marker filesystem
// (test/helpers/marker-daemon.cjs) so it tests the daemon, not SFTP.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';

const HOST_KEY = 'SHA256:' + 'A'.repeat(43);
const SECRET = 'pw-Api-Zq7-distinctive';
let d: DaemonProc;

beforeAll(async () => {
  d = await startDaemon({ marker: true });
});
afterAll(async () => {
  const r = await d?.stop();
  expect(r?.code).toBe(0);
  if (d) removeDaemonDir(d.dir);
  removeDist();
});

const opts = (extra: Record<string, string> = {}) => ({ sshcmd: 'alice@files.example:/srv/ml', host_key: HOST_KEY, check: 'false', ...extra });
const create = (Name: unknown, Opts: unknown = opts()) => d.call('/VolumeDriver.Create', { Name, Opts });
const get = (Name: string) => d.call('/VolumeDriver.Get', { Name });
const stateFile = () => JSON.parse(readFileSync(join(d.stateDir, 'tsfs.json'), 'utf8')) as { volumes: { name: string; mountIds: string[] }[] };
const markerMounts = () => (existsSync(d.markerLog) ? readFileSync(d.markerLog, 'utf8').split('\n').filter((l) => l.startsWith('mount ')).length : 0);

/** After every refusal the daemon must still answer and its state must still parse. */
async function stillHealthy(): Promise<void> {
  const a = await d.call('/Plugin.Activate');
  expect(a.json).toEqual({ Implements: ['VolumeDriver'] });
  if (existsSync(join(d.stateDir, 'tsfs.json'))) expect(Array.isArray(stateFile().volumes)).toBe(true);
}

describe('handshake', () => {
  it('Plugin.Activate answers VolumeDriver with the plugin content type', async () => {
    const a = await d.call('/Plugin.Activate');
    expect(a.status).toBe(200);
    expect(a.contentType).toBe('application/vnd.docker.plugins.v1.1+json');
    expect(a.json).toEqual({ Implements: ['VolumeDriver'] });
  });
  it('Capabilities is local scope', async () => {
    expect((await d.call('/VolumeDriver.Capabilities', {})).json).toEqual({ Capabilities: { Scope: 'local' } });
  });
  it('the socket is not world-accessible', () => {
    expect(statSync(d.socket).mode & 0o007).toBe(0);
  });
  it('reads the JSON body whatever Content-Type a client sends', async () => {
    for (const ct of ['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream']) {
      const a = await d.call('/VolumeDriver.Get', { Name: 'no-such' }, { headers: { 'Content-Type': ct } });
      expect(a.json.Err).toMatch(/no such volume: no-such/);
    }
  });
  it('unknown endpoints and methods get 404 with Err', async () => {
    const a = await d.call('/VolumeDriver.Frobnicate', {});
    expect(a.status).toBe(404);
    expect(a.json.Err).toMatch(/unknown endpoint POST \/VolumeDriver.Frobnicate/);
    const g = await d.call('/VolumeDriver.List', undefined, { method: 'GET' });
    expect(g.status).toBe(404);
    expect(g.json.Err).toMatch(/unknown endpoint GET/);
  });
});

describe('volume lifecycle', () => {
  it('Get of an unknown volume is an error (dockerd asks before Create)', async () => {
    const a = await get('lifecycle');
    expect(a.status).toBe(500);
    expect(a.json.Err).toMatch(/no such volume: lifecycle/);
  });

  it('Create, then Get/List/Path describe it without secrets', async () => {
    const c = await create('lifecycle', opts({ password: SECRET, Compression: 'no' }));
    expect(c.status).toBe(200);
    expect(c.json).toEqual({});
    const g = await get('lifecycle');
    const v = g.json.Volume as { Name: string; Mountpoint: string; CreatedAt: string; Status: Record<string, unknown> };
    expect(v.Name).toBe('lifecycle');
    expect(v.Mountpoint).toBe(join(d.mountRoot, 'lifecycle'));
    expect(new Date(v.CreatedAt).toISOString()).toBe(v.CreatedAt);
    expect(v.Status).toMatchObject({ remote: 'alice@files.example:22:/srv/ml', mounts: 0, host_key: HOST_KEY, connection: 'unmounted' });
    expect(JSON.stringify(v.Status.notes)).toMatch(/Compression is ignored/);
    expect(g.text).not.toContain(SECRET);
    const l = await d.call('/VolumeDriver.List', {});
    expect((l.json.Volumes as { Name: string }[]).map((x) => x.Name)).toContain('lifecycle');
    expect(l.text).not.toContain(SECRET);
    expect((await d.call('/VolumeDriver.Path', { Name: 'lifecycle' })).json).toEqual({ Mountpoint: join(d.mountRoot, 'lifecycle') });
  });

  it('a second Create with the same options succeeds; with other options it fails naming them', async () => {
    expect((await create('lifecycle', opts({ password: SECRET, Compression: 'no' }))).status).toBe(200);
    const other = await create('lifecycle', opts({ password: 'Other-Zq9-pass', port: '2222', Compression: 'no' }));
    expect(other.status).toBe(500);
    expect(other.json.Err).toMatch(/volume lifecycle already exists with different options \(password, port differ\)/);
    expect(other.text).not.toContain('Other-Zq9-pass');
  });

  it('mounts are a set of IDs: fs mounted on the first, repeated IDs are idempotent, unmounted on the last', async () => {
    const mp = join(d.mountRoot, 'lifecycle');
    const before = markerMounts();
    const m1 = await d.call('/VolumeDriver.Mount', { Name: 'lifecycle', ID: 'id-1' });
    expect(m1.json).toEqual({ Mountpoint: mp });
    expect(statSync(mp).mode & 0o777).toBe(0o755);
    expect(existsSync(join(mp, '.tsfs-marker'))).toBe(true);
    expect((await d.call('/VolumeDriver.Mount', { Name: 'lifecycle', ID: 'id-1' })).status).toBe(200);
    expect((await d.call('/VolumeDriver.Mount', { Name: 'lifecycle', ID: 'id-2' })).status).toBe(200);
    expect(markerMounts() - before).toBe(1);
    expect(((await get('lifecycle')).json.Volume as { Status: { mounts: number; connection: string } }).Status).toMatchObject({ mounts: 2, connection: 'connected' });
    expect(stateFile().volumes.find((v) => v.name === 'lifecycle')?.mountIds.sort()).toEqual(['id-1', 'id-2']);

    const rm = await d.call('/VolumeDriver.Remove', { Name: 'lifecycle' });
    expect(rm.status).toBe(500);
    expect(rm.json.Err).toMatch(/in use by 2 container mount\(s\) \(mount IDs: id-1, id-2\)/);

    expect((await d.call('/VolumeDriver.Unmount', { Name: 'lifecycle', ID: 'id-1' })).status).toBe(200);
    expect(existsSync(join(mp, '.tsfs-marker'))).toBe(true);
    const unknown = await d.call('/VolumeDriver.Unmount', { Name: 'lifecycle', ID: 'never-mounted' });
    expect(unknown.status).toBe(200);
    expect(existsSync(join(mp, '.tsfs-marker'))).toBe(true);
    expect((await d.call('/VolumeDriver.Unmount', { Name: 'lifecycle', ID: 'id-2' })).status).toBe(200);
    expect(existsSync(join(mp, '.tsfs-marker'))).toBe(false);
    expect(stateFile().volumes.find((v) => v.name === 'lifecycle')?.mountIds).toEqual([]);
    expect(d.logLines().some((l) => l.msg === 'unmount of an unknown mount ID: nothing to do' && l.mountId === 'never-mounted')).toBe(true);
  });

  it('concurrent Mounts of one volume mount the filesystem once and record every ID', async () => {
    expect((await create('busy')).status).toBe(200);
    const before = markerMounts();
    const ids = Array.from({ length: 12 }, (_, i) => `c${i}`);
    const answers = await Promise.all(ids.map((ID) => d.call('/VolumeDriver.Mount', { Name: 'busy', ID })));
    expect(answers.map((a) => a.status)).toEqual(ids.map(() => 200));
    expect(markerMounts() - before).toBe(1);
    expect(stateFile().volumes.find((v) => v.name === 'busy')?.mountIds.sort()).toEqual([...ids].sort());
    await Promise.all(ids.map((ID) => d.call('/VolumeDriver.Unmount', { Name: 'busy', ID })));
    expect(existsSync(join(d.mountRoot, 'busy', '.tsfs-marker'))).toBe(false);
    expect((await d.call('/VolumeDriver.Remove', { Name: 'busy' })).status).toBe(200);
  });

  it('Remove deletes only the empty local mountpoint and the record', async () => {
    const r = await d.call('/VolumeDriver.Remove', { Name: 'lifecycle' });
    expect(r.status).toBe(200);
    expect(existsSync(join(d.mountRoot, 'lifecycle'))).toBe(false);
    expect((await get('lifecycle')).status).toBe(500);
    expect(stateFile().volumes.map((v) => v.name)).not.toContain('lifecycle');
  });

  it('Mount and Path of an unknown volume are errors that say to create it', async () => {
    for (const ep of ['/VolumeDriver.Mount', '/VolumeDriver.Path']) {
      const a = await d.call(ep, { Name: 'ghost', ID: 'x' });
      expect(a.status).toBe(500);
      expect(a.json.Err).toMatch(/no such volume: ghost \(create it with docker volume create -d <driver>/);
    }
  });

  it('Unmount and Remove of an unknown volume succeed (nothing is mounted, nothing to delete)', async () => {
    expect((await d.call('/VolumeDriver.Unmount', { Name: 'ghost', ID: 'x' })).json).toEqual({});
    expect((await d.call('/VolumeDriver.Remove', { Name: 'ghost' })).json).toEqual({});
    expect((await get('ghost')).status).toBe(500);
  });

  it('Mount needs an ID', async () => {
    expect((await create('needid')).status).toBe(200);
    const a = await d.call('/VolumeDriver.Mount', { Name: 'needid' });
    expect(a.json.Err).toMatch(/ID \(the Docker mount ID\) must be a non-empty string/);
    await stillHealthy();
  });
});

describe('hostile requests get a clear Err and leave the daemon and its state intact', () => {
  it.each([
    ['not JSON', '{"Name": ', /request body is not valid JSON/],
    ['an array', '[1,2]', /request body must be a JSON object/],
    ['a string', '"Name"', /request body must be a JSON object/],
    ['a number', '42', /request body must be a JSON object/],
    ['null', 'null', /request body must be a JSON object/],
  ])('body that is %s', async (_what, body, want) => {
    const a = await d.call('/VolumeDriver.Create', body, { raw: true });
    expect(a.json.Err).toMatch(want);
    await stillHealthy();
  });

  it('a 1 MB body', async () => {
    const a = await d.call('/VolumeDriver.Create', JSON.stringify({ Name: 'big', Opts: { sshcmd: 'u@h:/p', workaround: 'x'.repeat(1 << 20) } }), { raw: true });
    expect(a.status).toBe(413);
    expect(a.json.Err).toMatch(/request body larger than 64 KiB/);
    await stillHealthy();
  });

  it.each([
    ['with a slash', 'a/b', /invalid volume name "a\/b"/],
    ['of ..', '..', /invalid volume name "\.\."/],
    ['with ../', '../../etc', /invalid volume name/],
    ['with NUL', 'ab\u0000c', /invalid volume name/],
    ['of one character', 'a', /invalid volume name "a": use 2 or more/],
    ['of 10,000 characters', 'n'.repeat(10_000), /invalid volume name "n{64}\.\.\.": longer than 255/],
    ['that is a number', 12, /Name must be a string/],
    ['that is missing', undefined, /Name must be a string/],
  ])('volume name %s', async (_what, name, want) => {
    for (const ep of ['/VolumeDriver.Create', '/VolumeDriver.Get', '/VolumeDriver.Mount', '/VolumeDriver.Remove']) {
      const a = await d.call(ep, { Name: name, Opts: opts(), ID: 'x' });
      expect(a.status).toBe(500);
      expect(a.json.Err).toMatch(want);
    }
    await stillHealthy();
  });

  it.each([
    ['ssh_command', { ssh_command: 'sh -c "touch /tmp/pwned"' }, /ssh_command is refused as unsafe/],
    ['ProxyCommand', { ProxyCommand: 'nc %h %p' }, /ProxyCommand is refused as unsafe: it runs a shell command/],
    ['KnownHostsCommand', { KnownHostsCommand: '/bin/evil' }, /KnownHostsCommand is refused as unsafe/],
    ['LocalCommand', { LocalCommand: 'id' }, /LocalCommand is refused as unsafe/],
    ['sftp_server', { sftp_server: '/bin/sh' }, /sftp_server is refused as unsafe/],
    ['directport', { directport: '2049' }, /directport is refused as unsafe/],
    ['an unknown option', { frobnicate: '1' }, /unknown option "frobnicate"; valid options: sshcmd/],
    ['a huge value', { workaround: 'y'.repeat(5000) }, /too long \(more than 4096 bytes\)/],
    ['a non-string value', { port: 22 }, /option port must be a string value, got number/],
    ['a nested object', { ro: { $gt: '' } }, /option ro must be a string value, got object/],
    ['a bad port', { port: '22 -oProxyCommand=x' }, /option port: must be a whole number/],
  ])('option %s', async (_what, extra, want) => {
    const a = await create('hostile', { ...opts(), ...extra });
    expect(a.status).toBe(500);
    expect(a.json.Err).toMatch(want);
    expect((await get('hostile')).status).toBe(500);
    await stillHealthy();
  });

  it("a password_file pointing at the plugin's own state file (every volume's passwords) is refused", async () => {
    const a = await create('hostile', { ...opts(), password_file: join(d.stateDir, 'tsfs.json') });
    expect(a.json.Err).toMatch(/option password_file=.* points into the plugin's state directory/);
    await stillHealthy();
  });

  it('Opts that is not an object', async () => {
    for (const o of ['sshcmd=u@h:/p', ['sshcmd=u@h:/p'], 7]) {
      expect((await create('hostile', o)).json.Err).toMatch(/Opts must be an object/);
    }
    await stillHealthy();
  });

  it('nothing was created under the mount root by any refused request', () => {
    const names = readdirSync(d.mountRoot);
    expect(names.filter((n) => !['needid'].includes(n))).toEqual([]);
  });
});

describe('logging', () => {
  it('one line per request with endpoint, volume, mount ID, duration and outcome; no secrets', () => {
    const lines = d.logLines().filter((l) => l.msg === 'request' || l.msg === 'request failed');
    const mount = lines.find((l) => l.endpoint === '/VolumeDriver.Mount' && l.mountId === 'id-1');
    expect(mount).toMatchObject({ volume: 'lifecycle', outcome: 'ok', status: 200 });
    expect(typeof mount?.ms).toBe('number');
    const refused = lines.find((l) => l.endpoint === '/VolumeDriver.Create' && String(l.err).includes('ProxyCommand'));
    expect(refused).toMatchObject({ outcome: 'error', volume: 'hostile', code: 'options' });
    // One error type carries a code from where the failure is found to this line.
    expect(lines.find((l) => String(l.err).startsWith('no such volume'))).toMatchObject({ code: 'no-such-volume' });
    expect(lines.find((l) => String(l.err).startsWith('invalid volume name'))).toMatchObject({ code: 'bad-request' });
    expect(lines.find((l) => String(l.err).startsWith('request body is not valid JSON'))).toMatchObject({ code: 'bad-request' });
    expect(lines.find((l) => String(l.err).includes('is in use by'))).toMatchObject({ code: 'in-use' });
    expect(lines.filter((l) => l.outcome === 'error' && l.status === 500 && l.code === undefined)).toEqual([]);
    expect(d.stdout()).not.toContain(SECRET);
    expect(d.stderr()).not.toContain(SECRET);
  });
});
