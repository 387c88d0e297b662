// Drive the real Docker Engine and the plugin Makefile from end-to-end tests.
// Every container carries LABEL so cleanup finds what a failed test left.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const REPO = resolve(__dirname, '../..');
// One value per test file's run: cleanup removes this run's containers only.
// A shared value let one checkout's cleanup `docker rm -f` the containers of
// another's suite running on the same dockerd (they died with exit 137).
export const LABEL = `org.tsfs.e2e=${randomBytes(6).toString('hex')}`;
export const BASE_IMAGE = 'node:24-bookworm-slim';
export const DOCKERD_LOG = process.env.DOCKERD_LOG ?? '/var/log/dockerd.log';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command; never throws (callers assert on code/stderr). */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {}): Promise<Run> {
  return new Promise((resolvePromise) => {
    const child = execFile(
      cmd,
      args,
      { cwd: opts.cwd ?? REPO, env: { ...process.env, ...opts.env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
        resolvePromise({ code, stdout: stdout.toString(), stderr: stderr.toString() });
      },
    );
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/**
 * The plugins' own log lines: dockerd relays each stdout line as
 * `... msg="<the line, quoted>" plugin=<id>`; this returns the lines themselves.
 */
export function pluginLog(lines = 15): string {
  if (!existsSync(DOCKERD_LOG)) return '';
  const out: string[] = [];
  for (const l of readFileSync(DOCKERD_LOG, 'utf8').split('\n')) {
    const m = / msg="((?:[^"\\]|\\.)*)" plugin=/.exec(l);
    if (m) out.push(m[1].replace(/\\(.)/g, '$1'));
  }
  return out.slice(-lines).join('\n');
}

/** dockerd's log size: pass it to pluginJson() to see only what comes after. */
export const dockerdLogSize = (): number => (existsSync(DOCKERD_LOG) ? readFileSync(DOCKERD_LOG).length : 0);

/** The JSON log lines of plugin `id` (all plugins without one) written after byte `from` of dockerd's log, parsed. */
export function pluginJson(from = 0, id?: string): Record<string, unknown>[] {
  if (!existsSync(DOCKERD_LOG)) return [];
  const out: Record<string, unknown>[] = [];
  for (const l of readFileSync(DOCKERD_LOG).subarray(from).toString('utf8').split('\n')) {
    const m = / msg="((?:[^"\\]|\\.)*)" plugin=(\w+)/.exec(l);
    if (!m || (id && m[2] !== id)) continue;
    try {
      out.push(JSON.parse(m[1]!.replace(/\\(.)/g, '$1')) as Record<string, unknown>);
    } catch {
      /* a line that is not pino's */
    }
  }
  return out;
}

/** Run a command that must succeed; the error carries its stderr and the plugin's last log lines. */
export async function ok(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\nstderr: ${r.stderr.trim()}\nstdout: ${r.stdout.slice(-2000)}\n--- plugin log ---\n${pluginLog()}`);
  }
  return r.stdout;
}

export const docker = (...args: string[]) => ok('docker', args);

/** `make <targets>` with variables, output streamed to the test log (builds take minutes). */
export function make(targets: string[], vars: Record<string, string>): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const args = [...targets, ...Object.entries(vars).map(([k, v]) => `${k}=${v}`)];
    const child = spawn('make', args, { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolvePromise() : reject(new Error(`make ${args.join(' ')} exited ${code}`))));
  });
}

/** `docker run --rm` with the cleanup label; returns stdout. */
export function dockerRun(args: string[], cmd: string[], image = BASE_IMAGE): Promise<string> {
  return docker('run', '--rm', '--label', LABEL, ...args, image, ...cmd);
}

/** Remove everything labelled by these tests, and the given volumes; never throws. */
export async function cleanup(volumes: Iterable<string>): Promise<void> {
  const ids = (await run('docker', ['ps', '-aq', '--filter', `label=${LABEL}`])).stdout.split('\n').filter(Boolean);
  if (ids.length) await run('docker', ['rm', '-f', ...ids]);
  for (const v of volumes) await run('docker', ['volume', 'rm', '-f', v]);
}
