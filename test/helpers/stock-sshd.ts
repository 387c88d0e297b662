// An OpenSSH sshd the way a store is usually left: Debian's stock
// sshd_config (MaxStartups 10:30:100, MaxSessions 10, UsePAM, StrictModes,
// Subsystem through the user's login shell), changed only in what a second
// sshd on one machine must change (port, listen address, pid file, host key)
// and where our test key lives (AuthorizedKeysFile). The sftp Subsystem is a
// wrapper that first costs what a login shell's rc files cost on real servers
// (`subsystemCpuMs` of CPU per channel) and then execs sftp-server; `gate`
// makes it wait until a file exists (a mount held in progress by the test).
//
// The user is `tsfs-storm` with /bin/sh as login shell, created if missing:
// root's login shell here is bash, whose ~/.bashrc (pyenv) alone costs ~0.6 s
// of CPU per channel, which would swamp the cost being modelled.
import { spawn, execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { descendants, fingerprint, freePort, waitForPort } from './sshd';

export const STORM_USER = 'tsfs-storm';
const STOCK_CONFIG = '/usr/share/openssh/sshd_config';

export interface StockSshdOptions {
  /** CPU milliseconds the Subsystem wrapper burns before exec'ing sftp-server (default 100). */
  subsystemCpuMs?: number;
  /** Hold every sftp-server start until the test opens the gate (StockSshd.gate). */
  gate?: boolean;
}

export interface StockSshd {
  host: string;
  port: number;
  user: string;
  uid: number;
  storeDir: string;
  userKeyPath: string;
  hostKeyFingerprint: string;
  dir: string;
  /** With opts.gate: `started` exists once a Subsystem start waits; open() lets them all through. */
  gate: { started: string; open(): void };
  /** sshd_config lines that differ from Debian's stock file. */
  changes: string[];
  /**
   * The listener's descendants (per-connection sshd, shells, sftp-server),
   * their summed RSS, and summed PSS (shared pages split between the
   * processes sharing them, so per-volume figures do not count libc N times).
   */
  storeProcesses(): { count: number; sftpServers: number; rssKiB: number; pssKiB: number };
  /** Logins sshd accepted so far (its log), and sftp-server starts (the Subsystem wrapper counts them). */
  logins(): number;
  subsystemStarts(): number;
  stop(): Promise<void>;
  remove(): void;
}

function ensureUser(): number {
  if (spawnSync('id', ['-u', STORM_USER]).status !== 0) {
    execFileSync('useradd', ['-M', '-d', '/nonexistent', '-s', '/bin/sh', STORM_USER]);
  }
  // useradd leaves the password field '!' (locked), and with UsePAM sshd
  // refuses a locked account even for key logins; '*' is "no password".
  execFileSync('usermod', ['-p', '*', STORM_USER]);
  return Number(execFileSync('id', ['-u', STORM_USER]).toString().trim());
}

/** Iterations of a dash `while` loop that cost about `ms` of CPU here (measured: the machine's speed varies). */
function calibrate(ms: number): number {
  const n = 200_000;
  const out = execFileSync('sh', ['-c', `i=0; while [ $i -lt ${n} ]; do i=$((i+1)); done; cut -d' ' -f14,15 /proc/$$/stat`]).toString();
  const [ut, st] = out.trim().split(' ').map(Number);
  const cpuMs = ((ut + st) * 1000) / 100; // clock ticks (USER_HZ 100)
  return Math.max(1, Math.round((n * ms) / Math.max(cpuMs, 10)));
}

export async function startStockSshd(opts: StockSshdOptions = {}): Promise<StockSshd> {
  const uid = ensureUser();
  // Under /run (root-owned, 0755): StrictModes refuses keys below a world-writable /tmp.
  const dir = mkdtempSync('/run/tsfs-stock-sshd-');
  chmodSync(dir, 0o755);
  const storeDir = join(dir, 'store');
  mkdirSync(storeDir, { mode: 0o755 });
  chownSync(storeDir, uid, uid);
  mkdirSync('/run/sshd', { recursive: true });
  const hostKey = join(dir, 'host_ed25519');
  const userKeyPath = join(dir, 'user_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', userKeyPath]);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(`${userKeyPath}.pub`), { mode: 0o644 });

  // Writable by the login user, who runs the wrapper.
  const gateDir = join(dir, 'gate');
  mkdirSync(gateDir, { mode: 0o777 });
  chmodSync(gateDir, 0o777);
  const gate = { started: join(gateDir, 'started'), open: () => writeFileSync(join(gateDir, 'open'), '') };
  const wrapper = join(dir, 'sftp-login');
  const loops = calibrate(opts.subsystemCpuMs ?? 100);
  writeFileSync(
    wrapper,
    [
      '#!/bin/sh',
      '# What a login shell with busy rc files costs, then the real server.',
      `i=0; while [ $i -lt ${loops} ]; do i=$((i+1)); done`,
      `echo >> '${join(gateDir, 'starts')}'`,
      ...(opts.gate ? [`: > '${gate.started}'`, `while [ ! -e '${join(gateDir, 'open')}' ]; do sleep 0.05; done`] : []),
      'exec /usr/lib/openssh/sftp-server',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  const port = await freePort();
  const changes = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${hostKey}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${authorized}`,
    `Subsystem sftp ${wrapper}`,
  ];
  // sshd takes the first value of a keyword: ours go first, the stock
  // Subsystem line is dropped (a second Subsystem sftp is an error).
  const stock = readFileSync(STOCK_CONFIG, 'utf8')
    .split('\n')
    .filter((l) => !/^\s*Subsystem\s/.test(l));
  const config = join(dir, 'sshd_config');
  writeFileSync(config, [...changes, ...stock].join('\n'));

  let err = '';
  const proc: ChildProcess = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (d) => {
    if (err.length < 16 << 20) err += d.toString();
  });
  await waitForPort('127.0.0.1', port, proc, () => err);

  return {
    host: '127.0.0.1',
    port,
    user: STORM_USER,
    uid,
    storeDir,
    userKeyPath,
    hostKeyFingerprint: fingerprint(`${hostKey}.pub`),
    dir,
    gate,
    changes,
    storeProcesses() {
      let rssKiB = 0;
      let pssKiB = 0;
      let sftpServers = 0;
      const pids = descendants(proc.pid!);
      for (const p of pids) {
        try {
          const status = readFileSync(`/proc/${p}/status`, 'utf8');
          rssKiB += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
          if (/^Name:\s+sftp-server/m.test(status)) sftpServers++;
          pssKiB += Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
        } catch {
          /* gone */
        }
      }
      return { count: pids.length, sftpServers, rssKiB, pssKiB };
    },
    logins() {
      return err.split('\n').filter((l) => l.includes('Accepted publickey')).length;
    },
    subsystemStarts() {
      try {
        return readFileSync(join(gateDir, 'starts'), 'utf8').length;
      } catch {
        return 0;
      }
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      for (const p of descendants(proc.pid!)) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      proc.kill('SIGTERM');
      await exited;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
