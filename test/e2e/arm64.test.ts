// The arm64 plugin (`make all PLATFORM=linux/arm64`) built and run on this
// machine under qemu-user emulation (`make test-arm64`; skipped by
// `make test`, and where binfmt_misc cannot be set up): its rootfs holds
// aarch64 node and native modules, it enables, serves a volume, and a file a
// container writes arrives on the store byte for byte.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeSshdDir, startSshd, type Sshd } from '../helpers/sshd';
import { BASE_IMAGE, LABEL, REPO, cleanup, docker, dockerdLogSize, ok, pluginJson, run } from './docker';

const ENABLED = process.env.TSFS_E2E_ARM64 === '1';
const NAME = `${process.env.TSFS_E2E_PLUGIN ?? 'tsfs-e2e'}-arm`;
const foreign = process.arch === 'arm64' ? 'amd64' : 'arm64';
const PLATFORM = `linux/${foreign}`;
const PLUGIN = `${NAME}:latest-${foreign}`;
// ELF e_machine of the binaries the plugin must carry.
const MACHINE = foreign === 'arm64' ? 0xb7 : 0x3e;

/** binfmt_misc with a qemu handler, set up now if the machine allows it. */
const emulation = ENABLED && spawnSync(join(REPO, 'scripts/ensure-deps.sh'), ['qemu'], { stdio: 'inherit' }).status === 0;

let sshd: Sshd;
let work: string;
let pluginDir: string;
const vol = `${NAME}-${randomBytes(3).toString('hex')}`;

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

describe.skipIf(!emulation)(`the ${foreign} plugin under qemu-user emulation (make test-arm64)`, () => {
  beforeAll(async () => {
    await ok(join(REPO, 'scripts/ensure-deps.sh'), ['dockerd']);
    sshd = await startSshd();
    work = mkdtempSync('/tmp/tsfs-arm64-');
    pluginDir = join(work, 'plugin');
    const keyDir = join(work, 'ssh');
    const stateDir = join(work, 'state');
    mkdirSync(keyDir, { mode: 0o700 });
    mkdirSync(stateDir, { mode: 0o700 });
    copyFileSync(sshd.userKeyPath, join(keyDir, 'id_ed25519'));
    chmodSync(join(keyDir, 'id_ed25519'), 0o600);
    const r = await run('make', ['--no-print-directory', 'all', `PLATFORM=${PLATFORM}`, `PLUGIN_NAME=${NAME}`, `PLUGIN_DIR=${pluginDir}`]);
    if (r.code !== 0) throw new Error(`make all PLATFORM=${PLATFORM} failed: ${r.stderr}\n${r.stdout}`);
    await docker('plugin', 'set', PLUGIN, `sshkey.source=${keyDir}`, `state.source=${stateDir}`, 'LOG_FORMAT=json');
  }, 7_200_000);

  afterAll(async () => {
    await cleanup([vol]);
    await run('docker', ['plugin', 'disable', '-f', PLUGIN]);
    await run('docker', ['plugin', 'rm', '-f', PLUGIN]);
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 600_000);

  it.each([
    ['node', 'usr/local/bin/node'],
    ['ssh2 crypto', 'app/node_modules/ssh2/lib/protocol/crypto/build/Release/sshcrypto.node'],
    ['fuse-native', 'app/packages/fuse-native/build/Release/fuse.node'],
    ['fs-ext', 'app/node_modules/fs-ext/build/Release/fs_ext.node'],
  ])(`the rootfs's %s binary is ${foreign}`, (_what, path) => {
    expect(elfMachine(join(pluginDir, 'rootfs', path))).toBe(MACHINE);
  });

  it('enables, and a file a container writes arrives on the store intact', async () => {
    const from = dockerdLogSize();
    await ok('make', ['--no-print-directory', 'enable', `PLATFORM=${PLATFORM}`, `PLUGIN_NAME=${NAME}`]);
    // The daemon says what it runs on: node under emulation, the foreign arch.
    const id = (await docker('plugin', 'inspect', '-f', '{{.Id}}', PLUGIN)).trim();
    expect(pluginJson(from, id).filter((l) => l.msg === 'listening')).toEqual([expect.objectContaining({ arch: foreign, build: PLUGIN, serving: true })]);
    const dir = join(sshd.storeDir, vol);
    mkdirSync(dir, { mode: 0o777 });
    chmodSync(dir, 0o777);
    await docker('volume', 'create', '-d', PLUGIN, '-o', `sshcmd=root@127.0.0.1:${dir}`, '-o', `port=${sshd.port}`, vol);
    // 3 MiB of random bytes: several SFTP writes and FUSE chunks.
    const data = randomBytes(3 * 1024 * 1024);
    const src = join(work, 'in');
    mkdirSync(src);
    writeFileSync(join(src, 'blob'), data);
    await docker('run', '--rm', '--label', LABEL, '-v', `${src}:/in:ro`, '-v', `${vol}:/s`, BASE_IMAGE, 'sh', '-c', 'mkdir -p /s/out && cp /in/blob /s/out/model.h5');
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(sha(readFileSync(join(dir, 'out/model.h5')))).toBe(sha(data));
  });
});

describe.skipIf(emulation)('the foreign-architecture plugin', () => {
  it.skip(ENABLED ? 'skipped: binfmt_misc/qemu-user cannot be set up on this machine' : 'runs with make test-arm64 (TSFS_E2E_ARM64=1)', () => undefined);
});
