// The arm64 plugin built and run on this machine under qemu-user emulation
// (`make test-arm64`; skipped by `make test`, and where binfmt_misc cannot be
// set up):
//   `make all PLATFORM=linux/arm64`: its rootfs holds aarch64 node and native
//   modules, it enables, serves a volume, and a file a container writes
//   arrives on the store byte for byte;
//   `make push` of both architectures to a private registry (registry.ts):
//   the registry holds <tag>-arm64, <tag>-amd64 and <tag> (the machine's),
//   and each, installed from there as users do (`docker plugin install
//   --alias`), runs its architecture's binaries and serves a volume the same way.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeSshdDir, startSshd, type Sshd } from '../helpers/sshd';
import { BASE_IMAGE, LABEL, REPO, cleanup, docker, dockerdLogSize, ok, pluginJson, run } from './docker';
import { startRegistry, type Registry } from './registry';

const ENABLED = process.env.TSFS_E2E_ARM64 === '1';
const NAME = `${process.env.TSFS_E2E_PLUGIN ?? 'tsfs-e2e'}-arm`;
const HOST = process.arch === 'arm64' ? 'arm64' : 'amd64';
const foreign = HOST === 'arm64' ? 'amd64' : 'arm64';
const PLATFORM = `linux/${foreign}`;
const PLUGIN = `${NAME}:latest-${foreign}`;
// ELF e_machine of the binaries a plugin of each architecture must carry.
const MACHINE = { arm64: 0xb7, amd64: 0x3e } as const;
// process.arch as the daemon logs it.
const NODE_ARCH = { arm64: 'arm64', amd64: 'x64' } as const;
const DOCKER_ROOT = '/var/lib/docker';
// The binaries a rootfs must hold for its architecture, relative to it.
const BINARIES = [
  ['node', 'usr/local/bin/node'],
  ['ssh2 crypto', 'app/node_modules/ssh2/lib/protocol/crypto/build/Release/sshcrypto.node'],
  ['fuse-native', 'app/packages/fuse-native/build/Release/fuse.node'],
  ['fs-ext', 'app/node_modules/fs-ext/build/Release/fs_ext.node'],
] as const;

/** binfmt_misc with a qemu handler, set up now if the machine allows it. */
const emulation = ENABLED && spawnSync(join(REPO, 'scripts/ensure-deps.sh'), ['qemu'], { stdio: 'inherit' }).status === 0;

let sshd: Sshd;
let work: string;
let keyDir: string;
const volumes: string[] = [];
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function elfMachine(path: string): number {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(20);
    readSync(fd, b, 0, 20, 0);
    expect(b.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    return b.readUInt16LE(18);
  } finally {
    closeSync(fd);
  }
}

/** A fresh state directory for one plugin instance (the state lock allows one each). */
function stateDir(label: string): string {
  const d = join(work, `state-${label}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
}

/**
 * Create a volume of `driver` on a fresh store directory, run a container that
 * copies 3 MiB of random bytes (several SFTP writes and FUSE chunks) into it,
 * and check the file's sha256 on the store.
 */
async function writeThrough(driver: string, label: string): Promise<void> {
  const vol = `${NAME}-${label}-${randomBytes(3).toString('hex')}`;
  volumes.push(vol);
  const dir = join(sshd.storeDir, vol);
  mkdirSync(dir, { mode: 0o777 });
  chmodSync(dir, 0o777);
  await docker('volume', 'create', '-d', driver, '-o', `sshcmd=root@127.0.0.1:${dir}`, '-o', `port=${sshd.port}`, vol);
  const data = randomBytes(3 * 1024 * 1024);
  const src = join(work, `in-${label}`);
  mkdirSync(src);
  writeFileSync(join(src, 'blob'), data);
  await docker('run', '--rm', '--label', LABEL, '-v', `${src}:/in:ro`, '-v', `${vol}:/s`, BASE_IMAGE, 'sh', '-c', 'mkdir -p /s/out && cp /in/blob /s/out/model.h5');
  expect(sha(readFileSync(join(dir, 'out/model.h5')))).toBe(sha(data));
}

describe.skipIf(!emulation)(`the ${foreign} plugin under qemu-user emulation (make test-arm64)`, () => {
  beforeAll(async () => {
    await ok(join(REPO, 'scripts/ensure-deps.sh'), ['dockerd']);
    sshd = await startSshd();
    work = mkdtempSync('/tmp/tsfs-arm64-');
    keyDir = join(work, 'ssh');
    mkdirSync(keyDir, { mode: 0o700 });
    copyFileSync(sshd.userKeyPath, join(keyDir, 'id_ed25519'));
    chmodSync(join(keyDir, 'id_ed25519'), 0o600);
  }, 600_000);

  afterAll(async () => {
    await cleanup(volumes);
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 600_000);

  describe(`make all PLATFORM=${PLATFORM}`, () => {
    let pluginDir: string;
    beforeAll(async () => {
      pluginDir = join(work, 'plugin');
      const r = await run('make', ['--no-print-directory', 'all', `PLATFORM=${PLATFORM}`, `PLUGIN_NAME=${NAME}`, `PLUGIN_DIR=${pluginDir}`]);
      if (r.code !== 0) throw new Error(`make all PLATFORM=${PLATFORM} failed: ${r.stderr}\n${r.stdout}`);
      await docker('plugin', 'set', PLUGIN, `sshkey.source=${keyDir}`, `state.source=${stateDir('all')}`, 'LOG_FORMAT=json');
    }, 7_200_000);

    afterAll(async () => {
      await cleanup(volumes);
      await run('docker', ['plugin', 'disable', '-f', PLUGIN]);
      await run('docker', ['plugin', 'rm', '-f', PLUGIN]);
    }, 600_000);

    it.each(BINARIES)(`the rootfs's %s binary is ${foreign}`, (_what, path) => {
      expect(elfMachine(join(pluginDir, 'rootfs', path))).toBe(MACHINE[foreign]);
    });

    it('enables, and a file a container writes arrives on the store intact', async () => {
      const from = dockerdLogSize();
      await ok('make', ['--no-print-directory', 'enable', `PLATFORM=${PLATFORM}`, `PLUGIN_NAME=${NAME}`]);
      // The daemon says what it runs on: node under emulation, the foreign arch.
      const id = (await docker('plugin', 'inspect', '-f', '{{.Id}}', PLUGIN)).trim();
      expect(pluginJson(from, id).filter((l) => l.msg === 'listening')).toEqual([expect.objectContaining({ arch: NODE_ARCH[foreign], build: PLUGIN, serving: true })]);
      await writeThrough(PLUGIN, 'all');
    });
  });

  describe('make push: both architectures to a registry, each installed from it', () => {
    let reg: Registry;
    const TAG = '1';
    // <tag>-<arch> for each architecture, and <tag>: the machine's own.
    const tags = [[`${TAG}-arm64`, 'arm64'], [`${TAG}-amd64`, 'amd64'], [TAG, HOST]] as const;
    const repo = () => `${reg.host}/${NAME}`;
    let pushed: string;

    beforeAll(async () => {
      reg = await startRegistry();
      const r = await run('make', ['--no-print-directory', 'push', `PLUGIN_NAME=${repo()}`, `PLUGIN_TAG=${TAG}`, `PLUGIN_DIR=${join(work, 'push')}`]);
      pushed = r.stdout;
      if (r.code !== 0) throw new Error(`make push failed: ${r.stderr}\n${r.stdout}`);
      // The local plugins were only the push's vehicles: installs come from the registry.
      await run('docker', ['plugin', 'rm', '-f', `${repo()}:${TAG}`, `${repo()}:${TAG}-${foreign}`, `${repo()}:${TAG}-${HOST}`]);
    }, 7_200_000);

    afterAll(async () => {
      await cleanup(volumes);
      for (const [tag] of tags) {
        await run('docker', ['plugin', 'disable', '-f', `${NAME}-${tag}`]);
        await run('docker', ['plugin', 'rm', '-f', `${NAME}-${tag}`]);
      }
      await run('docker', ['plugin', 'rm', '-f', `${repo()}:${TAG}`, `${repo()}:${TAG}-${foreign}`, `${repo()}:${TAG}-${HOST}`]);
      // The rootfs and build images `make push` tagged under the registry's name.
      await run('docker', ['image', 'rm', `${repo()}-rootfs:${TAG}`, `${repo()}-build:${TAG}`, `${repo()}-rootfs:${TAG}-${foreign}`, `${repo()}-build:${TAG}-${foreign}`]);
      await reg?.stop();
    }, 600_000);

    it('pushes <tag>-arm64, <tag>-amd64 and <tag>; <tag> is the machine\'s architecture', async () => {
      for (const [tag] of tags) expect(pushed).toContain(`### push plugin ${repo()}:${tag}\n`);
      const accept = 'application/vnd.docker.distribution.manifest.v2+json';
      type Manifest = { config: { mediaType: string }; layers: { digest: string }[] };
      const manifest = async (tag: string) => (await reg.getJson(`/v2/${NAME}/manifests/${tag}`, accept)) as Manifest;
      const [arm, amd, plain] = await Promise.all(tags.map(([tag]) => manifest(tag)));
      for (const m of [arm, amd, plain]) expect(m!.config.mediaType).toBe('application/vnd.docker.plugin.v1+json');
      // Plugins have no multi-architecture manifests: <tag> is the same rootfs as <tag>-<host arch>.
      expect(plain!.layers).toEqual((HOST === 'amd64' ? amd : arm)!.layers);
      expect(arm!.layers).not.toEqual(amd!.layers);
    });

    it.each(tags)('docker plugin install of %s from the registry: %s binaries, enabled, a container\'s file arrives intact', async (tag, arch) => {
      const alias = `${NAME}-${tag}`;
      const from = dockerdLogSize();
      await docker('plugin', 'install', '--grant-all-permissions', '--alias', alias, `${repo()}:${tag}`,
        `sshkey.source=${keyDir}`, `state.source=${stateDir(tag)}`, 'LOG_FORMAT=json');
      const id = (await docker('plugin', 'inspect', '-f', '{{.Id}}', `${alias}:latest`)).trim();
      for (const [, path] of BINARIES) expect(elfMachine(join(DOCKER_ROOT, 'plugins', id, 'rootfs', path)), path).toBe(MACHINE[arch]);
      // The machine's build is stamped <tag>: <tag>-<host arch> is the same rootfs.
      const build = `${repo()}:${arch === HOST ? TAG : tag}`;
      expect(pluginJson(from, id).filter((l) => l.msg === 'listening')).toEqual([expect.objectContaining({ arch: NODE_ARCH[arch], build, serving: true })]);
      await writeThrough(`${alias}:latest`, tag);
      // One instance at a time: the next install takes the same rootfs (<tag> is <tag>-<host arch>).
      await cleanup(volumes);
      await docker('plugin', 'disable', '-f', alias);
      await docker('plugin', 'rm', '-f', alias);
    });
  });
});

describe.skipIf(emulation)('the foreign-architecture plugin', () => {
  it.skip(ENABLED ? 'skipped: binfmt_misc/qemu-user cannot be set up on this machine' : 'runs with make test-arm64 (TSFS_E2E_ARM64=1)', () => undefined);
});
