// Daemon settings from the environment (the plugin's config.json `Env`, or
// `docker plugin set`). Parsed once at start; a bad value stops the daemon
// with a message naming the variable, before anything listens.
import { isAbsolute } from 'node:path';
import { z } from 'zod';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const FORMATS = ['pretty', 'json'] as const;
export type LogFormat = (typeof FORMATS)[number];

const absPath = (name: string) =>
  z.string().refine(isAbsolute, { message: `${name} must be an absolute path` }).refine((p) => !p.includes('\0'), {
    message: `${name} must not contain NUL`,
  });

const EnvSchema = z.object({
  TSFS_SOCKET: absPath('TSFS_SOCKET').default('/run/docker/plugins/tsfs.sock'),
  TSFS_STATE_DIR: absPath('TSFS_STATE_DIR').default('/mnt/state'),
  TSFS_MOUNT_ROOT: absPath('TSFS_MOUNT_ROOT').default('/mnt/volumes'),
  // Where the default keys (id_ed25519, id_ecdsa, id_rsa) are looked for;
  // the plugin's config.json mounts sshkey.source here.
  TSFS_SSH_DIR: absPath('TSFS_SSH_DIR').default('/root/.ssh'),
  LOG_LEVEL: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(LEVELS, { message: `LOG_LEVEL must be one of ${LEVELS.join(', ')}` }))
    .default('info'),
  // pretty: `LEVEL msg key=value ...`, one line, no time (dockerd and
  // journald stamp each line); json: pino's lines, for log shippers. Why
  // pretty is the default: docs/troubleshooting.md "Where the logs are".
  LOG_FORMAT: z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(FORMATS, { message: `LOG_FORMAT must be one of ${FORMATS.join(', ')}` }))
    .default('pretty'),
  // vieux/sshfs's switch for debug logging; kept so old `docker plugin set DEBUG=1` still works.
  DEBUG: z.enum(['', '0', '1', 'true', 'false'], { message: 'DEBUG must be 1 or 0' }).default(''),
});

export interface Config {
  socket: string;
  stateDir: string;
  mountRoot: string;
  sshDir: string;
  logLevel: (typeof LEVELS)[number];
  logFormat: LogFormat;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Docker passes declared-but-unset variables as empty strings: treat as unset.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const r = EnvSchema.safeParse(present);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid tsfs settings: ${lines.join('; ')}`);
  }
  const e = r.data;
  const debug = e.DEBUG === '1' || e.DEBUG === 'true';
  return {
    socket: e.TSFS_SOCKET,
    stateDir: e.TSFS_STATE_DIR,
    mountRoot: e.TSFS_MOUNT_ROOT,
    sshDir: e.TSFS_SSH_DIR,
    logLevel: debug && present.LOG_LEVEL === undefined ? 'debug' : e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
  };
}
