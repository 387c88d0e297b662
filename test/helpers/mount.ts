// Mount the SFTP filesystem in the test (vitest worker) process. All I/O on
// the mount must come from child processes: synchronous I/O here would
// deadlock against our own FUSE server.
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { mountSftpFs, type FsOptions, type MountedFs } from '../../src/fs/index';
import type { SshTarget } from '../../src/sftp/target';
import type { Sshd } from './sshd';

export interface TestMount {
  mountpoint: string;
  fs: MountedFs;
  unmount(): Promise<void>;
}

export function targetOf(sshd: Sshd, over: Partial<SshTarget> = {}): SshTarget {
  return {
    host: sshd.host, port: sshd.port, username: sshd.user, remotePath: sshd.storeDir,
    privateKey: readFileSync(sshd.userKeyPath), identityFile: sshd.userKeyPath,
    strictHostKeyChecking: 'accept-new', keepaliveInterval: 0, keepaliveCountMax: 3, connectTimeout: 5000,
    ...over,
  };
}

export async function mountStore(target: SshTarget, over: Partial<FsOptions> = {}): Promise<TestMount> {
  const base = mkdtempSync(join(tmpdir(), 'tsfs-mnt-'));
  chmodSync(base, 0o755); // uid 65534 probes traverse it
  const mountpoint = join(base, 'mnt');
  mkdirSync(mountpoint);
  const fs = await mountSftpFs({
    target, mountpoint, allowOther: true, readOnly: false, cacheTimeout: 20,
    log: pino({ level: process.env.TSFS_TEST_LOG ?? 'silent' }),
    ...over,
  });
  return {
    mountpoint, fs,
    unmount: async () => {
      await fs.unmount();
      if (isMounted(mountpoint)) await run('fusermount', ['-uz', mountpoint]);
      rmSync(base, { recursive: true, force: true });
    },
  };
}

export function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === path);
}

export function run(cmd: string, args: string[], opts: { uid?: number; gid?: number; input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { uid: opts.uid, gid: opts.gid, maxBuffer: 64 << 20, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

const PROBE = join(__dirname, 'posix-probe.mjs');

/** Run a posix-probe scenario in `dir` from a child process. */
export async function probe(scenario: string, dir: string, opts: { uid?: number; skip?: string[] } = {}): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [PROBE, scenario, dir, (opts.skip ?? []).join(',')], { uid: opts.uid, gid: opts.uid });
  if (r.code !== 0) throw new Error(`probe ${scenario} in ${dir} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Fresh local directory for the reference run. */
export function localDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tsfs-local-'));
  chmodSync(d, 0o777);
  return d;
}

export function listMounts(): string[] {
  return readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.includes('fuse'));
}

