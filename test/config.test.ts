import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config';

describe('daemon settings from the environment', () => {
  it('defaults to the plugin paths', () => {
    expect(loadConfig({})).toEqual({
      socket: '/run/docker/plugins/tsfs.sock', stateDir: '/mnt/state', mountRoot: '/mnt/volumes', sshDir: '/root/.ssh', logLevel: 'info', logFormat: 'pretty',
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
    [{ LOG_LEVEL: 'verbose' }, /LOG_LEVEL: LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent/],
    [{ TSFS_SOCKET: 'tsfs.sock' }, /TSFS_SOCKET must be an absolute path/],
    [{ TSFS_MOUNT_ROOT: './v' }, /TSFS_MOUNT_ROOT must be an absolute path/],
    [{ DEBUG: 'yes please' }, /DEBUG must be 1 or 0/],
    [{ LOG_FORMAT: 'logfmt' }, /LOG_FORMAT: LOG_FORMAT must be one of pretty, json/],
  ])('%j is a clear startup error', (env, want) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(want);
  });
});
