// Runs the real tsfs daemon (`node <dist>/main.js`, built from src/ by tsc
// once per test file) as a child process in temp dirs, and talks to it over
// its unix socket exactly the way dockerd does: POST, JSON body, no
// Content-Type, `Accept: application/vnd.docker.plugins.v1.2+json`.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { UNHANDLED_REJECTION } from '../../src/main';
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../../src/node-flags';

const REPO = resolve(__dirname, '../..');

let built: string | undefined;

/** Compile src/ into a private dir (so a shared dist/ is never clobbered). */
export async function buildDist(): Promise<string> {
  if (built) return built;
  mkdirSync(join(REPO, '.tmp'), { recursive: true });
  const out = mkdtempSync(join(REPO, '.tmp', 'test-dist-'));
  await new Promise<void>((res, rej) =>
    execFile(join(REPO, 'node_modules/.bin/tsc'), ['-p', join(REPO, 'tsconfig.json'), '--outDir', out], (err, stdout) => {
      // tsc emits even with type errors elsewhere in the tree; only a missing main.js is fatal here.
      if (err) process.stderr.write(`tsc reported problems (continuing with what it emitted):\n${stdout}\n`);
      if (existsSync(join(out, 'main.js'))) res();
      else rej(new Error(`tsc did not emit main.js: ${stdout}`));
    }),
  );
  built = out;
  return out;
}

export function removeDist(): void {
  if (built) rmSync(built, { recursive: true, force: true });
  built = undefined;
}

export interface Answer {
  status: number;
  contentType: string | undefined;
  text: string;
  json: Record<string, unknown>;
}

export interface DaemonOptions {
  /** Use the test marker filesystem (test/helpers/marker-daemon.cjs) instead of the real SFTP filesystem. */
  marker?: boolean;
  env?: Record<string, string>;
  /** Reuse this directory (socket, state, mounts, ssh dir live under it): restart tests. */
  dir?: string;
}

export interface DaemonProc {
  dir: string;
  socket: string;
  stateDir: string;
  mountRoot: string;
  sshDir: string;
  /** Where the marker filesystem appends one line per mount/unmount. */
  markerLog: string;
  proc: ChildProcess;
  /** Everything the daemon printed on stdout (its pino log) since it started. */
  stdout(): string;
  stderr(): string;
  logLines(): Record<string, unknown>[];
  /** Milliseconds from spawn until Plugin.Activate first answered. */
  readyMs: number;
  call(endpoint: string, body?: unknown, opts?: CallOptions): Promise<Answer>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface CallOptions {
  /** Send body as given (string/Buffer) instead of JSON-encoding it. */
  raw?: boolean;
  method?: string;
  headers?: Record<string, string>;
}

export function callSocket(socket: string, endpoint: string, body?: unknown, opts: CallOptions = {}): Promise<Answer> {
  const payload = body === undefined ? Buffer.alloc(0) : opts.raw ? Buffer.from(body as string | Buffer) : Buffer.from(JSON.stringify(body));
  return new Promise((resolveP, reject) => {
    let answered = false;
    const req = request(
      {
        socketPath: socket,
        method: opts.method ?? 'POST',
        path: endpoint,
        headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': payload.length, ...opts.headers },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> = {};
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            /* left empty: the test asserts on text */
          }
          resolveP({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], text, json });
        });
      },
    );
    // The server may answer a too-large body before reading all of it.
    req.on('error', (e) => {
      if (!answered) reject(e);
    });
    req.end(payload);
  });
}

/** callSocket for scripts: `endpoint` without the slash; throws the daemon's Err. */
export async function pluginCall(socket: string, endpoint: string, body: unknown = {}): Promise<Record<string, unknown>> {
  const a = await callSocket(socket, `/${endpoint}`, body);
  if (a.json.Err || a.status !== 200) throw new Error(`${endpoint}: ${String(a.json.Err ?? a.text)}`);
  return a.json;
}

export async function startDaemon(o: DaemonOptions = {}): Promise<DaemonProc> {
  const dist = await buildDist();
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), 'tsfs-daemon-'));
  const socket = join(dir, 'run', 'tsfs.sock');
  const stateDir = join(dir, 'state');
  const mountRoot = join(dir, 'volumes');
  const sshDir = join(dir, 'ssh');
  const markerLog = join(dir, 'marker.log');
  mkdirSync(sshDir, { recursive: true });
  const entry = o.marker ? join(__dirname, 'marker-daemon.cjs') : join(dist, 'main.js');
  const start = Date.now();
  const proc = spawn(process.execPath, [...DAEMON_NODE_FLAGS, entry], {
    env: {
      ...DAEMON_ENV,
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      TSFS_SOCKET: socket,
      TSFS_STATE_DIR: stateDir,
      TSFS_MOUNT_ROOT: mountRoot,
      TSFS_SSH_DIR: sshDir,
      TSFS_DIST: dist,
      TSFS_MARKER_LOG: markerLog,
      LOG_LEVEL: 'debug',
      LOG_FORMAT: 'json',
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once('exit', (code, signal) => r({ code, signal })),
  );
  let readyMs = -1;
  for (let i = 0; i < 400 && readyMs < 0; i++) {
    if (proc.exitCode !== null) {
      if (!o.dir) rmSync(dir, { recursive: true, force: true });
      throw new Error(`daemon exited with ${proc.exitCode}: ${err}${out}`);
    }
    try {
      const a = await callSocket(socket, '/Plugin.Activate');
      if (a.status === 200) readyMs = Date.now() - start;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  if (readyMs < 0) {
    proc.kill('SIGKILL');
    throw new Error(`daemon never answered Plugin.Activate: ${err}${out}`);
  }
  return {
    dir, socket, stateDir, mountRoot, sshDir, markerLog, proc, readyMs,
    stdout: () => out,
    stderr: () => err,
    logLines: () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>),
    call: (endpoint, body, opts) => callSocket(socket, endpoint, body, opts),
    stop: async (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const r = await exited;
      // The daemon stays up after an unhandled rejection (src/main.ts): a test must not.
      const bugs = out.split('\n').filter((l) => l.includes(UNHANDLED_REJECTION));
      if (bugs.length > 0) throw new Error(`the daemon logged an unhandled rejection:\n${bugs.join('\n')}`);
      return r;
    },
  };
}

/**
 * Delete a stopped daemon's temp dir, unless anything is still mounted under
 * it: a recursive delete through a live SFTP mount would delete remote files.
 */
export function removeDaemonDir(dir: string): void {
  const mountsUnder = () =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((m) => m && (m === dir || m.startsWith(dir + '/')));
  // A failed test may leave a mount behind: detach it (lazily; this deletes nothing).
  for (const m of mountsUnder()) spawnSync('fusermount', ['-uz', m], { stdio: 'ignore' });
  const mounted = mountsUnder();
  if (mounted.length > 0) {
    process.stderr.write(`not removing ${dir}: still mounted: ${mounted.join(', ')}\n`);
    return;
  }
  rmSync(dir, { recursive: true, force: true });
}
