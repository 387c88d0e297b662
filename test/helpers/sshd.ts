// A real OpenSSH sshd for tests: 127.0.0.1, a free port, host and user keys
// generated per run, serving a temp directory as the central store.
// Started as `/usr/sbin/sshd -D -f <config>` so the test owns its lifetime.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync, readdirSync, rmSync, chmodSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Sshd {
  host: string;
  port: number;
  user: string;
  /** The directory the tests treat as the central store (absolute path on the server). */
  storeDir: string;
  /** Private key that the server accepts for `user` (OpenSSH format, ed25519). */
  userKeyPath: string;
  /** A key the server does NOT accept. */
  wrongKeyPath: string;
  /** SHA256:... fingerprint of the server's host key, as ssh-keygen -l prints it. */
  hostKeyFingerprint: string;
  /** Directory holding the keys and config; also safe scratch space for the test. */
  dir: string;
  stop(): Promise<void>;
  /** Stop and start again on the same port with the same keys. */
  restart(): Promise<void>;
  /** Kill every open SSH session (the listener stays up): a server-side connection drop. */
  killSessions(): void;
}

export interface SshdOptions {
  /** Subsystem command for sftp; default OpenSSH's sftp-server. */
  sftpServer?: string;
  /** Extra sshd_config lines (sshd keeps the first value of a keyword: those set here cannot be overridden). */
  extraConfig?: string;
  /** sshd's MaxStartups; default 100:30:200. */
  maxStartups?: string;
  /** ListenAddress; default 127.0.0.1. */
  listenAddress?: string;
  /** Command prefix sshd is started under, e.g. ['ip', 'netns', 'exec', ns] (which execs it, so the PID is sshd's). */
  wrap?: string[];
  port?: number;
  /** Further public key files the server accepts, in place before it listens. */
  authorize?: string[];
  /** sshd's MaxSessions (channels per connection); default 64. */
  maxSessions?: number;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function keygen(path: string, type = 'ed25519'): void {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', 'tsfs-test', '-f', path]);
}

export function fingerprint(pubKeyPath: string): string {
  // "256 SHA256:abc... comment (ED25519)"
  return execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', pubKeyPath]).toString().split(' ')[1];
}

export async function waitForPort(host: string, port: number, proc: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`sshd exited with ${proc.exitCode}: ${stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, host);
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen on ${port}: ${stderr()}`);
}

export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), 'tsfs-sshd-'));
  chmodSync(dir, 0o755); // sshd StrictModes and non-root test users need to traverse it
  const storeDir = join(dir, 'store');
  mkdirSync(storeDir, { mode: 0o777 });
  chmodSync(storeDir, 0o777);
  mkdirSync('/run/sshd', { recursive: true }); // privilege separation dir that sshd insists on
  const hostKey = join(dir, 'host_ed25519');
  const userKeyPath = join(dir, 'user_ed25519');
  const wrongKeyPath = join(dir, 'wrong_ed25519');
  keygen(hostKey);
  keygen(userKeyPath);
  keygen(wrongKeyPath);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, Buffer.concat([userKeyPath, ...(opts.authorize ?? [])].map((k) => readFileSync(k.endsWith('.pub') ? k : `${k}.pub`))), { mode: 0o644 });
  const port = opts.port ?? (await freePort());
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      `ListenAddress ${opts.listenAddress ?? '127.0.0.1'}`,
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      'PermitRootLogin yes',
      'PasswordAuthentication yes',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'LogLevel ERROR',
      `MaxSessions ${opts.maxSessions ?? 64}`,
      `MaxStartups ${opts.maxStartups ?? '100:30:200'}`,
      // internal-sftp is OpenSSH's sftp-server code run inside sshd: an
      // external sftp-server is started through the user's login shell, and
      // root's .bashrc on these machines (pyenv) costs ~0.6 s of CPU per
      // channel, which made 8 parallel mounts time out on a loaded box.
      `Subsystem sftp ${opts.sftpServer ?? 'internal-sftp'}`,
      opts.extraConfig ?? '',
    ].join('\n') + '\n',
  );

  let proc!: ChildProcess;
  let err = '';
  const start = async () => {
    err = '';
    const argv = [...(opts.wrap ?? []), '/usr/sbin/sshd', '-D', '-e', '-f', config];
    proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    proc.stderr!.on('data', (d) => { err += d.toString(); });
    await waitForPort(opts.listenAddress ?? '127.0.0.1', port, proc, () => err);
  };
  // sshd forks a child per connection that outlives the listener; kill those
  // too so that "the server went away" means what it says.
  const killSessions = () => {
    try {
      execFileSync('pkill', ['-KILL', '-P', String(proc.pid)]);
    } catch {
      /* no sessions */
    }
  };
  // The listener first, then the sessions: killed the other way round, a
  // client whose session died reconnects at once and the still-listening
  // sshd accepts it (with the old host key, into the old store), and that
  // session outlives the stop. SIGSTOP freezes accept() and fork(), so the
  // session list taken next is complete; the sessions are killed only once
  // the listener is gone, when no new one can start.
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGSTOP');
    const sessions = descendants(proc.pid!);
    proc.kill('SIGKILL');
    await exited;
    for (const pid of sessions) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  await start();
  return {
    host: opts.listenAddress ?? '127.0.0.1',
    port,
    user: 'root',
    storeDir,
    userKeyPath,
    wrongKeyPath,
    hostKeyFingerprint: fingerprint(`${hostKey}.pub`),
    dir,
    stop: async () => {
      await stop();
    },
    restart: async () => {
      await stop();
      await start();
    },
    killSessions,
  };
}

/** Every process below `pid` (sshd's per-connection monitor and its privilege-separated child). */
export function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      // pid (comm) state ppid ...: comm may contain spaces and parentheses, so split after the last ')'.
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parentOf.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* exited meanwhile */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parentOf) if (pp === p) (out.push(c), walk(c));
  };
  walk(pid);
  return out;
}

/** Remove the sshd's directory after stop(); separate so tests can inspect the store. */
export function removeSshdDir(s: Sshd): void {
  rmSync(s.dir, { recursive: true, force: true });
}
