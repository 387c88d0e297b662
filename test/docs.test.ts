// The shipped examples must be what tsfs and the platforms accept: valid
// JSON/shape for ECS and AWS Batch, and every volume option in them passes the
// daemon's own option parser. config.json must agree with the daemon's
// defaults (socket, state dir, mount root, key dir).
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config';
import { DAEMON_ENV, DAEMON_NODE_FLAGS, missingDaemonEnv } from '../src/node-flags';
import { parseOptions } from '../src/options';

const REPO = join(__dirname, '..');
const read = (p: string) => readFileSync(join(REPO, p), 'utf8');
const json = (p: string) => JSON.parse(read(p));

/** `-o key=value` pairs of every `docker volume create` command in a shell script (with `\` continuations). */
function volumeCreateOptions(script: string): Array<Record<string, string>> {
  const joined = script.replace(/\\\n\s*/g, ' ');
  return joined
    .split('\n')
    .filter((l) => /^\s*docker volume create\b/.test(l))
    .map((l) => Object.fromEntries([...l.matchAll(/-o\s+([^=\s]+)(?:=(\S*))?/g)].map((m) => [m[1], m[2] ?? ''])));
}

describe('docs/examples', () => {
  it('ECS task definition: a tsfs dockerVolumeConfiguration whose driverOpts tsfs accepts', () => {
    const td = json('docs/examples/ecs-task-definition.json');
    const names = new Set<string>();
    for (const v of td.volumes) {
      names.add(v.name);
      const dvc = v.dockerVolumeConfiguration;
      expect(dvc.driver).toBe('tsfs');
      expect(['task', 'shared']).toContain(dvc.scope);
      // ECS accepts autoprovision only with the shared scope.
      if (dvc.autoprovision !== undefined) expect(dvc.scope).toBe('shared');
      expect(Object.values(dvc.driverOpts).every((x) => typeof x === 'string')).toBe(true);
      expect(() => parseOptions(dvc.driverOpts)).not.toThrow();
    }
    for (const c of td.containerDefinitions) for (const m of c.mountPoints ?? []) expect(names).toContain(m.sourceVolume);
  });

  it('AWS Batch: the job definition mounts the host path that the user data links to a tsfs volume', () => {
    const jd = json('docs/examples/aws-batch-job-definition.json');
    expect(jd.type).toBe('container');
    const vols = jd.containerProperties.volumes as Array<{ name: string; host: { sourcePath: string } }>;
    for (const m of jd.containerProperties.mountPoints) expect(vols.map((v) => v.name)).toContain(m.sourceVolume);
    const userData = read('docs/examples/batch-user-data.sh');
    for (const v of vols) expect(userData).toContain(` ${v.host.sourcePath}\n`);
    const creates = volumeCreateOptions(userData);
    expect(creates.length).toBeGreaterThan(0);
    for (const opts of creates) expect(() => parseOptions(opts)).not.toThrow();
    const submit = json('docs/examples/aws-batch-submit-job.json');
    expect(submit.jobDefinition).toBe(jd.jobDefinitionName);
    expect(submit.arrayProperties.size).toBeGreaterThan(1);
  });

  it('Compose: driver tsfs with driver_opts tsfs accepts', () => {
    const text = read('docs/examples/compose.yml');
    expect(text).toMatch(/^\s+driver: tsfs$/m);
    const block = text.slice(text.indexOf('driver_opts:'));
    const opts = Object.fromEntries([...block.matchAll(/^\s{6}(\w+):\s*"([^"]*)"\s*$/gm)].map((m) => [m[1], m[2]]));
    expect(Object.keys(opts)).toContain('sshcmd');
    expect(() => parseOptions(opts)).not.toThrow();
  });
});

/** DAEMON_ENV as a command line's `NAME=value` words. */
const settings = Object.entries(DAEMON_ENV).map(([k, v]) => `${k}=${v}`);

describe('node flags and environment (src/node-flags.ts): every shipped launcher passes them', () => {
  it('the Dockerfile\'s CMD and package.json\'s start script', () => {
    const cmd = read('Dockerfile').match(/^CMD (\[.*\])$/m);
    expect(JSON.parse(cmd![1])).toEqual(['/usr/bin/env', ...settings, 'node', ...DAEMON_NODE_FLAGS, '/app/dist/main.js']);
    expect(json('package.json').scripts.start).toBe([...settings, 'node', ...DAEMON_NODE_FLAGS, 'dist/main.js'].join(' '));
  });

  it('a daemon started without them says what is missing', () => {
    expect(missingDaemonEnv({})).toEqual(settings);
    expect(missingDaemonEnv({ ...DAEMON_ENV })).toEqual([]);
  });
});

describe('config.json (the managed plugin)', () => {
  const cfg = json('config.json');
  const defaults = loadConfig({});

  it('runs the daemon as a volume driver on the socket the daemon listens on', () => {
    // The environment on the command line: dockerd keeps an installed plugin's env through an upgrade.
    expect(cfg.entrypoint).toEqual(['/usr/bin/env', ...settings, 'node', ...DAEMON_NODE_FLAGS, '/app/dist/main.js']);
    expect(cfg.interface.types).toEqual(['docker.volumedriver/1.0']);
    expect(cfg.interface.socket).toBe(basename(defaults.socket));
    expect(defaults.socket).toBe(`/run/docker/plugins/${cfg.interface.socket}`);
  });

  it('propagates the daemon\'s mount root, and mounts state and keys where the daemon reads them', () => {
    expect(cfg.propagatedMount).toBe(defaults.mountRoot);
    const mount = (name: string) => cfg.mounts.find((m: { name: string }) => m.name === name);
    expect(mount('state')).toMatchObject({ destination: defaults.stateDir, type: 'bind', settable: ['source'] });
    expect(mount('sshkey')).toMatchObject({ destination: defaults.sshDir, type: 'bind', settable: ['source'] });
    // Docker's own plugin directory is not a place for user state.
    expect(mount('state').source.startsWith('/var/lib/docker')).toBe(false);
  });

  it('asks only for FUSE: CAP_SYS_ADMIN and /dev/fuse, host network for the SSH servers', () => {
    expect(cfg.linux.capabilities).toEqual(['CAP_SYS_ADMIN']);
    expect(cfg.linux.devices).toEqual([{ path: '/dev/fuse' }]);
    expect(cfg.network.type).toBe('host');
  });

  it('has settable LOG_LEVEL, LOG_FORMAT and DEBUG whose defaults the daemon accepts', () => {
    const env = Object.fromEntries(cfg.env.map((e: { name: string; value: string; settable: string[] }) => {
      expect(e.settable).toEqual(['value']);
      return [e.name, e.value];
    }));
    expect(Object.keys(env).sort()).toEqual(['DEBUG', 'LOG_FORMAT', 'LOG_LEVEL']);
    expect(loadConfig(env).logLevel).toBe('info');
    expect(loadConfig(env).logFormat).toBe('pretty');
    // vieux/sshfs users run `docker plugin set ... DEBUG=1`: a LOG_LEVEL
    // default in config.json would silently win over it.
    expect(loadConfig({ ...env, DEBUG: '1' }).logLevel).toBe('debug');
  });
});
