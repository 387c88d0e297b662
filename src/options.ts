// Volume options (`docker volume create -o k=v`) -> a typed VolumeSpec.
// Nothing from Opts ever reaches a command line: every key is matched against
// a fixed table, unknown keys are refused with the list of valid ones, and
// keys that would run a program are refused as unsafe. vieux/sshfs's option
// lines keep working or get an error naming the tsfs equivalent.
import { readFile, realpath } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { z } from 'zod';
import { TsfsError } from './errors';
import type { SshTarget } from './sftp/target';

export const MAX_VALUE_BYTES = 4096;
const MAX_OPTIONS = 64;

/**
 * What a volume's options mean, derived from them at Create and again at
 * every daemon start (the state file keeps the options the user gave, not
 * this), so a default or a note changed in a new version applies to old
 * volumes and never makes an identical Create "differ".
 */
export interface VolumeSpec {
  host: string;
  port: number;
  username: string;
  remotePath: string;
  password?: string;
  passwordFile?: string;
  identityFile?: string;
  passphrase?: string;
  hostKey?: string;
  strictHostKeyChecking: 'yes' | 'accept-new' | 'no';
  uid?: number;
  gid?: number;
  umask?: number;
  allowOther: boolean;
  readOnly: boolean;
  mkdir: boolean;
  check: boolean;
  cacheTimeout: number;
  reconnectTimeout: number;
  serverAliveInterval: number;
  serverAliveCountMax: number;
  connectTimeout: number;
  /** Bastion (`ProxyJump=[user@]host[:port]`) the connection goes through. */
  proxyJump?: { host: string; port: number; username: string };
  /** Key for the bastion when it is not the store's. */
  proxyJumpIdentityFile?: string;
  /** Pinned bastion key fingerprint. */
  proxyJumpHostKey?: string;
  /** Options accepted for compatibility but without effect, shown in Status. */
  notes: string[];
}

/** Values of the options a user did not give. */
export const DEFAULTS = {
  port: 22,
  strictHostKeyChecking: 'accept-new',
  allowOther: true,
  readOnly: false,
  mkdir: false,
  check: true,
  cacheTimeout: 20,
  reconnectTimeout: 60,
  serverAliveInterval: 15,
  serverAliveCountMax: 3,
  connectTimeout: 15,
} satisfies Partial<VolumeSpec>;

/**
 * The longest a silently dead link (no RST, no FIN: a NAT entry dropped, a
 * cable pulled) may go unnoticed: ServerAliveInterval x ServerAliveCountMax.
 * FUSE data operations have no timeout of their own (they wait for the
 * reconnect bound), so this is how long a write can hang on such a link.
 */
export const MAX_DEAD_LINK_SECONDS = 600;

/** Docker's own rule for volume names (daemon/names), bounded like a file name; also keeps <root>/<name> inside the root. */
export const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
export const MAX_VOLUME_NAME = 255;
export const isVolumeName = (n: string) => n.length <= MAX_VOLUME_NAME && VOLUME_NAME.test(n);

/** A volume option the user must fix. */
export class OptionsError extends TsfsError {
  constructor(message: string) {
    super(message, 'options');
  }
}

// Keys are matched case-insensitively with `_` and `-` ignored, the way
// ssh_config treats its keywords: IdentityFile, identity_file, identityfile.
const norm = (k: string) => k.toLowerCase().replace(/[_-]/g, '');

/** Canonical option names, as documented in docs/options.md. */
export const VALID_OPTIONS = [
  'sshcmd', 'port', 'password', 'password_file', 'IdentityFile', 'passphrase', 'host_key',
  'StrictHostKeyChecking', 'uid', 'gid', 'umask', 'allow_other', 'ro', 'rw', 'mkdir', 'check',
  'cache_timeout', 'reconnect_timeout', 'ServerAliveInterval', 'ServerAliveCountMax', 'ConnectTimeout',
  'ProxyJump', 'ProxyJumpIdentityFile', 'ProxyJumpHostKey',
  'reconnect', 'Compression', 'cache', 'workaround', 'debug',
] as const;
const CANONICAL = new Map<string, string>(VALID_OPTIONS.map((k) => [norm(k), k]));

const SECRET = new Set(['password', 'passphrase']);

const UNSAFE: Record<string, string> = {
  sshcommand: 'it names a program to run (to reach the store through a bastion, use -o ProxyJump=[user@]bastion[:port] instead of ssh -J)',
  proxycommand: 'it runs a shell command to reach the host (for ssh -W / nc through a bastion, use -o ProxyJump=[user@]bastion[:port])',
  localcommand: 'it runs a command on the plugin host',
  permitlocalcommand: 'it enables running local commands',
  remotecommand: 'it runs a command on the server instead of SFTP',
  knownhostscommand: 'it runs a command to find host keys (use -o host_key=SHA256:... instead)',
  sftpserver: 'it names a program to run on the server',
  directport: 'it bypasses ssh and its authentication (use -o port= for the ssh port)',
  slave: 'it runs sftp over the plugin\'s stdin/stdout',
  passive: 'it runs sftp over the plugin\'s stdin/stdout',
  controlpath: 'it shares connections through a socket other programs can use',
  controlmaster: 'it shares connections through a socket other programs can use',
  localforward: 'it opens network ports', remoteforward: 'it opens network ports', dynamicforward: 'it opens network ports',
};

const UNSUPPORTED: Record<string, string> = {
  followsymlinks: 'tsfs shows symlinks as symlinks; point sshcmd at the real directory instead',
  idmap: 'use -o uid=<n> -o gid=<n> to choose the owner files are shown with',
  allowroot: 'use -o allow_other (the default), which lets every user, root included, use the mount',
  userknownhostsfile: 'pin the server key with -o host_key=SHA256:... (ssh-keygen -lf <host key>.pub prints it)',
  ciphers: 'tsfs negotiates AES-GCM/ChaCha20 itself',
  sshfssync: 'tsfs writes through to the server already',
};

// ---- value parsers ---------------------------------------------------------

const TRUE = new Set(['', 'yes', 'true', '1', 'on']);
const FALSE = new Set(['no', 'false', '0', 'off']);
const bool = z.string().transform((s, ctx) => {
  const v = s.trim().toLowerCase();
  if (TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  ctx.addIssue({ code: 'custom', message: 'must be yes/no, true/false, 1/0, on/off, or empty (= yes)' });
  return z.NEVER;
});
const int = (min: number, max: number, unit = '') =>
  z.string().transform((s, ctx) => {
    const t = s.trim();
    const n = /^\d{1,10}$/.test(t) ? Number(t) : NaN;
    if (!(n >= min && n <= max)) {
      ctx.addIssue({ code: 'custom', message: `must be a whole number from ${min} to ${max}${unit}` });
      return z.NEVER;
    }
    return n;
  });
const seconds = (max: number, min = 0, why = '') =>
  z.string().transform((s, ctx) => {
    const t = s.trim();
    const n = /^\d{1,6}(\.\d{1,3})?$/.test(t) ? Number(t) : NaN;
    if (!(n >= min && n <= max)) {
      ctx.addIssue({ code: 'custom', message: `must be a number of seconds from ${min} to ${max}${why}` });
      return z.NEVER;
    }
    return n;
  });
const octal = z.string().transform((s, ctx) => {
  const t = s.trim();
  if (!/^[0-7]{1,4}$/.test(t) || parseInt(t, 8) > 0o777) {
    ctx.addIssue({ code: 'custom', message: 'must be octal permission bits, e.g. 022 or 0077' });
    return z.NEVER;
  }
  return parseInt(t, 8);
});
const keyPath = z.string().refine((p) => isAbsolute(p) && !p.split('/').includes('..'), {
  message: 'must be an absolute path inside the plugin, e.g. /root/.ssh/id_ed25519 (sshkey.source is mounted at /root/.ssh)',
});

export interface SshCmd {
  username: string;
  host: string;
  remotePath: string;
}

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/;
const USERNAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$/;

/** `[user@]host:[path]`, `[user@][v6addr]:[path]`; user defaults to root, empty path = login dir. */
export function parseSshcmd(s: string): SshCmd | string {
  const shape = 'sshcmd must look like [user@]host:[path], e.g. sshcmd=user@files.example:/srv/data or sshcmd=[::1]:/data';
  let rest = s;
  let username = 'root';
  // The user ends at the last '@' before the host part (paths may contain '@').
  const hostStart = rest.search(/[:[]/);
  const at = rest.lastIndexOf('@', hostStart === -1 ? rest.length : hostStart);
  if (at > 0) {
    username = rest.slice(0, at);
    rest = rest.slice(at + 1);
  } else if (at === 0) return `${shape} (the user before @ is empty)`;
  if (!USERNAME.test(username)) return `${shape} (user "${username.slice(0, 64)}" is not a valid user name)`;
  let host: string;
  if (rest.startsWith('[')) {
    const end = rest.indexOf(']');
    if (end < 0 || rest[end + 1] !== ':') return shape;
    host = rest.slice(1, end);
    if (!/^[0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?$/.test(host) || !host.includes(':')) return `${shape} ("${host.slice(0, 64)}" is not an IPv6 address)`;
    rest = rest.slice(end + 2);
  } else {
    const colon = rest.indexOf(':');
    if (colon < 0) return `${shape} (the ":" after the host is missing; use host: for the login directory)`;
    host = rest.slice(0, colon);
    if (!HOSTNAME.test(host)) return `${shape} (host "${host.slice(0, 64)}" is not a valid host name)`;
    rest = rest.slice(colon + 1);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(rest)) return `${shape} (the path contains control characters)`;
  return { username, host, remotePath: rest };
}

const sshcmd = z.string().transform((s, ctx) => {
  const r = parseSshcmd(s.trim());
  if (typeof r === 'string') {
    ctx.addIssue({ code: 'custom', message: r });
    return z.NEVER;
  }
  return r;
});

const FP = /^SHA256:[A-Za-z0-9+/]{43}$/;

const fingerprint = z
  .string()
  .transform((s) => s.trim())
  .refine((s) => FP.test(s), { message: 'must be a SHA256 fingerprint as `ssh-keygen -lf key.pub` prints it, e.g. SHA256:' + 'x'.repeat(43) });

/** `[user@]host[:port]`, as ssh -J takes one hop; user defaults to sshcmd's. */
const proxyJump = z.string().transform((s, ctx) => {
  const shape = 'must look like [user@]host[:port], one bastion, e.g. ProxyJump=jump@bastion.example:22';
  const m = /^(?:([^@\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[^:@\s,]+)(?::(\d{1,5}))?$/.exec(s.trim());
  const port = m?.[3] !== undefined ? Number(m[3]) : 22;
  const host = m?.[2]?.replace(/^\[(.*)\]$/, '$1');
  if (!m || !host || (!HOSTNAME.test(host) && !/^[0-9A-Fa-f:.]+$/.test(host)) || !(port >= 1 && port <= 65535) || (m[1] !== undefined && !USERNAME.test(m[1]))) {
    ctx.addIssue({ code: 'custom', message: s.includes(',') ? `${shape} (tsfs takes one hop, not a comma-separated chain)` : shape });
    return z.NEVER;
  }
  return { host, port, ...(m[1] !== undefined && { username: m[1] }) };
});

// One entry per canonical option; every value arrives as a string.
const OptsSchema = z
  .object({
    sshcmd: sshcmd,
    port: int(1, 65535).optional(),
    password: z.string().min(1, 'must not be empty').optional(),
    password_file: keyPath.optional(),
    IdentityFile: keyPath.optional(),
    passphrase: z.string().optional(),
    host_key: fingerprint.optional(),
    ProxyJump: proxyJump.optional(),
    ProxyJumpIdentityFile: keyPath.optional(),
    ProxyJumpHostKey: fingerprint.optional(),
    StrictHostKeyChecking: z
      .string()
      .transform((s) => s.trim().toLowerCase())
      .transform((s) => (s === 'off' ? 'no' : s))
      .pipe(z.enum(['yes', 'accept-new', 'no'], { message: 'must be yes, accept-new or no' }))
      .optional(),
    uid: int(0, 4294967294).optional(),
    gid: int(0, 4294967294).optional(),
    umask: octal.optional(),
    allow_other: bool.optional(),
    ro: bool.optional(),
    rw: bool.optional(),
    mkdir: bool.optional(),
    check: bool.optional(),
    cache_timeout: seconds(86400).optional(),
    reconnect_timeout: seconds(86400).optional(),
    // 0 would mean no keepalives (OpenSSH's meaning): a silently dead link would never be noticed.
    ServerAliveInterval: seconds(MAX_DEAD_LINK_SECONDS, 1, ' (0, no keepalives, would leave a silently dead link hanging every operation)').optional(),
    ServerAliveCountMax: int(1, 1000).optional(),
    // 0 would time every connection out before its first byte: the volume could never mount.
    ConnectTimeout: seconds(600, 1, ' (0 would time out every connection at once)').optional(),
    reconnect: bool.optional(),
    Compression: bool.optional(),
    cache: bool.optional(),
    workaround: z.string().optional(),
    debug: bool.optional(),
  })
  .strict();

// Options whose values may legitimately contain commas (and some are secret).
const FREE_TEXT = new Set(['sshcmd', 'password', 'passphrase', 'passwordfile', 'identityfile', 'workaround', 'proxyjump']);

/** sshfs takes `-o uid=1,gid=2`; Docker passes that as the ONE option uid="1,gid=2". Returns the joined text, if it is that. */
function commaJoined(key: string, value: unknown): string | undefined {
  if (key.includes(',')) return key; // `-o allow_other,reconnect`; the value is not shown (it could be a secret)
  if (typeof value === 'string' && !FREE_TEXT.has(norm(key)) && /,\s*[A-Za-z_]+(=|,|$)/.test(value)) return `${key}=${value}`;
  return undefined;
}

/**
 * Validate Docker's `Opts` (untrusted: any JSON) into a VolumeSpec.
 * Throws OptionsError with a message for the user; secret values are never echoed.
 */
export function parseOptions(opts: unknown): VolumeSpec {
  if (opts === undefined || opts === null) opts = {};
  if (typeof opts !== 'object' || Array.isArray(opts)) throw new OptionsError('Opts must be an object of option=value strings');
  const entries = Object.entries(opts as Record<string, unknown>);
  if (entries.length > MAX_OPTIONS) throw new OptionsError(`too many options (${entries.length}; at most ${MAX_OPTIONS})`);
  const canon: Record<string, string> = {};
  const given: Record<string, string> = {};
  for (const [key, value] of entries) {
    const shownKey = key.length > 64 ? key.slice(0, 64) + '...' : key;
    const joined = commaJoined(key, value);
    if (joined) {
      const parts = joined.split(',').map((p) => p.trim()).filter(Boolean).slice(0, 8);
      throw new OptionsError(
        `option "${joined.slice(0, 64)}" is sshfs's comma-joined form, which Docker passes as one option: give each with its own -o (${parts.map((p) => `-o ${p}`).join(' ')})`,
      );
    }
    const n = norm(key);
    if (UNSAFE[n]) throw new OptionsError(`option ${shownKey} is refused as unsafe: ${UNSAFE[n]}. tsfs speaks SFTP itself and never runs commands`);
    if (UNSUPPORTED[n]) throw new OptionsError(`option ${shownKey} is not supported: ${UNSUPPORTED[n]}`);
    const c = CANONICAL.get(n);
    if (!c) throw new OptionsError(`unknown option ${JSON.stringify(shownKey)}; valid options: ${VALID_OPTIONS.join(', ')} (see docs/options.md)`);
    if (typeof value !== 'string') throw new OptionsError(`option ${c} must be a string value, got ${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value}`);
    if (Buffer.byteLength(value) > MAX_VALUE_BYTES) throw new OptionsError(`option ${c} is too long (more than ${MAX_VALUE_BYTES} bytes)`);
    if (value.includes('\0')) throw new OptionsError(`option ${c} contains a NUL character`);
    if (c in canon) throw new OptionsError(`option ${c} is given twice (as ${given[c]} and ${shownKey})`);
    canon[c] = value;
    given[c] = shownKey;
  }
  if (canon.sshcmd === undefined) {
    throw new OptionsError('missing required option sshcmd: docker volume create -d <driver> -o sshcmd=user@host:/path [-o IdentityFile=/root/.ssh/key | -o password=...] <name>');
  }
  const r = OptsSchema.safeParse(canon);
  if (!r.success) {
    const msgs = r.error.issues.map((i) => {
      const c = String(i.path[0] ?? '');
      const shown = SECRET.has(c) || c === '' || c === 'sshcmd' ? '' : ` (got ${JSON.stringify(canon[c]?.slice(0, 64))})`;
      return `option ${given[c] ?? c}: ${i.message}${shown}`;
    });
    throw new OptionsError(msgs.join('; '));
  }
  const o = r.data;
  const notes: string[] = [];
  if (o.Compression !== undefined) notes.push('Compression is ignored: tsfs does not compress (it costs CPU on fast links)');
  if (o.reconnect === false) notes.push('reconnect=no is ignored: tsfs always reconnects');
  if (o.workaround !== undefined) notes.push('workaround is ignored: tsfs uses the server\'s posix-rename and fsync extensions when offered');
  if (o.debug) notes.push('debug is ignored per volume: set LOG_LEVEL=debug on the plugin (docker plugin set <plugin> LOG_LEVEL=debug)');
  if (o.ro !== undefined && o.rw !== undefined && o.ro === o.rw) throw new OptionsError('options ro and rw contradict each other');
  if (o.password !== undefined && o.password_file !== undefined) throw new OptionsError('give either password or password_file, not both');
  const strict = o.StrictHostKeyChecking ?? DEFAULTS.strictHostKeyChecking;
  if (!o.ProxyJump && (o.ProxyJumpIdentityFile !== undefined || o.ProxyJumpHostKey !== undefined)) {
    throw new OptionsError('ProxyJumpIdentityFile and ProxyJumpHostKey need -o ProxyJump=[user@]bastion[:port]');
  }
  if (strict === 'yes' && o.ProxyJump && !o.ProxyJumpHostKey) {
    throw new OptionsError('StrictHostKeyChecking=yes needs the bastion\'s key pinned too: add -o ProxyJumpHostKey=SHA256:... (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the bastion prints it)');
  }
  if (strict === 'yes' && !o.host_key) {
    throw new OptionsError('StrictHostKeyChecking=yes needs the server key pinned: add -o host_key=SHA256:... (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the server prints it), or use StrictHostKeyChecking=accept-new to pin the key seen at create');
  }
  const serverAliveInterval = o.ServerAliveInterval ?? DEFAULTS.serverAliveInterval;
  const serverAliveCountMax = o.ServerAliveCountMax ?? DEFAULTS.serverAliveCountMax;
  if (serverAliveInterval * serverAliveCountMax > MAX_DEAD_LINK_SECONDS) {
    throw new OptionsError(
      `ServerAliveInterval x ServerAliveCountMax is ${serverAliveInterval * serverAliveCountMax} s: a dead link would hang writes that long; keep it at most ${MAX_DEAD_LINK_SECONDS} s`,
    );
  }
  return {
    host: o.sshcmd.host,
    port: o.port ?? DEFAULTS.port,
    username: o.sshcmd.username,
    remotePath: o.sshcmd.remotePath,
    ...(o.password !== undefined && { password: o.password }),
    ...(o.password_file !== undefined && { passwordFile: o.password_file }),
    ...(o.IdentityFile !== undefined && { identityFile: o.IdentityFile }),
    ...(o.passphrase !== undefined && { passphrase: o.passphrase }),
    ...(o.host_key !== undefined && { hostKey: o.host_key }),
    strictHostKeyChecking: strict,
    ...(o.uid !== undefined && { uid: o.uid }),
    ...(o.gid !== undefined && { gid: o.gid }),
    ...(o.umask !== undefined && { umask: o.umask }),
    allowOther: o.allow_other ?? DEFAULTS.allowOther,
    readOnly: o.ro ?? (o.rw === undefined ? DEFAULTS.readOnly : !o.rw),
    mkdir: o.mkdir ?? DEFAULTS.mkdir,
    check: o.check ?? DEFAULTS.check,
    // sshfs's cache=no disables attribute/dir caching; map it onto the timeout.
    cacheTimeout: o.cache === false ? 0 : (o.cache_timeout ?? DEFAULTS.cacheTimeout),
    reconnectTimeout: o.reconnect_timeout ?? DEFAULTS.reconnectTimeout,
    serverAliveInterval,
    serverAliveCountMax,
    connectTimeout: o.ConnectTimeout ?? DEFAULTS.connectTimeout,
    ...(o.ProxyJump && { proxyJump: { ...o.ProxyJump, username: o.ProxyJump.username ?? o.sshcmd.username } }),
    ...(o.ProxyJumpIdentityFile !== undefined && { proxyJumpIdentityFile: o.ProxyJumpIdentityFile }),
    ...(o.ProxyJumpHostKey !== undefined && { proxyJumpHostKey: o.ProxyJumpHostKey }),
    notes,
  };
}

// Spec fields back to the option a user typed, for messages.
const OPTION_OF: Record<keyof VolumeSpec, string> = {
  host: 'sshcmd', username: 'sshcmd', remotePath: 'sshcmd', port: 'port', password: 'password', passwordFile: 'password_file',
  identityFile: 'IdentityFile', passphrase: 'passphrase', hostKey: 'host_key', strictHostKeyChecking: 'StrictHostKeyChecking',
  uid: 'uid', gid: 'gid', umask: 'umask', allowOther: 'allow_other', readOnly: 'ro', mkdir: 'mkdir', check: 'check',
  cacheTimeout: 'cache_timeout', reconnectTimeout: 'reconnect_timeout', serverAliveInterval: 'ServerAliveInterval',
  serverAliveCountMax: 'ServerAliveCountMax', connectTimeout: 'ConnectTimeout', notes: 'Compression/workaround/debug/reconnect',
  proxyJump: 'ProxyJump', proxyJumpIdentityFile: 'ProxyJumpIdentityFile', proxyJumpHostKey: 'ProxyJumpHostKey',
};

/**
 * Option names whose settings differ between two specs (never their values:
 * some are secrets). Notes are not compared: those options have no effect.
 */
export function specDifferences(a: VolumeSpec, b: VolumeSpec): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)].filter((k) => k !== 'notes')) as Set<keyof VolumeSpec>;
  const differ = [...keys].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
  return [...new Set(differ.map((k) => OPTION_OF[k] ?? k))].sort();
}

/** `user@host:port:/path`, for Status and logs; carries no secret. */
export function describeRemote(s: Pick<VolumeSpec, 'username' | 'host' | 'port' | 'remotePath'>): string {
  const host = s.host.includes(':') ? `[${s.host}]` : s.host;
  return `${s.username}@${host}:${s.port}:${s.remotePath}`;
}

export interface TargetContext {
  /** Directory searched for default keys (TSFS_SSH_DIR). */
  sshDir: string;
  /** The daemon's state directory (TSFS_STATE_DIR): never read as a key or password file. */
  stateDir: string;
  /** Host key pinned at Create (accept-new), used when the spec has none. */
  pinnedHostKey?: string;
  /** The bastion's key pinned the same way. */
  pinnedJumpHostKey?: string;
}

async function readKeyFile(path: string, option: string, ctx: TargetContext): Promise<Buffer> {
  return readFile(path).catch((e: NodeJS.ErrnoException) => {
    throw new OptionsError(`cannot read ${option} ${path} (${e.code ?? e.message}): put the key in the directory mounted as sshkey.source (${ctx.sshDir} in the plugin)`);
  });
}

// OpenSSH's default identity order.
const DEFAULT_KEYS = ['id_ed25519', 'id_ecdsa', 'id_rsa'];

/**
 * The SshTarget for a spec. Key material and password_file are read here, at
 * each Create/Mount, so they live only in memory and never in the state file.
 */
export async function toSshTarget(spec: VolumeSpec, ctx: TargetContext): Promise<SshTarget> {
  await refuseStateFiles(spec, ctx.stateDir);
  let privateKey: Buffer | undefined;
  let identityFile: string | undefined;
  if (spec.identityFile) {
    identityFile = spec.identityFile;
    privateKey = await readKeyFile(spec.identityFile, 'IdentityFile', ctx);
  } else {
    // Loaded here, not at start: ssh2 costs ~150 ms of the daemon's first second.
    const { utils } = await import('ssh2');
    for (const name of DEFAULT_KEYS) {
      const p = join(ctx.sshDir, name);
      const k = await readFile(p).catch(() => undefined);
      // A default key that cannot be used (garbage, wrong passphrase) is
      // skipped, as ssh does, so that e.g. -o password= still works.
      if (k && !(utils.parseKey(k, spec.passphrase) instanceof Error)) {
        privateKey = k;
        identityFile = p;
        break;
      }
    }
  }
  let password = spec.password;
  if (spec.passwordFile) {
    password = await readFile(spec.passwordFile, 'utf8').then(
      (s) => s.replace(/\r?\n$/, ''),
      (e: NodeJS.ErrnoException) => {
        throw new OptionsError(`cannot read password_file ${spec.passwordFile} (${e.code ?? e.message}): the file must be readable inside the plugin, e.g. under ${ctx.sshDir}`);
      },
    );
  }
  const hostKey = spec.hostKey ?? ctx.pinnedHostKey;
  const common = {
    strictHostKeyChecking: spec.strictHostKeyChecking,
    keepaliveInterval: spec.serverAliveInterval * 1000,
    keepaliveCountMax: spec.serverAliveCountMax,
    connectTimeout: spec.connectTimeout * 1000,
  };
  let jump: SshTarget | undefined;
  if (spec.proxyJump) {
    // The bastion gets a key only, never the store's password: a password is for the host it was given for.
    const jumpKeyFile = spec.proxyJumpIdentityFile ?? identityFile;
    const jumpKey = spec.proxyJumpIdentityFile ? await readKeyFile(spec.proxyJumpIdentityFile, 'ProxyJumpIdentityFile', ctx) : privateKey;
    const jumpHostKey = spec.proxyJumpHostKey ?? ctx.pinnedJumpHostKey;
    jump = {
      ...spec.proxyJump,
      remotePath: '',
      ...(jumpKey && { privateKey: jumpKey, identityFile: jumpKeyFile }),
      ...(spec.passphrase !== undefined && !spec.proxyJumpIdentityFile && { passphrase: spec.passphrase }),
      ...(jumpHostKey && { hostKey: jumpHostKey }),
      hostKeyOption: 'ProxyJumpHostKey',
      ...common,
    };
  }
  return {
    host: spec.host,
    port: spec.port,
    username: spec.username,
    remotePath: spec.remotePath,
    ...(password !== undefined && { password }),
    ...(privateKey && { privateKey, identityFile }),
    ...(spec.passphrase !== undefined && { passphrase: spec.passphrase }),
    ...(hostKey && { hostKey }),
    ...common,
    ...(jump && { jump }),
  };
}

/**
 * The state file holds every volume's password: a password_file or
 * IdentityFile inside the state directory would send it to whatever server a
 * volume names. Checked by name and after symlinks (sshkey.source is the
 * user's directory and may hold a link), at every Create and Mount.
 */
export async function refuseStateFiles(spec: Pick<VolumeSpec, 'passwordFile' | 'identityFile' | 'proxyJumpIdentityFile'>, stateDir: string): Promise<void> {
  const real = (p: string) => realpath(p).catch(() => p);
  const inside = (dir: string, p: string) => {
    const r = relative(dir, p);
    return r === '' || (r !== '..' && !r.startsWith('../') && !isAbsolute(r));
  };
  const dirs = [stateDir, await real(stateDir)];
  for (const [option, file] of [['password_file', spec.passwordFile], ['IdentityFile', spec.identityFile], ['ProxyJumpIdentityFile', spec.proxyJumpIdentityFile]] as const) {
    if (file === undefined) continue;
    const paths = [file, await real(file)];
    if (dirs.some((d) => paths.some((p) => inside(d, p)))) {
      throw new OptionsError(`option ${option}=${file} points into the plugin's state directory (${stateDir}), which no volume may read: put the file under the sshkey.source directory`);
    }
  }
}
