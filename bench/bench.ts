// npm run bench: tsfs against the C sshfs on the same sshd, same machine, same
// run. Not a test: it prints figures, it asserts nothing.
//
// Each workload runs alternately on the two mounts (A B A B ...) so drift in
// the machine's load hits both; we print medians and tsfs/sshfs ratios.
// tsfs runs as the real daemon (node dist/main.js) driven over its plugin
// socket, exactly as dockerd drives it, so the RSS we report is the daemon's.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSshd, type Sshd } from '../test/helpers/sshd';
import { pluginCall } from '../test/helpers/daemon';
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../src/node-flags';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BIG_MIB = Number(process.env.BENCH_BIG_MIB ?? 512);
/** Run only workloads whose name matches this regex (and skip scp/RSS unless it matches them too). */
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY, 'i') : undefined;
/** Extra node flags for the daemon (after DAEMON_NODE_FLAGS, so they can override them), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
const DAEMON_NODE_ARGS = (process.env.BENCH_DAEMON_NODE_ARGS ?? '').split(' ').filter(Boolean);
/**
 * `tmpfs`: the server's store on a tmpfs, so conv=fsync costs the server no
 * disk flush. The conv=fsync workloads otherwise share this machine's virtio
 * disk, whose flush time moves with the host (docs/performance.md, "8 writers").
 */
const STORE = process.env.BENCH_STORE ?? 'disk';
const CIPHER = 'aes128-gcm@openssh.com';
const WORKER = join(__dirname, 'worker.mjs');

interface Mount {
  name: 'tsfs' | 'sshfs';
  dir: string;
  /** Processes doing this mount's client-side work (daemon, or sshfs and its ssh). */
  clientPids(): number[];
  remount(): Promise<void>;
  unmount(): Promise<void>;
}

function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  return execFileSync(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30 }).toString();
}

async function run(cmd: string, args: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err}`))));
  });
}

// ---- CPU accounting: where the time goes, client vs server -----------------
// utime+stime+cutime+cstime summed over a process tree counts every live and
// every reaped descendant once (clock ticks, 100/s on Linux).

function procTable(): Map<number, { ppid: number; ticks: number; cmd: string }> {
  const t = new Map<number, { ppid: number; ticks: number; cmd: string }>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = readFileSync(`/proc/${e}/stat`, 'utf8');
      const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
      // rest[0] is field 3 (state): ppid field 4, utime..cstime fields 14..17
      const ticks = Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ');
      t.set(Number(e), { ppid: Number(rest[1]), ticks, cmd });
    } catch {
      /* exited meanwhile */
    }
  }
  return t;
}

function treeTicks(roots: number[], table = procTable()): number {
  const seen = new Set(roots.filter((p) => table.has(p)));
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, p] of table) if (!seen.has(pid) && seen.has(p.ppid)) { seen.add(pid); grew = true; }
  }
  let n = 0;
  for (const pid of seen) n += table.get(pid)!.ticks;
  return n;
}

let cpuContext: { mount: Mount; serverPid: number } | undefined;
const cpuLog: Record<string, { client: number; server: number; ioStall: number }> = {};

/** Seconds in which every runnable task on this machine waited for I/O (PSI "full"; 0 if absent). */
function ioStallSeconds(): number {
  try {
    const full = readFileSync('/proc/pressure/io', 'utf8').split('\n').find((l) => l.startsWith('full'));
    return Number(/total=(\d+)/.exec(full ?? '')?.[1] ?? 0) / 1e6;
  } catch {
    return 0;
  }
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const ctx = cpuContext;
  const snap = () => {
    const t = procTable();
    return ctx ? { client: treeTicks(ctx.mount.clientPids(), t), server: treeTicks([ctx.serverPid], t) } : undefined;
  };
  const c0 = snap();
  const io0 = ioStallSeconds();
  const t0 = process.hrtime.bigint();
  await fn();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const c1 = snap();
  if (ctx && c0 && c1) {
    const acc = (cpuLog[ctx.mount.name] ??= { client: 0, server: 0, ioStall: 0 });
    acc.client += (c1.client - c0.client) / 100;
    acc.server += (c1.server - c0.server) / 100;
    acc.ioStall += ioStallSeconds() - io0;
  }
  return secs;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// ---- the two mounts ---------------------------------------------------------

async function mountSshfs(sshd: Sshd, remote: string, dir: string): Promise<Mount> {
  const args = [
    `${sshd.user}@${sshd.host}:${remote}`, dir,
    '-p', String(sshd.port),
    '-o', `IdentityFile=${sshd.userKeyPath},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null`,
    '-o', `Ciphers=${CIPHER},Compression=no,allow_other`,
  ];
  const up = () => run('sshfs', args);
  const down = () => run('fusermount3', ['-u', dir]);
  await up();
  // sshfs daemonizes after starting ssh, so both end up children of init:
  // find sshfs by its mountpoint and ssh by this sshd's port.
  const clientPids = () =>
    [...procTable()]
      .filter(([, p]) => (p.cmd.startsWith('sshfs ') && p.cmd.includes(` ${dir} `)) || (p.cmd.startsWith('ssh ') && p.cmd.includes(`-oPort=${sshd.port} `) && p.cmd.endsWith(' sftp ')))
      .map(([pid]) => pid);
  return { name: 'sshfs', dir, clientPids, remount: async () => { await down(); await up(); }, unmount: down };
}

class Daemon {
  proc!: ChildProcess;
  socket: string;
  constructor(readonly root: string, readonly sshd: Sshd) {
    this.socket = join(root, 'tsfs.sock');
  }
  async start(): Promise<void> {
    this.proc = spawn(process.execPath, [...DAEMON_NODE_FLAGS, ...DAEMON_NODE_ARGS, join(__dirname, '..', 'dist', 'main.js')], {
      // DAEMON_ENV first: a setting in the bench's own environment wins, to measure it.
      env: {
        ...DAEMON_ENV,
        ...process.env,
        TSFS_SOCKET: this.socket,
        TSFS_STATE_DIR: join(this.root, 'state'),
        TSFS_MOUNT_ROOT: join(this.root, 'volumes'),
        TSFS_SSH_DIR: join(this.root, 'ssh'),
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    for (let i = 0; i < 100 && !existsSync(this.socket); i++) await new Promise((r) => setTimeout(r, 50));
    await pluginCall(this.socket, 'Plugin.Activate', {});
  }
  async volume(name: string, remote: string): Promise<Mount> {
    await pluginCall(this.socket, 'VolumeDriver.Create', {
      Name: name,
      Opts: { sshcmd: `${this.sshd.user}@${this.sshd.host}:${remote}`, port: String(this.sshd.port), IdentityFile: this.sshd.userKeyPath },
    });
    let id = 0;
    const up = async () => (await pluginCall(this.socket, 'VolumeDriver.Mount', { Name: name, ID: `bench-${++id}` })).Mountpoint as string;
    const down = () => pluginCall(this.socket, 'VolumeDriver.Unmount', { Name: name, ID: `bench-${id}` }).then(() => undefined);
    const dir = await up();
    return { name: 'tsfs', dir, clientPids: () => [this.proc.pid!], remount: async () => { await down(); await up(); }, unmount: down };
  }
  /** Peak and current resident set of the daemon, MiB. */
  rss(): { peak: number; now: number } {
    const status = readFileSync(`/proc/${this.proc.pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024;
    return { peak: kb('VmHWM'), now: kb('VmRSS') };
  }
  /** Start a new peak: the kernel resets VmHWM to the current RSS (proc(5), clear_refs 5). */
  resetPeak(): void {
    writeFileSync(`/proc/${this.proc.pid}/clear_refs`, '5');
  }
  async stop(): Promise<void> {
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await exited;
  }
}

// ---- workloads ----------------------------------------------------------------
// Each returns seconds for one run on one mount. `fresh` is a per-run scratch
// directory name so runs never see each other's files or caches.

type Workload = { name: string; unit: 'MB/s' | 's'; bytes?: number; run(m: Mount, fresh: string): Promise<number> };

function workloads(bigFile: string, treeName: string): Workload[] {
  const bigBytes = BIG_MIB * 1 << 20;
  return [
    {
      name: `seq write ${BIG_MIB} MiB (dd bs=1M conv=fsync)`, unit: 'MB/s', bytes: bigBytes,
      run: (m, fresh) => timed(() => run('dd', [`if=${bigFile}`, `of=${join(m.dir, fresh + '.bin')}`, 'bs=1M', 'conv=fsync', 'status=none'])),
    },
    {
      name: `seq read ${BIG_MIB} MiB, fresh mount`, unit: 'MB/s', bytes: bigBytes,
      run: async (m, fresh) => {
        await run('dd', [`if=${bigFile}`, `of=${join(m.dir, fresh + '.bin')}`, 'bs=1M', 'status=none']);
        await m.remount();
        return timed(() => run('dd', [`if=${join(m.dir, fresh + '.bin')}`, 'of=/dev/null', 'bs=1M', 'status=none']));
      },
    },
    {
      name: '2,000 x 4 KiB files in 20 dirs', unit: 's',
      run: (m, fresh) => timed(() => run(process.execPath, [WORKER, 'small-files', join(m.dir, fresh)])),
    },
    {
      name: 'ls -lR of 10,000 files, fresh mount', unit: 's',
      run: async (m) => { await m.remount(); return timed(() => run('ls', ['-lR', join(m.dir, treeName)])); },
    },
    {
      name: 'find -type f of 10,000 files, fresh mount', unit: 's',
      run: async (m) => { await m.remount(); return timed(() => run('find', [join(m.dir, treeName), '-type', 'f'])); },
    },
    {
      name: 'stat of every file (10,000), fresh mount', unit: 's',
      run: async (m) => { await m.remount(); return timed(() => run(process.execPath, [WORKER, 'stat-tree', join(m.dir, treeName)])); },
    },
    {
      name: 'HDF5-like: 64 MiB, 4,096 random 4 KiB rewrites + fsync', unit: 's',
      run: async (m, fresh) => {
        const f = join(m.dir, fresh + '.h5');
        await run('dd', ['if=/dev/zero', `of=${f}`, 'bs=1M', 'count=64', 'conv=fsync', 'status=none']);
        return timed(() => run(process.execPath, [WORKER, 'random-rewrite', f]));
      },
    },
    {
      name: '8 concurrent writers x 32 MiB (conv=fsync)', unit: 'MB/s', bytes: 8 * 32 << 20,
      run: (m, fresh) =>
        timed(async () => {
          await Promise.all(
            Array.from({ length: 8 }, (_, i) =>
              run('dd', [`if=${bigFile}`, `of=${join(m.dir, `${fresh}-w${i}.bin`)}`, 'bs=1M', 'count=32', 'conv=fsync', 'status=none']),
            ),
          );
        }),
    },
  ];
}

async function main(): Promise<void> {
  if (!existsSync(join(__dirname, '..', 'dist', 'main.js'))) throw new Error('run `npm run build` first');
  const cryptoBinding = require('ssh2/lib/protocol/crypto.js').bindingAvailable;
  const work = mkdtempSync(join(tmpdir(), 'tsfs-bench-'));
  const sshd = await startSshd();
  const daemon = new Daemon(work, sshd);
  const mounts: Mount[] = [];
  if (STORE === 'tmpfs') sh('mount', ['-t', 'tmpfs', '-o', 'size=8g,mode=0777', 'tsfs-bench-store', sshd.storeDir]);
  else if (STORE !== 'disk') throw new Error(`BENCH_STORE=${STORE}: use disk (the default) or tmpfs`);
  try {
    console.log(`tsfs vs sshfs ${sh('sshfs', ['--version']).split('\n')[0]} on OpenSSH sshd 127.0.0.1:${sshd.port}, store on ${STORE}`);
    console.log(`cipher ${CIPHER} for both; ssh2 native crypto binding: ${cryptoBinding}; ${ROUNDS} rounds, medians`);
    const bigFile = join(work, 'big.bin');
    await run('dd', ['if=/dev/urandom', `of=${bigFile}`, 'bs=1M', `count=${BIG_MIB}`, 'status=none']);
    // The metadata tree is made on the server side directly: both mounts walk the same one.
    const treeName = 'tree10k';
    await run(process.execPath, [WORKER, 'make-tree', join(sshd.storeDir, treeName)]);
    for (const n of ['tsfs', 'sshfs']) mkdirSync(join(sshd.storeDir, n));
    linkTree(sshd.storeDir, treeName);

    mkdirSync(join(work, 'ssh'));
    mkdirSync(join(work, 'sshfs-mnt'));
    await daemon.start();
    const tsfs = await daemon.volume('bench', join(sshd.storeDir, 'tsfs'));
    const sshfs = await mountSshfs(sshd, join(sshd.storeDir, 'sshfs'), join(work, 'sshfs-mnt'));
    mounts.push(tsfs, sshfs);

    const results: string[] = [];
    const serverPid = Number(readFileSync(join(sshd.dir, 'sshd.pid'), 'utf8'));
    for (const w of workloads(bigFile, treeName)) {
      if (ONLY && !ONLY.test(w.name)) continue;
      const times: Record<string, number[]> = { tsfs: [], sshfs: [] };
      for (const k of Object.keys(cpuLog)) delete cpuLog[k];
      for (let r = 0; r < ROUNDS; r++) {
        for (const m of r % 2 === 0 ? [tsfs, sshfs] : [sshfs, tsfs]) {
          cpuContext = { mount: m, serverPid };
          times[m.name].push(await w.run(m, `r${r}-${w.name.replace(/\W+/g, '_').slice(0, 20)}`));
          cpuContext = undefined;
        }
      }
      const [a, b] = [median(times.tsfs), median(times.sshfs)];
      const line =
        w.unit === 'MB/s'
          ? `${w.name}: tsfs ${(w.bytes! / a / 1e6).toFixed(1)} MB/s, sshfs ${(w.bytes! / b / 1e6).toFixed(1)} MB/s, speed ratio ${(b / a).toFixed(2)}x`
          : `${w.name}: tsfs ${a.toFixed(2)} s, sshfs ${b.toFixed(2)} s, time ratio ${(a / b).toFixed(2)} (speed ${(b / a).toFixed(2)}x)`;
      const cpu = (n: string) => `${(cpuLog[n].client / ROUNDS).toFixed(2)}/${(cpuLog[n].server / ROUNDS).toFixed(2)}`;
      const io = (n: string) => (cpuLog[n].ioStall / ROUNDS).toFixed(2);
      const mem = daemon.rss();
      console.log(`${line}  [CPU s per run, client/sshd: tsfs ${cpu('tsfs')}, sshfs ${cpu('sshfs')}; I/O full stall s per run: tsfs ${io('tsfs')}, sshfs ${io('sshfs')}; daemon RSS ${mem.now.toFixed(0)} MiB, peak ${mem.peak.toFixed(0)}]`);
      results.push(line);
    }

    if (process.env.BENCH_THREADS) {
      // Which daemon threads burn the CPU: main (JS, ssh2 crypto), libuv pool, libfuse workers.
      const byComm = new Map<string, number>();
      for (const t of readdirSync(`/proc/${daemon.proc.pid}/task`)) {
        const st = readFileSync(`/proc/${daemon.proc.pid}/task/${t}/stat`, 'utf8');
        const comm = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
        const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
        const key = t === String(daemon.proc.pid) ? 'main' : comm;
        byComm.set(key, (byComm.get(key) ?? 0) + (Number(rest[11]) + Number(rest[12])) / 100);
      }
      console.log('daemon CPU s by thread:', JSON.stringify(Object.fromEntries(byComm)));
    }
    const scp = [];
    for (let r = 0; r < (ONLY && !ONLY.test('scp') ? 0 : ROUNDS); r++) {
      scp.push(await timed(() => run('scp', ['-q', '-c', CIPHER, '-i', sshd.userKeyPath, '-P', String(sshd.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', bigFile, `${sshd.user}@${sshd.host}:${join(sshd.storeDir, 'scp.bin')}`])));
    }
    if (scp.length) console.log(`scp ${BIG_MIB} MiB (the raw limit): ${((BIG_MIB << 20) / median(scp) / 1e6).toFixed(1)} MB/s`);

    if (ONLY && !ONLY.test('rss')) return;
    // Memory: 8 volumes mounted and busy at once.
    const before = daemon.rss();
    daemon.resetPeak();
    const eight = await Promise.all(Array.from({ length: 8 }, (_, i) => { mkdirSync(join(sshd.storeDir, `v${i}`)); return daemon.volume(`mem${i}`, join(sshd.storeDir, `v${i}`)); }));
    mounts.push(...eight);
    const busy = await timed(() => Promise.all(eight.map((m) => run('dd', [`if=${bigFile}`, `of=${join(m.dir, 'busy.bin')}`, 'bs=1M', 'count=64', 'conv=fsync', 'status=none']))).then(() => undefined));
    const rss = daemon.rss();
    console.log(`daemon RSS with 8 volumes mounted and busy: peak ${rss.peak.toFixed(0)} MiB, now ${rss.now.toFixed(0)} MiB (${before.now.toFixed(0)} MiB before they mounted; peak over all earlier workloads: ${before.peak.toFixed(0)} MiB); the 8 volumes wrote ${((8 * 64 << 20) / busy / 1e6).toFixed(1)} MB/s together`);
  } finally {
    for (const m of mounts.reverse()) await m.unmount().catch(() => undefined);
    await daemon.stop().catch(() => undefined);
    await sshd.stop();
    if (STORE === 'tmpfs') sh('umount', [sshd.storeDir]);
    rmSync(work, { recursive: true, force: true });
    rmSync(sshd.dir, { recursive: true, force: true });
  }
}

/** Both mounts see the same 10,000-file tree: each remote root gets a copy made by hardlinks (cheap, same inodes). */
function linkTree(store: string, treeName: string): void {
  for (const n of ['tsfs', 'sshfs']) sh('cp', ['-al', join(store, treeName), join(store, n, treeName)]);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
