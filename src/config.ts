// Daemon settings from the environment (the plugin's config.json `Env`, or
// `docker plugin set`). Parsed once at start. A bad value never stops the
// daemon: dockerd would then report only "dial unix ... no such file" from
// `docker plugin enable`, naming neither the setting nor the value. Each bad
// one falls back to its default and becomes a warning, which main() logs and
// the driver shows in every volume's Status until the setting is fixed.
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
  /** One line per bad setting that was replaced by its default: names the variable, the value and the default used. */
  warnings: string[];
}

type Env = z.infer<typeof EnvSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Docker passes declared-but-unset variables as empty strings: treat as unset.
  const present: Record<string, string> = Object.fromEntries(
    Object.entries(env).filter((kv): kv is [string, string] => kv[1] !== undefined && kv[1] !== ''),
  );
  const warnings: string[] = [];
  const r = EnvSchema.safeParse(present);
  if (!r.success) {
    // Drop each bad variable so its default applies, and say so.
    for (const key of new Set(r.error.issues.map((i) => String(i.path[0])))) {
      const msg = r.error.issues.find((i) => i.path[0] === key)?.message ?? 'invalid';
      const shown = JSON.stringify(present[key]!.length > 64 ? present[key]!.slice(0, 64) + '...' : present[key]);
      const dflt = (EnvSchema.shape as Record<string, z.ZodType>)[key]!.parse(undefined);
      warnings.push(`${key}=${shown} is not valid (${msg}): using the default ${JSON.stringify(dflt)}; fix it with docker plugin set <alias> ${key}=...`);
      delete present[key];
    }
  }
  const e: Env = EnvSchema.parse(present);
  const debug = e.DEBUG === '1' || e.DEBUG === 'true';
  return {
    socket: e.TSFS_SOCKET,
    stateDir: e.TSFS_STATE_DIR,
    mountRoot: e.TSFS_MOUNT_ROOT,
    sshDir: e.TSFS_SSH_DIR,
    logLevel: debug && present.LOG_LEVEL === undefined ? 'debug' : e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    warnings,
  };
}
