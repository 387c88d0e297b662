import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config';

describe('daemon settings from the environment', () => {
  it('defaults to the plugin paths', () => {
    expect(loadConfig({})).toEqual({
      socket: '/run/docker/plugins/tsfs.sock', stateDir: '/mnt/state', mountRoot: '/mnt/volumes', sshDir: '/root/.ssh', logLevel: 'info', logFormat: 'pretty', warnings: [],
    });
  });
  it('treats empty values as unset (Docker passes declared env vars as "")', () => {
    expect(loadConfig({ LOG_LEVEL: '', TSFS_STATE_DIR: '' }).stateDir).toBe('/mnt/state');
  });
  it("DEBUG=1 is vieux's alias for debug, unless LOG_LEVEL says otherwise", () => {
    expect(loadConfig({ DEBUG: '1' }).logLevel).toBe('debug');
    expect(loadConfig({ DEBUG: '1', LOG_LEVEL: 'warn' }).logLevel).toBe('warn');
    expect(loadConfig({ LOG_LEVEL: 'DEBUG' }).logLevel).toBe('debug');
  });
  it.each([
    [{ LOG_LEVEL: 'verbose' }, 'logLevel', 'info', 'LOG_LEVEL="verbose" is not valid (LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent): using the default "info"'],
    [{ TSFS_SOCKET: 'tsfs.sock' }, 'socket', '/run/docker/plugins/tsfs.sock', 'TSFS_SOCKET="tsfs.sock" is not valid (TSFS_SOCKET must be an absolute path)'],
    [{ TSFS_MOUNT_ROOT: './v' }, 'mountRoot', '/mnt/volumes', 'TSFS_MOUNT_ROOT="./v" is not valid (TSFS_MOUNT_ROOT must be an absolute path)'],
    [{ DEBUG: 'yes please' }, 'logLevel', 'info', 'DEBUG="yes please" is not valid (DEBUG must be 1 or 0): using the default ""'],
    [{ LOG_FORMAT: 'logfmt' }, 'logFormat', 'pretty', 'LOG_FORMAT="logfmt" is not valid (LOG_FORMAT must be one of pretty, json): using the default "pretty"'],
  ] as const)('%j starts with the default and a warning naming the value', (env, key, dflt, warning) => {
    const c = loadConfig(env);
    expect(c[key]).toBe(dflt);
    expect(c.warnings).toHaveLength(1);
    expect(c.warnings[0]).toContain(warning);
    expect(c.warnings[0]).toContain(`docker plugin set <alias> ${Object.keys(env)[0]}=`);
  });
  it('a bad value leaves the good ones alone', () => {
    const c = loadConfig({ LOG_LEVEL: 'loud', DEBUG: '1', TSFS_STATE_DIR: '/srv/state' });
    expect(c).toMatchObject({ logLevel: 'debug', stateDir: '/srv/state' });
    expect(c.warnings.map((w) => w.split('=')[0])).toEqual(['LOG_LEVEL']);
  });
});
