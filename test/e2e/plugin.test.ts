// End to end through a real Docker Engine: the plugin is built with the
// Makefile (`make all enable`, as a user would), volumes are created with
// `docker volume create`, containers read and write them, and every result
// is checked on the test sshd's own directory (the central store).
// Prerequisites are installed/started by scripts/ensure-deps.sh (run here too,
// so `npx vitest run test/e2e` works on its own).
import { randomBytes, createHash } from 'node:crypto';
import { appendFileSync, chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeSshdDir, startSshd, type Sshd } from '../helpers/sshd';
import { until } from '../helpers/until';
import { BASE_IMAGE, DOCKERD_LOG, LABEL, REPO, cleanup, docker, dockerRun, make, ok, pluginLog, run, type Run } from './docker';

const job = createRequire(join(REPO, 'package.json'))('./test/e2e/array-job.cjs') as {
  expected(index: number): Buffer;
  modelPath(root: string, index: number): string;
};

// New files get their creator as owner only where the FUSE binding reports
// the caller (fuse.callerContext(), fuse_get_context): until packages/fuse-native
// has it, the non-root tests below cannot pass and are skipped.
const CALLER_CONTEXT = typeof (createRequire(join(REPO, 'package.json'))('fuse-native') as { prototype: Record<string, unknown> }).prototype.callerContext === 'function';

// TSFS_E2E_PLUGIN: a name of one's own where two checkouts test on one dockerd.
const PLUGIN_NAME = process.env.TSFS_E2E_PLUGIN ?? 'tsfs-e2e';
const PLUGIN = `${PLUGIN_NAME}:latest`;
const DATA_IMAGE = 'tsfs-e2e-data:latest';
const TEST_USER = 'tsfs-test';
const PASSWORD = `pw-${randomBytes(12).toString('base64url')}`;
const prefix = `tsfs-e2e-${randomBytes(3).toString('hex')}`;

let sshd: Sshd;
let work: string;
let keyDir: string;
let stateDir: string;
let createdUser = false;
const volumes = new Set<string>();

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A fresh directory in the store that any remote user may write. */
function remote(sub: string): string {
  const dir = join(sshd.storeDir, sub);
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o777);
  return dir;
}
const sshcmd = (user: string, sub: string) => `${user}@127.0.0.1:${remote(sub)}`;

/** `docker volume create -d tsfs-e2e:latest -o k=v ... name`; a null value is a bare `-o k`. */
function createVolume(name: string, opts: Record<string, string | null>): Promise<Run> {
  const args = ['volume', 'create', '-d', PLUGIN];
  for (const [k, v] of Object.entries(opts)) args.push('-o', v === null ? k : `${k}=${v}`);
  volumes.add(name);
  return run('docker', [...args, name]);
}
async function mustCreate(what: string, opts: Record<string, string | null>): Promise<string> {
  const name = `${prefix}-${what}`;
  const r = await createVolume(name, { port: String(sshd.port), ...opts });
  if (r.code !== 0) throw new Error(`docker volume create ${what} failed: ${r.stderr}\n--- plugin log ---\n${pluginLog()}`);
  return name;
}
async function mustFail(what: string, opts: Record<string, string | null>): Promise<string> {
  const r = await createVolume(`${prefix}-${what}`, { port: String(sshd.port), ...opts });
  expect(r.code, `docker volume create ${what} should fail`).not.toBe(0);
  return r.stderr;
}

/** vieux's check: write in one container, read in another. */
async function writeThenRead(vol: string, user: string[] = []): Promise<void> {
  await dockerRun([...user, '-v', `${vol}:/write`], ['sh', '-c', 'echo hello > /write/world']);
  await dockerRun([...user, '-v', `${vol}:/read`], ['grep', '-Fxq', 'hello', '/read/world']);
}

async function ensureTestUser(): Promise<void> {
  if ((await run('id', ['-u', TEST_USER])).code !== 0) {
    await ok('useradd', ['-M', '-d', '/nonexistent', '-s', '/bin/sh', TEST_USER]);
    createdUser = true;
  }
  await ok('chpasswd', [], { input: `${TEST_USER}:${PASSWORD}\n` });
}

beforeAll(async () => {
  await ok(join(REPO, 'scripts/ensure-deps.sh'), ['dockerd', 'base']);
  // tsfs offers the default key (sshkey.source) along with a password, and
  // this sshd's authorized_keys is shared by all users: make the password
  // user password-only so the password tests prove what they say.
  sshd = await startSshd({ extraConfig: `Match User ${TEST_USER}\n  AuthenticationMethods password` });
  work = mkdtempSync('/tmp/tsfs-e2e-');
  keyDir = join(work, 'ssh');
  stateDir = join(work, 'state');
  mkdirSync(keyDir, { mode: 0o700 });
  mkdirSync(stateDir, { mode: 0o700 });
  // The default key (no auth option), a second accepted key for -o
  // IdentityFile, a key the server refuses, and a password file.
  copyFileSync(sshd.userKeyPath, join(keyDir, 'id_ed25519'));
  await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tsfs-e2e-deploy', '-f', join(keyDir, 'deploy_key')]);
  appendFileSync(join(sshd.dir, 'authorized_keys'), readFileSync(join(keyDir, 'deploy_key.pub')));
  copyFileSync(sshd.wrongKeyPath, join(keyDir, 'wrong_key'));
  writeFileSync(join(keyDir, 'pw'), `${PASSWORD}\n`, { mode: 0o600 });
  for (const f of ['id_ed25519', 'deploy_key', 'wrong_key']) chmodSync(join(keyDir, f), 0o600);
  await ensureTestUser();

  await make(['all'], { PLUGIN_NAME, PLUGIN_DIR: join(work, 'plugin') });
  rmSync(join(work, 'plugin'), { recursive: true, force: true }); // dockerd has its own copy now
  await docker('plugin', 'set', PLUGIN, `sshkey.source=${keyDir}`, `state.source=${stateDir}`);
  await make(['enable'], { PLUGIN_NAME });

  // An image with files in /data owned by another uid: Docker copies them into
  // an empty named volume at first mount, chown included.
  const img = join(work, 'img');
  mkdirSync(img);
  writeFileSync(
    join(img, 'Dockerfile'),
    `FROM ${BASE_IMAGE}\nRUN mkdir -p /data/sub && echo 'from the image' > /data/seed.txt && echo nested > /data/sub/n.txt && chown -R 1234:1234 /data\n`,
  );
  await ok('docker', ['build', '-q', '-t', DATA_IMAGE, img], { env: { DOCKER_BUILDKIT: '0' } });
}, 1_800_000);

afterAll(async () => {
  await cleanup(volumes);
  await run('docker', ['plugin', 'disable', '-f', PLUGIN]);
  await run('docker', ['plugin', 'rm', '-f', PLUGIN]);
  await run('docker', ['image', 'rm', DATA_IMAGE, `${PLUGIN_NAME}-rootfs:latest`, `${PLUGIN_NAME}-build:latest`]);
  if (createdUser) await run('userdel', [TEST_USER]);
  else await run('usermod', ['-L', TEST_USER]);
  if (sshd) {
    await sshd.stop();
    removeSshdDir(sshd);
  }
  if (work) rmSync(work, { recursive: true, force: true });
}, 300_000);

describe('authentication', () => {
  it('uses the key in the sshkey.source directory when no auth option is given', async () => {
    const vol = await mustCreate('key', { sshcmd: sshcmd('root', 'key') });
    await writeThenRead(vol);
    expect(readFileSync(join(sshd.storeDir, 'key/world'), 'utf8')).toBe('hello\n');
  });

  it('uses -o IdentityFile=/root/.ssh/<file>', async () => {
    const vol = await mustCreate('identityfile', { sshcmd: sshcmd('root', 'identityfile'), IdentityFile: '/root/.ssh/deploy_key' });
    await writeThenRead(vol);
    expect(readFileSync(join(sshd.storeDir, 'identityfile/world'), 'utf8')).toBe('hello\n');
  });

  it('refuses a key the server does not accept, saying so', async () => {
    const err = await mustFail('wrongkey', { sshcmd: sshcmd('root', 'wrongkey'), IdentityFile: '/root/.ssh/wrong_key' });
    expect(err).toMatch(/auth|denied|key/i);
    expect(err).not.toContain('PRIVATE KEY');
  });

  it('uses -o password=, and the files are the remote user\'s', async () => {
    const vol = await mustCreate('password', { sshcmd: sshcmd(TEST_USER, 'password'), password: PASSWORD });
    await writeThenRead(vol);
    const uid = Number((await ok('id', ['-u', TEST_USER])).trim());
    expect(statSync(join(sshd.storeDir, 'password/world')).uid).toBe(uid);
  });

  it('uses -o password_file=/root/.ssh/<file>', async () => {
    const vol = await mustCreate('pwfile', { sshcmd: sshcmd(TEST_USER, 'pwfile'), password_file: '/root/.ssh/pw' });
    await writeThenRead(vol);
    expect(readFileSync(join(sshd.storeDir, 'pwfile/world'), 'utf8')).toBe('hello\n');
  });

  it('refuses a wrong password without echoing it', async () => {
    const wrong = `wrong-${randomBytes(6).toString('hex')}`;
    const err = await mustFail('wrongpw', { sshcmd: sshcmd(TEST_USER, 'wrongpw'), password: wrong });
    expect(err).toMatch(/auth|password|denied/i);
    expect(err).not.toContain(wrong);
  });
});

describe('containers sharing a volume', () => {
  it('two running containers see each other\'s files', async () => {
    const vol = await mustCreate('shared', { sshcmd: sshcmd('root', 'shared') });
    const start = () => docker('run', '-d', '--label', LABEL, '-v', `${vol}:/v`, BASE_IMAGE, 'sleep', '600').then((s) => s.trim());
    const [a, b] = await Promise.all([start(), start()]);
    await docker('exec', a, 'sh', '-c', 'echo from-a > /v/a.txt');
    expect(await docker('exec', b, 'cat', '/v/a.txt')).toBe('from-a\n');
    await docker('exec', b, 'sh', '-c', 'echo from-b > /v/b.txt');
    expect(await docker('exec', a, 'cat', '/v/b.txt')).toBe('from-b\n');
    expect(readFileSync(join(sshd.storeDir, 'shared/a.txt'), 'utf8')).toBe('from-a\n');
    expect(readFileSync(join(sshd.storeDir, 'shared/b.txt'), 'utf8')).toBe('from-b\n');
    // While containers hold it, the mount also shows on the host under the
    // plugin's propagated-mount directory: docs/examples/batch-user-data.sh relies on it.
    const mountpoint = (await docker('volume', 'inspect', '-f', '{{.Mountpoint}}', vol)).trim();
    expect(mountpoint).toBe(`/mnt/volumes/${vol}`);
    const root = (await docker('info', '-f', '{{.DockerRootDir}}')).trim();
    const id = (await docker('plugin', 'inspect', '-f', '{{.Id}}', PLUGIN)).trim();
    const hostPath = join(root, 'plugins', id, 'propagated-mount', vol);
    expect(await readFile(join(hostPath, 'a.txt'), 'utf8')).toBe('from-a\n');
    // ... and a plain bind mount of a symlink to it (AWS Batch's host volume) works.
    symlinkSync(hostPath, join(work, 'batch-link'));
    expect(await dockerRun(['-v', `${join(work, 'batch-link')}:/storage`], ['cat', '/storage/b.txt'])).toBe('from-b\n');
    // Status counters (docker volume inspect) move by what a container writes.
    const counters = async () => JSON.parse(await docker('volume', 'inspect', '-f', '{{json .Status}}', vol)) as { bytes_written: number; operations_by_type: Record<string, number>; cipher: string; rtt_ms?: number };
    const before = await counters();
    expect(before.bytes_written).toBeGreaterThanOrEqual('from-a\n'.length + 'from-b\n'.length);
    expect(before.cipher).toBe('aes128-gcm@openssh.com');
    await docker('exec', a, 'sh', '-c', 'head -c 100000 /dev/zero > /v/zeros.bin');
    const after = await counters();
    expect(after.bytes_written - before.bytes_written).toBe(100_000);
    expect(after.operations_by_type.create - (before.operations_by_type.create ?? 0)).toBe(1);
    await docker('rm', '-f', a, b);
  });

  it('a container running as nobody writes and reads', async () => {
    const vol = await mustCreate('nobody', { sshcmd: sshcmd('root', 'nobody') });
    expect(await dockerRun(['-u', 'nobody', '-v', `${vol}:/v`], ['sh', '-c', 'echo by-nobody > /v/n.txt && cat /v/n.txt'])).toBe('by-nobody\n');
    expect(readFileSync(join(sshd.storeDir, 'nobody/n.txt'), 'utf8')).toBe('by-nobody\n');
  });

  it('an empty volume mounted over an image directory gets the image\'s files', async () => {
    const vol = await mustCreate('populate', { sshcmd: sshcmd('root', 'populate') });
    expect(await dockerRun(['-v', `${vol}:/data`], ['cat', '/data/seed.txt', '/data/sub/n.txt'], DATA_IMAGE)).toBe('from the image\nnested\n');
    expect(readFileSync(join(sshd.storeDir, 'populate/seed.txt'), 'utf8')).toBe('from the image\n');
    expect(readFileSync(join(sshd.storeDir, 'populate/sub/n.txt'), 'utf8')).toBe('nested\n');
  });

  it('runs the array job: 8 containers at once, each saving /storage/<index>/model/model.h5', async () => {
    const vol = await mustCreate('models', { sshcmd: sshcmd('root', 'models') });
    const indices = [0, 1, 2, 3, 4, 5, 6, 7];
    const outputs = await Promise.all(
      indices.map((i) =>
        dockerRun(['-e', `AWS_BATCH_JOB_ARRAY_INDEX=${i}`, '-v', `${vol}:/storage`, '-v', `${join(REPO, 'test/e2e')}:/job:ro`], ['node', '/job/array-job.cjs']),
      ),
    );
    for (const [i, out] of outputs.entries()) expect(JSON.parse(out)).toMatchObject({ index: i, ok: true });
    for (const i of indices) {
      const onStore = readFileSync(job.modelPath(join(sshd.storeDir, 'models'), i));
      const want = job.expected(i);
      expect(onStore.length).toBe(want.length);
      expect(sha256(onStore)).toBe(sha256(want));
    }
    // The daemon is PID 1 in the plugin: whatever it spawned for 8 mounts and
    // unmounts (vieux leaked two zombies per mount) must have been reaped.
    expect(await zombiesOfPlugin()).toEqual([]);
  });
});

describe('non-root containers', () => {
  // HDF5 reopens its file r+; a container user must own what it creates.
  it.skipIf(!CALLER_CONTEXT)('the array job as -u 1000:1000, in a 0777 directory and in one owned by 1000, leaves the exact model.h5 owned by 1000', async () => {
    const cases: [string, number][] = [
      ['nonroot-0777', 3],
      ['nonroot-owned', 5],
    ];
    remote('nonroot-0777');
    const owned = remote('nonroot-owned');
    chownSync(owned, 1000, 1000);
    chmodSync(owned, 0o755);
    for (const [sub, index] of cases) {
      const vol = await mustCreate(sub, { sshcmd: sshcmd('root', sub) });
      const out = await dockerRun(
        ['-u', '1000:1000', '-e', `AWS_BATCH_JOB_ARRAY_INDEX=${index}`, '-v', `${vol}:/storage`, '-v', `${join(REPO, 'test/e2e')}:/job:ro`],
        ['node', '/job/array-job.cjs'],
      );
      expect(JSON.parse(out)).toMatchObject({ index, ok: true });
      const file = job.modelPath(join(sshd.storeDir, sub), index);
      expect(sha256(readFileSync(file))).toBe(sha256(job.expected(index)));
      const st = statSync(file);
      expect({ sub, uid: st.uid, gid: st.gid }).toEqual({ sub, uid: 1000, gid: 1000 });
      // A second container of the same user appends to it: the file is its own.
      expect(await dockerRun(['-u', '1000:1000', '-v', `${vol}:/storage`], ['sh', '-c', `echo a > /storage/f && echo b >> /storage/f && cat /storage/f`])).toBe('a\nb\n');
    }
  });

  // The second symptom: a chmod made by one container must be what
  // the next container's permission check sees at once, not seconds later.
  it('a directory made 0777 by root in one container takes a file from -u 1000:1000 in the next one at once', async () => {
    const vol = await mustCreate('chmod-seen', { sshcmd: sshcmd('root', 'chmod-seen') });
    for (let i = 0; i < 3; i++) {
      await dockerRun(['-v', `${vol}:/s`], ['sh', '-c', `mkdir /s/d${i} && chmod 777 /s/d${i}`]);
      expect(await dockerRun(['-u', '1000:1000', '-v', `${vol}:/s`], ['sh', '-c', `echo a > /s/d${i}/u && cat /s/d${i}/u`])).toBe('a\n');
      expect(readFileSync(join(sshd.storeDir, 'chmod-seen', `d${i}`, 'u'), 'utf8')).toBe('a\n');
      expect(statSync(join(sshd.storeDir, 'chmod-seen', `d${i}`)).mode & 0o777).toBe(0o777);
    }
  });
});

/** Zombie children of the plugin's PID 1 (found on the host through its containerd shim's -id). */
async function zombiesOfPlugin(): Promise<string[]> {
  const id = (await docker('plugin', 'inspect', '-f', '{{.Id}}', PLUGIN)).trim();
  const stat = (pid: string) => {
    try {
      // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
      const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [state, ppid] = text.slice(text.lastIndexOf(')') + 2).split(' ');
      return { comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')), state, ppid };
    } catch {
      return undefined;
    }
  };
  const pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  const cmdline = (pid: string) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      return [];
    }
  };
  // By command line, not comm: Node 24 names its main thread "MainThread".
  const daemon = pids.find((pid) => {
    const s = stat(pid);
    if (!s || !cmdline(pid).includes('/app/dist/main.js')) return false;
    return cmdline(s.ppid).includes(id);
  });
  expect(daemon, 'the plugin daemon process').toBeDefined();
  return pids.filter((pid) => stat(pid)?.ppid === daemon && stat(pid)?.state === 'Z').map((pid) => `${pid} ${stat(pid)?.comm}`);
}

describe('volume and plugin lifecycle', () => {
  it('docker volume inspect shows CreatedAt and Status, and no secret from tsfs; the state file is private', async () => {
    const vol = await mustCreate('inspect', { sshcmd: sshcmd(TEST_USER, 'inspect'), password_file: '/root/.ssh/pw' });
    const text = await docker('volume', 'inspect', vol);
    const [info] = JSON.parse(text) as Array<{ CreatedAt?: string; Status?: Record<string, unknown>; Driver: string; Mountpoint: string }>;
    expect(info.Driver).toBe(PLUGIN);
    expect(Number.isNaN(Date.parse(info.CreatedAt ?? ''))).toBe(false);
    expect(info.Status && Object.keys(info.Status).length).toBeTruthy();
    // Docker itself echoes the create Options (so -o password=... shows
    // there: docs recommend password_file); what tsfs answers must not.
    expect(text).not.toContain(PASSWORD);
    const pwVol = await mustCreate('inspect-pw', { sshcmd: sshcmd(TEST_USER, 'inspect'), password: PASSWORD });
    const [pwInfo] = JSON.parse(await docker('volume', 'inspect', pwVol)) as Array<{ Status?: unknown; Mountpoint: string; CreatedAt?: string }>;
    expect(JSON.stringify([pwInfo.Status, pwInfo.Mountpoint, pwInfo.CreatedAt])).not.toContain(PASSWORD);
    const stateFiles = ['tsfs.json'].map((f) => join(stateDir, f)).filter(existsSync);
    expect(stateFiles.length).toBe(1);
    expect(statSync(stateFiles[0]).mode & 0o077).toBe(0);
  });

  it('docker volume rm leaves the remote data, and a new volume on it sees it', async () => {
    const vol = await mustCreate('rm', { sshcmd: sshcmd('root', 'rm') });
    await writeThenRead(vol);
    await docker('volume', 'rm', vol);
    expect(readFileSync(join(sshd.storeDir, 'rm/world'), 'utf8')).toBe('hello\n');
    const again = await mustCreate('rm', { sshcmd: sshcmd('root', 'rm') });
    await dockerRun(['-v', `${again}:/v`], ['grep', '-Fxq', 'hello', '/v/world']);
  });

  it('keeps its volumes across docker plugin disable/enable', async () => {
    const vol = await mustCreate('restart', { sshcmd: sshcmd('root', 'restart') });
    await dockerRun(['-v', `${vol}:/v`], ['sh', '-c', 'echo kept > /v/k.txt']);
    // -f: Docker counts every volume as a user of its driver.
    await docker('plugin', 'disable', '-f', PLUGIN);
    await docker('plugin', 'enable', PLUGIN);
    expect((await docker('volume', 'ls', '-q', '--filter', `driver=${PLUGIN}`)).split('\n')).toContain(vol);
    expect(await dockerRun(['-v', `${vol}:/v`], ['cat', '/v/k.txt'])).toBe('kept\n');
  });

  it('a new container reads the data after the sshd restarted (vieux test4)', async () => {
    const vol = await mustCreate('sshdrestart', { sshcmd: sshcmd('root', 'sshdrestart') });
    await dockerRun(['-v', `${vol}:/write`], ['sh', '-c', 'echo hello > /write/world']);
    await sshd.restart();
    await dockerRun(['-v', `${vol}:/read`], ['grep', '-Fxq', 'hello', '/read/world']);
  });
});

// Every `docker volume create` of vieux/sshfs's README and integration
// scripts, with its host/port/password adapted to the test sshd.
describe('vieux/sshfs command lines', () => {
  it('README: -o sshcmd=<user@host:path> -o password=<password> [-o port=<port>]', async () => {
    await writeThenRead(await mustCreate('v-password', { sshcmd: sshcmd(TEST_USER, 'v-password'), password: PASSWORD }));
  });

  it('README: -o sshcmd=<user@host:path> [-o IdentityFile=/root/.ssh/<key>] [-o port=<port>]', async () => {
    await writeThenRead(await mustCreate('v-identity', { sshcmd: sshcmd('root', 'v-identity'), IdentityFile: '/root/.ssh/deploy_key' }));
  });

  it('README: [-o <any_sshfs_-o_option>] such as reconnect, cache=no, ServerAliveInterval', async () => {
    const vol = await mustCreate('v-sshfsopts', { sshcmd: sshcmd('root', 'v-sshfsopts'), reconnect: null, cache: 'no', ServerAliveInterval: '15', ServerAliveCountMax: '3' });
    await writeThenRead(vol);
  });

  it('README: sshfs options tsfs does not have are refused, naming the option and what to do', async () => {
    expect(await mustFail('v-follow', { sshcmd: sshcmd('root', 'v-follow'), follow_symlinks: null })).toMatch(/follow_symlinks is not supported: .*sshcmd/);
    expect(await mustFail('v-ssh-command', { sshcmd: sshcmd('root', 'v-ssh-command'), ssh_command: 'ssh -v' })).toMatch(/ssh_command is refused as unsafe/);
  });

  it('test1 simple: -o sshcmd=<user>@localhost:<path> -o port=<port> -o password=<password>', async () => {
    await writeThenRead(await mustCreate('v-simple', { sshcmd: `${TEST_USER}@localhost:${remote('v-simple')}`, password: PASSWORD }));
  });

  it('test2 allow_other: -o allow_other, containers run -u nobody', async () => {
    const vol = await mustCreate('v-allow-other', { sshcmd: sshcmd(TEST_USER, 'v-allow-other'), allow_other: null, password: PASSWORD });
    await writeThenRead(vol, ['-u', 'nobody']);
  });

  it('test3 compression: -o Ciphers=arcfour -o Compression=no is refused for Ciphers; Compression=no alone works', async () => {
    const err = await mustFail('v-ciphers', { sshcmd: sshcmd(TEST_USER, 'v-ciphers'), Ciphers: 'arcfour', Compression: 'no', password: PASSWORD });
    expect(err).toContain('option Ciphers is not supported');
    const vol = await mustCreate('v-compression', { sshcmd: sshcmd(TEST_USER, 'v-compression'), Compression: 'no', password: PASSWORD });
    await writeThenRead(vol);
    expect(await docker('volume', 'inspect', '-f', '{{json .Status}}', vol)).toMatch(/Compression/);
  });

  it('community lines: sshfs\'s comma-joined -o uid=999,gid=999 says to give each its own -o', async () => {
    expect(await mustFail('v-uidgid', { sshcmd: sshcmd('root', 'v-uidgid'), uid: '999,gid=999', allow_other: null })).toContain('-o uid=999 -o gid=999');
  });

  it('community lines: -o uid=999 -o gid=999 shows every file as that owner', async () => {
    const vol = await mustCreate('v-uid', { sshcmd: sshcmd('root', 'v-uid'), uid: '999', gid: '999' });
    await dockerRun(['-v', `${vol}:/v`], ['sh', '-c', 'echo x > /v/f']);
    expect(await dockerRun(['-v', `${vol}:/v`], ['stat', '-c', '%u:%g', '/v/f'])).toBe('999:999\n');
  });

  it('test5 source: state.source=<dir> keeps the state file there', async () => {
    const vol = await mustCreate('v-state', { sshcmd: sshcmd('root', 'v-state') });
    expect(readFileSync(join(stateDir, 'tsfs.json'), 'utf8')).toContain(vol);
  });

  it('test6 ssh key: sshkey.source=<dir> and no auth option', async () => {
    await writeThenRead(await mustCreate('v-sshkey', { sshcmd: sshcmd('root', 'v-sshkey') }));
  });

  it('without sshcmd: says how to write the command', async () => {
    expect(await mustFail('v-nosshcmd', {})).toContain('missing required option sshcmd');
  });
});

describe('Docker Swarm', () => {
  // The docs' recipe (docs/deploy.md): a replicated job of 8 tasks, the
  // volume defined in the service's --mount, the index from {{.Task.Slot}}
  // (whose slot 0 renders as the node ID, hence the case).
  it('a replicated job of 8 tasks, each saving /storage/<index>/model/model.h5 through a tsfs volume', async () => {
    const state = (await docker('info', '-f', '{{.Swarm.LocalNodeState}}')).trim();
    // Never take over or leave a swarm that is not this test's.
    expect(state, 'this dockerd is already in a swarm that this test did not start').toBe('inactive');
    const vol = `${prefix}-swarm`;
    volumes.add(vol);
    const svc = `${prefix}-swarm-job`;
    const store = remote('swarm');
    let joined = false;
    try {
      await docker('swarm', 'init', '--advertise-addr', '127.0.0.1');
      joined = true;
      await docker(
        'service', 'create', '--detach', '--name', svc, '--mode', 'replicated-job', '--replicas', '8',
        '--container-label', LABEL,
        '--mount', `type=volume,source=${vol},target=/storage,volume-driver=${PLUGIN},volume-opt=sshcmd=root@127.0.0.1:${store},volume-opt=port=${sshd.port}`,
        '--mount', `type=bind,source=${join(REPO, 'test/e2e')},target=/job,readonly`,
        '-e', 'TASK_SLOT={{.Task.Slot}}',
        BASE_IMAGE,
        'sh', '-c', 'case "$TASK_SLOT" in *[!0-9]*|"") TASK_SLOT=0;; esac; AWS_BATCH_JOB_ARRAY_INDEX=$TASK_SLOT exec node /job/array-job.cjs',
      );
      let states: string[] = [];
      await until(
        async () => {
          // CurrentState only: a job task's DesiredState is Complete from the start.
          states = (await docker('service', 'ps', svc, '--format', '{{.CurrentState}} {{.Error}}')).trim().split('\n').filter(Boolean);
          if (states.some((l) => /^(Failed|Rejected)/.test(l))) throw new Error(`a task failed: ${states.join('; ')}\n--- plugin log ---\n${pluginLog()}`);
          return states.length === 8 && states.every((l) => /^Complete/.test(l));
        },
        'all 8 tasks of the replicated job complete',
        { withinMs: 600_000, everyMs: 1000, seen: () => states },
      );
      for (let i = 0; i < 8; i++) {
        const onStore = readFileSync(job.modelPath(store, i));
        expect(sha256(onStore), `task ${i}'s model.h5 on the store`).toBe(sha256(job.expected(i)));
      }
    } finally {
      await run('docker', ['service', 'rm', svc]);
      // The tasks' containers go asynchronously; the volume is free once they are gone.
      await until(async () => (await run('docker', ['ps', '-aq', '--filter', `label=com.docker.swarm.service.name=${svc}`])).stdout.trim() === '', 'the job\'s containers removed', { withinMs: 120_000, everyMs: 500 }).catch(() => undefined);
      if (joined) await run('docker', ['swarm', 'leave', '--force']);
    }
  }, 900_000);
});

describe('secrets', () => {
  it.skipIf(!existsSync(DOCKERD_LOG))('no password ever reaches the plugin\'s log', () => {
    const log = pluginLog(1_000_000);
    expect(log.length).toBeGreaterThan(0);
    expect(log).not.toContain(PASSWORD);
    expect(log).not.toContain('PRIVATE KEY');
  });
});
