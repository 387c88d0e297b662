// Mount the real SFTP filesystem (src/fs) for a test, and drive it from child
// processes. The vitest process SERVES the FUSE mount in-process, so it must
// never touch the mountpoint itself — not with sync I/O (the event loop that
// would answer the request is the one blocked) and not with fs.promises either
// (libuv's 4 threadpool threads can all end up waiting on FUSE requests that
// need the same pool). Every access to a mount goes through spawn/execFile;
// results are checked on the server's side (the store directory) or as the
// children's printed output.
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, lstatSync, readlinkSync, rmdirSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { mountSftpFs, type FsOptions, type MountedFs } from '../../src/fs/index';
import type { SshTarget } from '../../src/sftp/target';

export const PROBE = join(__dirname, 'posix-scenarios.mjs');

/** What mountForTest needs of a server: an Sshd from ./sshd, or e.g. an rclone serve sftp. */
export interface SftpServer {
  host: string;
  port: number;
  user: string;
  storeDir: string;
  userKeyPath?: string;
  password?: string;
}

export interface TestMount {
  mountpoint: string;
  /** The directory on the server that the mount shows (read it directly to check results). */
  remoteDir: string;
  fs: MountedFs;
  cleanup(): Promise<void>;
}

export function targetFor(server: SftpServer, remotePath: string): SshTarget {
  return {
    host: server.host,
    port: server.port,
    username: server.user,
    remotePath,
    ...(server.userKeyPath ? { privateKey: readFileSync(server.userKeyPath), identityFile: server.userKeyPath } : {}),
    ...(server.password !== undefined ? { password: server.password } : {}),
    strictHostKeyChecking: 'accept-new',
    keepaliveInterval: 0,
    keepaliveCountMax: 3,
    connectTimeout: 10_000,
  };
}

export function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === path);
}

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Mount `server`'s store (or `subdir` of it, created on the server) on a fresh
 * temp mountpoint. `remoteDirOnServer` lets a test whose server serves a
 * different root (rclone) say where that directory is on this machine.
 */
export async function mountForTest(
  server: SftpServer,
  opts: Partial<FsOptions> & { subdir?: string; remotePath?: string } = {},
): Promise<TestMount> {
  const { subdir, remotePath, ...fsOpts } = opts;
  const remoteDir = subdir ? join(server.storeDir, subdir) : server.storeDir;
  if (subdir) mkdirSync(remoteDir, { recursive: true });
  const mountpoint = mkdtempSync(join(tmpdir(), 'tsfs-mnt-'));
  chmodSync(mountpoint, 0o755);
  let mounted: MountedFs;
  try {
    mounted = await mountSftpFs({
      target: targetFor(server, remotePath ?? remoteDir),
      mountpoint,
      allowOther: true,
      readOnly: false,
      cacheTimeout: 20,
      log: pino({ level: 'warn' }),
      ...fsOpts,
    });
  } catch (e) {
    await detach(mountpoint);
    throw e;
  }
  return {
    mountpoint,
    remoteDir,
    fs: mounted,
    cleanup: async () => {
      try {
        await mounted.unmount();
      } catch (e) {
        process.stderr.write(`unmount of ${mountpoint} failed (${(e as Error).message}); detaching lazily\n`);
      }
      await detach(mountpoint);
    },
  };
}

/** Last resort: lazy unmount, then remove the (now plain) mountpoint directory. */
async function detach(mountpoint: string): Promise<void> {
  if (isMounted(mountpoint)) {
    const r = await run('umount', ['-l', mountpoint]);
    if (r.code !== 0) await run('fusermount', ['-u', '-z', mountpoint]);
  }
  // Only a plain empty directory is removed: never recurse into something that may still be a mount.
  if (!isMounted(mountpoint)) {
    try {
      rmdirSync(mountpoint);
    } catch {
      /* already gone */
    }
  }
}

export interface Step {
  step: string;
  ok: boolean;
  code?: string;
  value?: unknown;
}

/** Run one probe scenario in a child process (optionally as another uid) and parse its steps. */
export function probe(scenario: string, dir: string, as?: { uid: number; gid: number }): Promise<Step[]> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [PROBE, scenario, dir],
      { timeout: 180_000, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, ...(as ?? {}) },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`probe ${scenario} in ${dir} failed: ${err.message}\n${stderr}`));
        try {
          resolve(JSON.parse(stdout) as Step[]);
        } catch {
          reject(new Error(`probe ${scenario} printed no JSON: ${stdout}\n${stderr}`));
        }
      },
    );
  });
}

/** The seed workload's writer child (see posix-scenarios.mjs h5Writer): resolves with the digest it read back. */
export function h5Writer(dir: string, index: number): Promise<{ index: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PROBE, 'h5-writer', dir, String(index)], { timeout: 300_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`writer ${index} failed: ${err.message}\n${stderr}`));
      resolve(JSON.parse(stdout));
    });
  });
}

/** Run any command in a child (e.g. dd, chown, stat against the mount). */
export { run as runChild };

/**
 * Human-readable differences between two probe runs, one line per step:
 * `<scenario> / <step>: local <x> vs mount <y>`. Empty when equal.
 */
export function diffSteps(scenario: string, local: Step[], mount: Step[]): string[] {
  const out: string[] = [];
  const n = Math.max(local.length, mount.length);
  const show = (s?: Step) => (!s ? 'missing' : s.ok ? `ok ${JSON.stringify(s.value ?? null)}` : `error ${s.code}`);
  for (let i = 0; i < n; i++) {
    const a = local[i];
    const b = mount[i];
    if (JSON.stringify(a) !== JSON.stringify(b)) out.push(`${scenario} / ${a?.step ?? b?.step}: local ${show(a)} vs mount ${show(b)}`);
  }
  return out;
}

/**
 * A directory tree as {relative path: description} read directly (this is the
 * server's side or a local directory, never a mount): type, mode bits, size
 * and sha256 of files, symlink targets.
 */
export function treeOf(root: string, opts: { modes?: boolean } = { modes: true }): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = lstatSync(p);
      const mode = opts.modes ? ` ${(st.mode & 0o7777).toString(8)}` : '';
      if (st.isSymbolicLink()) out[r] = `symlink -> ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[r] = `dir${mode}`;
        walk(r);
      } else out[r] = `file${mode} ${st.size} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    }
  };
  walk('');
  return out;
}

/** A plain local directory to run the same scenarios on, traversable by any uid. */
export function localScratch(prefix = 'tsfs-local-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** FUSE mounts still listed in /proc/mounts (the suites check none of theirs is left). */
export function fuseMounts(): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((l) => /\bfuse/.test(l));
}
