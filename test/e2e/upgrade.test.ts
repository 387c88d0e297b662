// Install and upgrade as an operator does, end to end (`make test-upgrade`;
// skipped by `make test`: two plugin builds and pushes take minutes):
//   a private registry over TLS on a loopback port (registry.ts);
//   `make push` of version 1; `docker plugin install --alias` with settings;
//   volumes, one held by a running container;
//   a rebuild of the installed tag refused while the container runs (safe rebuilds);
//   `make push` of version 2 and the documented upgrade: disable -f, upgrade, enable;
//   every volume and mount ID still there, new containers mount, and what the
//   running container saw;
//   `make push` of version 3 and the documented replace (disable -f, rm -f,
//   install with the settings again), checked the same way;
//   the no-registry path: `make all FORCE=1` over the installed plugin carries
//   its settings over, and `make enable` serves the same volumes.
// Every result is checked on the test sshd's directory and the state file.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeSshdDir, startSshd, type Sshd } from '../helpers/sshd';
import { BASE_IMAGE, LABEL, REPO, cleanup, docker, dockerdLogSize, ok, pluginJson, run } from './docker';
import { startRegistry, type Registry } from './registry';

const ENABLED = process.env.TSFS_E2E_UPGRADE === '1';
const NAME = `${process.env.TSFS_E2E_PLUGIN ?? 'tsfs-e2e'}-up`;
const ALIAS = `${NAME}:latest`;
const HOST_ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const prefix = `${NAME}-${randomBytes(3).toString('hex')}`;
const HOLDER = `${prefix}-holder`;
// For the cases that build and push (make): minutes, more on a loaded machine.
const BUILD_TIMEOUT = 3_600_000;

let reg: Registry;
let sshd: Sshd;
let work: string;
let keyDir: string;
let stateDir: string;
/** The plugin ID before the documented replace. */
let replacedId: string;
const volumes = [`${prefix}-held`, `${prefix}-idle`];
const [HELD, IDLE] = volumes as [string, string];
const remoteDir = (v: string) => join(sshd.storeDir, v);

const ref = (tag: string) => `${reg.host}/${NAME}:${tag}`;
type StateFile = { volumes: { name: string; mountIds: string[] }[] };
const state = (): StateFile => JSON.parse(readFileSync(join(stateDir, 'tsfs.json'), 'utf8')) as StateFile;
const mountIds = () => Object.fromEntries(state().volumes.map((v) => [v.name, [...v.mountIds].sort()]));
const pluginId = async () => (await docker('plugin', 'inspect', '-f', '{{.Id}}', ALIAS)).trim();

/** The plugin's 'listening' log lines since `from` (dockerdLogSize()). */
const listening = async (from: number) => pluginJson(from, await pluginId()).filter((l) => l.msg === 'listening');
const logSize = dockerdLogSize;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** make, capturing its output (what a user sees). */
const make = (args: string[]) => run('make', ['--no-print-directory', ...args]);

/** Build version <tag> and push it (only this machine's architecture: the arm64 build is test-arm64's). */
async function pushVersion(tag: string): Promise<void> {
  const r = await make(['push', `PLUGIN_NAME=${reg.host}/${NAME}`, `PLUGIN_TAG=${tag}`, `PUSH_PLATFORMS=linux/${HOST_ARCH}`, `PLUGIN_DIR=${join(work, 'plugin')}`]);
  if (r.code !== 0) throw new Error(`make push failed: ${r.stderr}\n${r.stdout}`);
  // The local plugins were only the push's vehicles: installs must come from the registry.
  await run('docker', ['plugin', 'rm', '-f', ref(tag), ref(`${tag}-${HOST_ARCH}`)]);
}

describe.skipIf(!ENABLED)('install and upgrade from a registry (make test-upgrade)', () => {
  beforeAll(async () => {
    await ok(join(REPO, 'scripts/ensure-deps.sh'), ['dockerd', 'base']);
    reg = await startRegistry();
    sshd = await startSshd();
    work = mkdtempSync('/tmp/tsfs-upgrade-');
    keyDir = join(work, 'ssh');
    stateDir = join(work, 'state');
    mkdirSync(keyDir, { mode: 0o700 });
    mkdirSync(stateDir, { mode: 0o700 });
    copyFileSync(sshd.userKeyPath, join(keyDir, 'id_ed25519'));
    chmodSync(join(keyDir, 'id_ed25519'), 0o600);
    for (const v of volumes) {
      mkdirSync(remoteDir(v), { mode: 0o777 });
      chmodSync(remoteDir(v), 0o777);
    }
    await pushVersion('1');
  }, 3_600_000);

  afterAll(async () => {
    await run('docker', ['rm', '-f', HOLDER]);
    await cleanup(volumes);
    await run('docker', ['plugin', 'disable', '-f', ALIAS]);
    await run('docker', ['plugin', 'rm', '-f', ALIAS]);
    const versions = ['1', '2', '3'];
    await run('docker', ['image', 'rm', ...versions.flatMap((v) => [`${reg.host}/${NAME}-rootfs:${v}`, `${reg.host}/${NAME}-build:${v}`]), `${NAME}-rootfs:latest`, `${NAME}-build:latest`]);
    await reg?.stop();
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 600_000);

  it('installs version 1 from the registry with its settings, and serves volumes', async () => {
    await docker('plugin', 'install', '--grant-all-permissions', '--alias', NAME, ref('1'),
      `sshkey.source=${keyDir}`, `state.source=${stateDir}`, 'LOG_LEVEL=debug', 'LOG_FORMAT=json');
    expect((await docker('plugin', 'inspect', '-f', '{{.Enabled}} {{.PluginReference}}', ALIAS)).trim()).toBe(`true ${ref('1')}`);
    for (const v of volumes) {
      await docker('volume', 'create', '-d', ALIAS, '-o', `sshcmd=root@127.0.0.1:${remoteDir(v)}`, '-o', `port=${sshd.port}`, v);
    }
    await docker('run', '--rm', '--label', LABEL, '-v', `${IDLE}:/s`, BASE_IMAGE, 'sh', '-c', 'echo idle-data > /s/idle.txt');
    expect(readFileSync(join(remoteDir(IDLE), 'idle.txt'), 'utf8')).toBe('idle-data\n');
    // The running container: holds its volume through the upgrade.
    await docker('run', '-d', '--name', HOLDER, '--label', LABEL, '-v', `${HELD}:/s`, BASE_IMAGE, 'sh', '-c', 'echo before > /s/held.txt && exec sleep 3600');
    for (let i = 0; i < 100 && !readFileSync(join(remoteDir(HELD), 'held.txt'), { flag: 'a+' }).length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(readFileSync(join(remoteDir(HELD), 'held.txt'), 'utf8')).toBe('before\n');
    expect(mountIds()[HELD]).toHaveLength(1);
    expect(mountIds()[IDLE]).toEqual([]);
  });

  it('a rebuild of the installed tag stops before building: it names the container and volume that would break', async () => {
    const id = await pluginId();
    const r = await make(['all', `PLUGIN_NAME=${NAME}`, `PLUGIN_DIR=${join(work, 'plugin')}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`error: ${ALIAS} is enabled and running containers use its volumes:\n  ${HOLDER} (${HELD})`);
    expect(r.stderr).toContain('FORCE=1');
    expect(r.stdout).not.toContain('docker build');
    expect(await pluginId()).toBe(id);
    expect((await docker('exec', HOLDER, 'cat', '/s/held.txt')).trim()).toBe('before');
  });

  it('upgrades to version 2 with disable -f, upgrade, enable: volumes and mount IDs survive', async () => {
    await pushVersion('2');
    const before = mountIds();
    // Not while enabled: Docker refuses, and says why.
    const refused = await run('docker', ['plugin', 'upgrade', '--grant-all-permissions', ALIAS, ref('2')]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('plugin must be disabled before upgrading');
    const from = logSize();
    await docker('plugin', 'disable', '-f', ALIAS);
    // --skip-remote-check: the new reference's tag differs from the installed one's (Docker would ask).
    await docker('plugin', 'upgrade', '--grant-all-permissions', '--skip-remote-check', ALIAS, ref('2'));
    // dockerd keeps the settings it shows but mounts config.json's default
    // sources after an upgrade: set them again (docs/deploy.md: Upgrading).
    await docker('plugin', 'set', ALIAS, `state.source=${stateDir}`, `sshkey.source=${keyDir}`);
    await docker('plugin', 'enable', ALIAS);
    expect((await docker('plugin', 'inspect', '-f', '{{.Enabled}} {{.PluginReference}}', ALIAS)).trim()).toBe(`true ${ref('2')}`);
    // The new build runs, with the settings given at install.
    expect(await listening(from)).toEqual([expect.objectContaining({ build: ref('2'), volumes: 2, serving: true })]);
    expect((await docker('plugin', 'inspect', '-f', '{{range .Settings.Mounts}}{{.Name}}={{.Source}} {{end}}{{range .Settings.Env}}{{.}} {{end}}', ALIAS)).trim())
      .toBe(`state=${stateDir} sshkey=${keyDir} LOG_LEVEL=debug LOG_FORMAT=json DEBUG=`);
    expect(mountIds()).toEqual(before);
    const listed = (await docker('volume', 'ls', '-q', '--filter', `driver=${ALIAS}`)).split('\n').filter(Boolean).sort();
    expect(listed).toEqual([...volumes].sort());
  }, BUILD_TIMEOUT);

  it('new containers mount every volume after the upgrade', async () => {
    expect(await docker('run', '--rm', '--label', LABEL, '-v', `${IDLE}:/s`, BASE_IMAGE, 'cat', '/s/idle.txt')).toBe('idle-data\n');
    await docker('run', '--rm', '--label', LABEL, '-v', `${HELD}:/s`, BASE_IMAGE, 'sh', '-c', 'echo after > /s/new.txt');
    expect(readFileSync(join(remoteDir(HELD), 'new.txt'), 'utf8')).toBe('after\n');
  });

  it('the running container saw its mount die (ENOTCONN) and works again once restarted', async () => {
    await holderSeesEnotconnUntilRestarted();
    // Restarting released the old mount ID and took a new one: still one holder.
    expect(mountIds()[HELD]).toHaveLength(1);
  });

  it('replaces the plugin as docs/deploy.md says when upgrade fails (disable -f, rm -f, install): volumes and mount IDs survive', async () => {
    await pushVersion('3');
    const before = mountIds();
    expect(before[HELD]).toHaveLength(1);
    replacedId = await pluginId();
    const from = logSize();
    // Exactly the documented commands (docs/deploy.md: Upgrading, From a registry).
    await ok('sh', ['-c', `docker plugin disable -f ${NAME} && docker plugin rm -f ${NAME}`]);
    await docker('plugin', 'install', '--grant-all-permissions', '--alias', NAME, ref(`3-${HOST_ARCH}`),
      `state.source=${stateDir}`, `sshkey.source=${keyDir}`, 'LOG_LEVEL=debug', 'LOG_FORMAT=json');
    // A new plugin (new ID), enabled by install, with the settings given on the command line.
    expect(await pluginId()).not.toBe(replacedId);
    expect((await docker('plugin', 'inspect', '-f', '{{.Enabled}} {{.PluginReference}}', ALIAS)).trim()).toBe(`true ${ref(`3-${HOST_ARCH}`)}`);
    // Stamped <tag>: make push pushes one build of the machine's architecture as <tag> and <tag>-<arch>.
    expect(await listening(from)).toEqual([expect.objectContaining({ build: ref('3'), volumes: 2, serving: true })]);
    // Every volume listed again, every mount ID kept (the holder's too).
    const listed = (await docker('volume', 'ls', '-q', '--filter', `driver=${ALIAS}`)).split('\n').filter(Boolean).sort();
    expect(listed).toEqual([...volumes].sort());
    expect(mountIds()).toEqual(before);
    // New containers mount both volumes and write files that reach the store intact.
    const data = randomBytes(2 * 1024 * 1024);
    const src = join(work, 'in');
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'blob'), data);
    for (const v of volumes) {
      await docker('run', '--rm', '--label', LABEL, '-v', `${src}:/in:ro`, '-v', `${v}:/s`, BASE_IMAGE, 'sh', '-c', 'mkdir -p /s/replaced && cp /in/blob /s/replaced/model.h5');
      expect(sha256(readFileSync(join(remoteDir(v), 'replaced/model.h5')))).toBe(sha256(data));
    }
    expect(await docker('run', '--rm', '--label', LABEL, '-v', `${IDLE}:/s`, BASE_IMAGE, 'cat', '/s/idle.txt')).toBe('idle-data\n');
  }, BUILD_TIMEOUT);

  it('after the replace, the running container sees ENOTCONN until restarted, then its volume again', async () => {
    await holderSeesEnotconnUntilRestarted();
    expect(mountIds()[HELD]).toHaveLength(1);
    // On the host the volume is under the new plugin's ID
    // (docs/examples/batch-user-data.sh links <root>/plugins/<id>/propagated-mount/<volume>):
    // a link made to the old one must be made again (docs/deploy.md).
    expect((await docker('volume', 'inspect', '-f', '{{.Mountpoint}}', HELD)).trim()).toBe(`/mnt/volumes/${HELD}`);
    const hostPath = (id: string) => `/var/lib/docker/plugins/${id}/propagated-mount/${HELD}`;
    expect(readFileSync(join(hostPath(await pluginId()), 'held.txt'), 'utf8')).toBe('before\n');
    expect(existsSync(hostPath(replacedId))).toBe(false);
  });

  it('without a registry: make all FORCE=1 replaces the installed plugin, carrying its settings over', async () => {
    const from = logSize();
    const r = await make(['all', `PLUGIN_NAME=${NAME}`, `PLUGIN_DIR=${join(work, 'plugin')}`, 'FORCE=1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`### FORCE=1: replacing ${ALIAS} although running containers use its volumes`);
    expect(r.stdout).toContain(`### carried over the replaced plugin's settings: state.source=${stateDir} sshkey.source=${keyDir} LOG_LEVEL=debug LOG_FORMAT=json`);
    expect(r.stdout).toContain(`### ${ALIAS} was enabled: the new one is created disabled`);
    await ok('make', ['--no-print-directory', 'enable', `PLUGIN_NAME=${NAME}`]);
    expect(await listening(from)).toEqual([expect.objectContaining({ build: ALIAS, volumes: 2, serving: true })]);
    // The holder's mount ID is restored, and new containers mount.
    expect(mountIds()[HELD]).toHaveLength(1);
    expect(await docker('run', '--rm', '--label', LABEL, '-v', `${HELD}:/s`, BASE_IMAGE, 'cat', '/s/new.txt')).toBe('after\n');
    await docker('rm', '-f', HOLDER);
    expect(mountIds()[HELD]).toEqual([]);
  }, BUILD_TIMEOUT);
});

// `make test` lists this file as skipped; say how to run it.
describe.skipIf(ENABLED)('install and upgrade from a registry', () => {
  it.skip('runs with make test-upgrade (TSFS_E2E_UPGRADE=1)', () => undefined);
});

/** The running container's mount died with the old plugin: ENOTCONN until `docker restart`, then its data again. */
async function holderSeesEnotconnUntilRestarted(): Promise<void> {
  const seen = await run('docker', ['exec', HOLDER, 'cat', '/s/held.txt']);
  expect(seen.code).not.toBe(0);
  expect(seen.stderr).toContain('Transport endpoint is not connected');
  await docker('restart', '-t', '1', HOLDER);
  expect((await docker('exec', HOLDER, 'cat', '/s/held.txt')).trim()).toBe('before');
}
