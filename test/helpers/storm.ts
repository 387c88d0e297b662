// N volumes created and mounted at once through the real daemon, one per
// simulated host, each written with a file that is then checked by sha256 on
// the store; then every mount ID is unmounted and whatever the daemon still
// holds is counted as leaked. Shared by test/storm.test.ts (N = 32) and
// bench/storm.ts (N = 64, 128, 256).
import { createHash, randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DaemonProc } from './daemon';
import type { StockSshd } from './stock-sshd';

export interface StormResult {
  n: number;
  intact: number;
  /** Volume -> the error its Create or Mount (or the write) failed with. */
  failed: Map<string, string>;
  /** Mount IDs the daemon still held after every successful mount was unmounted. */
  leakedIds: number;
  /** Unmount -> the HTTP status or Err it was answered with, for each that did not succeed. */
  unmountFailed: Map<string, string>;
  wallMs: number;
  /** Connection attempts the daemon retried (its info lines). */
  retries: number;
  mountMs: { p50: number; p99: number; max: number };
  /** Create and Mount together: what a container waits for its volume. */
  createMountMs: { p50: number; p99: number; max: number };
  /** On the store, while all volumes were mounted and written. */
  store: { processes: number; sftpServers: number; rssKiB: number; pssKiB: number; mounted: number };
  /** What the store did for the whole run, Creates included: logins it accepted and sftp-server starts. */
  logins: number;
  subsystemStarts: number;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

const errOf = (a: { status: number; json: Record<string, unknown>; text: string }) => String(a.json.Err ?? a.text);

export async function runStorm(d: DaemonProc, sshd: StockSshd, n: number, opts: { bytes?: number; tag?: string } = {}): Promise<StormResult> {
  const bytes = opts.bytes ?? 4 * 1024 * 1024;
  const tag = opts.tag ?? `s${n}`;
  const names = Array.from({ length: n }, (_, i) => `${tag}-${i}`);
  for (const name of names) {
    mkdirSync(join(sshd.storeDir, name), { recursive: true });
    chownSync(join(sshd.storeDir, name), sshd.uid, sshd.uid);
  }
  const failed = new Map<string, string>();
  const mountMs: number[] = [];
  const createMountMs: number[] = [];
  const mounted = new Map<string, string>(); // name -> mountpoint
  const logBefore = d.logLines().length;
  const loginsBefore = sshd.logins();
  const startsBefore = sshd.subsystemStarts();
  const t0 = Date.now();
  // Every "host" at once: Create (the daemon checks the remote) then Mount.
  await Promise.all(
    names.map(async (Name) => {
      const Opts = { sshcmd: `${sshd.user}@${sshd.host}:${join(sshd.storeDir, Name)}`, port: String(sshd.port), IdentityFile: sshd.userKeyPath };
      const c0 = Date.now();
      const c = await d.call('/VolumeDriver.Create', { Name, Opts });
      if (c.status !== 200) return void failed.set(Name, `Create: ${errOf(c)}`);
      const m0 = Date.now();
      const m = await d.call('/VolumeDriver.Mount', { Name, ID: `id-${Name}` });
      if (m.status !== 200) return void failed.set(Name, `Mount: ${errOf(m)}`);
      mountMs.push(Date.now() - m0);
      createMountMs.push(Date.now() - c0);
      mounted.set(Name, m.json.Mountpoint as string);
    }),
  );
  const expected = new Map<string, string>();
  // The daemon serves these mounts, not this process: async I/O here is safe.
  await Promise.all(
    [...mounted].map(async ([Name, mp]) => {
      const data = randomBytes(bytes);
      expected.set(Name, sha256(data));
      try {
        await writeFile(join(mp, 'model.h5'), data);
      } catch (e) {
        failed.set(Name, `write: ${(e as Error).message}`);
      }
    }),
  );
  const wallMs = Date.now() - t0;
  const procs = sshd.storeProcesses();
  const logins = sshd.logins() - loginsBefore;
  const subsystemStarts = sshd.subsystemStarts() - startsBefore;
  let intact = 0;
  for (const [Name, sum] of expected) {
    try {
      if (sha256(readFileSync(join(sshd.storeDir, Name, 'model.h5'))) === sum) intact++;
      else if (!failed.has(Name)) failed.set(Name, 'store copy differs');
    } catch (e) {
      if (!failed.has(Name)) failed.set(Name, `store: ${(e as Error).message}`);
    }
  }
  const unmountFailed = new Map<string, string>();
  await Promise.all(
    [...mounted.keys()].map(async (Name) => {
      const u = await d.call('/VolumeDriver.Unmount', { Name, ID: `id-${Name}` });
      if (u.status !== 200 || u.json.Err) unmountFailed.set(Name, `HTTP ${u.status}: ${errOf(u)}`);
    }),
  );
  let leakedIds = 0;
  for (const Name of names) {
    const g = await d.call('/VolumeDriver.Get', { Name });
    const mounts = Number(((g.json.Volume as { Status?: { mounts?: number } } | undefined)?.Status?.mounts) ?? 0);
    leakedIds += mounts;
  }
  await Promise.all(names.map((Name) => d.call('/VolumeDriver.Remove', { Name })));
  const names_ = new Set(names);
  const retries = d
    .logLines()
    .slice(logBefore)
    .filter((l) => l.msg === 'connection setup failed (transient): retrying' && names_.has(String(l.volume))).length;
  return {
    n,
    intact,
    failed,
    leakedIds,
    unmountFailed,
    wallMs,
    retries,
    mountMs: { p50: quantile(mountMs, 0.5), p99: quantile(mountMs, 0.99), max: quantile(mountMs, 1) },
    createMountMs: { p50: quantile(createMountMs, 0.5), p99: quantile(createMountMs, 0.99), max: quantile(createMountMs, 1) },
    store: { processes: procs.count, sftpServers: procs.sftpServers, rssKiB: procs.rssKiB, pssKiB: procs.pssKiB, mounted: mounted.size },
    logins,
    subsystemStarts,
  };
}
