// Entrypoint: `MALLOC_ARENA_MAX=1 node --initial-old-space-size=64
// --expose-gc dist/main.js` (why that setting and those flags:
// node-flags.ts). The socket listens first (dockerd gives a plugin about 10 s
// to answer Plugin.Activate); remounting volumes that were in use happens in
// the background afterwards.
import { readFileSync } from 'node:fs';
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { NODE_TIMEOUTS_OFF, enforceRequestTimeouts, type RequestTimeouts } from './api/request-timeouts';
import { makeApp } from './api/server';
import { loadConfig, type Config } from './config';
import type { VolumeDriver } from './api/protocol';
import { Driver, StateDirBusyDriver } from './driver';
import type { MountFs } from './fs/index';
import { makeLogger } from './log';
import { DAEMON_NODE_FLAGS, missingDaemonEnv, missingNodeFlags, withoutFlag } from './node-flags';
import { StateStore } from './state';

export interface Daemon {
  /** A StateDirBusyDriver when another daemon holds the state directory. */
  driver: VolumeDriver;
  server: Server;
  /** Settles when background restoring is done. */
  restored: Promise<void>;
  stop(): Promise<void>;
}

/**
 * dockerd sends a whole request at once; a client that sends headers and then
 * trickles or stalls is not dockerd and must not hold a connection (and its
 * buffers) for Node's default 5 minutes. Checked every second, not every 30.
 * These bound receiving the request only: a Mount may take longer to answer.
 * Enforced by api/request-timeouts.ts, not Node, so that the daemon's own
 * lag never counts against a client.
 */
const REQUEST_TIMEOUTS: RequestTimeouts = { headersMs: 10_000, requestMs: 20_000, keepAliveMs: 5_000, checkEveryMs: 1_000 };

/** Logged for a promise rejection nobody handled (a bug); tests look for it. */
export const UNHANDLED_REJECTION = 'unhandled promise rejection: a tsfs bug, please report it with this line';

/** What `make` stamped into the image (the plugin reference it built, e.g. myorg/tsfs:2): which build runs, after an upgrade. */
function buildName(): string {
  try {
    return readFileSync(join(__dirname, 'BUILD'), 'utf8').trim();
  } catch {
    return 'unstamped';
  }
}

// Docker sends SIGKILL 10 s after SIGTERM; leave room to exit cleanly.
const SHUTDOWN_BUDGET_MS = 8000;

// The SFTP filesystem (fuse-native, ssh2: a few hundred ms to load on a busy
// host) is required on first use, so the socket listens before it loads.
const lazyMountSftpFs: MountFs = async (opts) => (await import('./fs/index')).mountSftpFs(opts);

export async function startDaemon(config: Config, log: Logger, mountFs: MountFs = lazyMountSftpFs): Promise<Daemon> {
  await mkdir(dirname(config.socket), { recursive: true });
  // A socket file left by a previous run makes listen() fail with EADDRINUSE.
  await unlink(config.socket).then(
    () => log.info({ socket: config.socket }, 'removed stale socket file'),
    () => undefined,
  );
  const store = new StateStore(config.stateDir);
  const held = await store.lock();
  let driver: Driver | StateDirBusyDriver;
  let volumes = 0;
  if (held.locked) {
    const { state, quarantined } = await store.load().catch((e: unknown) => {
      held.lock.release();
      throw e;
    });
    if (quarantined) {
      log.error({ movedTo: quarantined.path, reason: quarantined.reason }, 'state file unreadable: moved it aside and started with no volumes');
    }
    await mkdir(config.mountRoot, { recursive: true, mode: 0o755 });
    driver = new Driver({ mountRoot: config.mountRoot, sshDir: config.sshDir, store, log, mountFs, settingsWarnings: config.warnings }, state.volumes);
    volumes = state.volumes.length;
  } else {
    // Not an exit: dockerd would then fail `docker plugin enable` with a bare "dial unix ... no such file".
    driver = new StateDirBusyDriver(config.stateDir, held.holder);
    log.error({ stateDir: config.stateDir, holder: held.holder }, driver.message);
  }
  const server = createServer(NODE_TIMEOUTS_OFF, makeApp(driver, log));
  enforceRequestTimeouts(server, REQUEST_TIMEOUTS, log);
  server.listen(config.socket);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  }).catch((e: unknown) => {
    if (held.locked) held.lock.release();
    throw e;
  });
  // Queued before any request can be served, so a Mount that arrives now waits behind its volume's restore.
  const restored = driver instanceof Driver ? driver.restoreAll() : Promise.resolve();
  // dockerd runs as root; nobody else needs the socket.
  await chmod(config.socket, 0o660).catch(() => undefined);
  log.info({ socket: config.socket, volumes, stateDir: config.stateDir, mountRoot: config.mountRoot, serving: held.locked, build: buildName(), node: process.version, arch: process.arch }, 'listening');
  // Warm the modules the first Create/Mount needs, now that dockerd can reach us.
  void Promise.all([import('./fs/index'), import('./sftp/probe')]).catch((e: Error) => log.error({ err: e.message }, 'cannot load the SFTP filesystem'));

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      server.close();
      // In-flight requests (a Mount mid-connect) may finish; idle keep-alive connections go now.
      server.closeIdleConnections();
      if (driver instanceof Driver) await driver.shutdown();
      await unlink(config.socket).catch(() => undefined);
      // Last: the state is saved, another daemon may take the directory now.
      if (held.locked) held.lock.release();
    })());
  return { driver, server, restored, stop };
}

/** Run the daemon from the environment; `mountFs` is replaceable only for tests' marker mounter. */
export async function main(mountFs: MountFs = lazyMountSftpFs): Promise<void> {
  const config: Config = loadConfig();
  const log = makeLogger(config.logLevel, undefined, config.logFormat);
  for (const w of config.warnings) log.warn({ setting: w.split('=')[0] }, `bad plugin setting: ${w}`);
  const missing = missingNodeFlags();
  if (missing.length > 0) {
    log.warn({ missing, expected: `node ${DAEMON_NODE_FLAGS.join(' ')} dist/main.js` }, `started without the node flags tsfs needs: ${missing.map((f) => `without ${f}, ${withoutFlag(f)}`).join('; ')}`);
  }
  const missingEnv = missingDaemonEnv();
  if (missingEnv.length > 0) {
    log.warn({ missing: missingEnv }, `started without ${missingEnv.join(' ')} in the environment: memory with many busy volumes grows by tens of MiB (set it where the daemon is launched)`);
  }
  let daemon: Daemon;
  try {
    daemon = await startDaemon(config, log, mountFs);
  } catch (e) {
    log.fatal({ err: (e as Error).message }, 'cannot start');
    process.exit(1);
  }
  // Idle collection from the start, not only from the first mount: a daemon
  // with no volume yet gives back what its start-up left (fs/memory.ts).
  // Loaded after the socket listens, as the rest of the SFTP filesystem is; a
  // binding that cannot load fails the first mount, with its own error.
  void import('./fs/memory').then(
    (m) => m.keepMemoryTrimmed(),
    (e: Error) => log.debug({ err: e.message }, 'memory trimming not started: the FUSE binding did not load'),
  );
  const onSignal = (signal: string) => {
    log.info({ signal }, 'shutting down: unmounting volumes and saving state');
    const timer = setTimeout(() => {
      log.error({ budgetMs: SHUTDOWN_BUDGET_MS }, 'shutdown took too long; exiting anyway');
      process.exit(1);
    }, SHUTDOWN_BUDGET_MS);
    timer.unref();
    daemon.stop().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (e: Error) => {
        log.error({ err: e.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // A rejection nobody handled is a tsfs bug. Decision: stay up, and say so
  // loudly. Crashing would have dockerd restart the plugin within ~1 s, but
  // every FUSE mount of every volume dies with the process: containers'
  // open files fail with ENOTCONN for good and writes in flight are lost, so
  // one volume's stray promise would break every container on the host. The
  // line is at error level with the stack, and the test daemons fail on it
  // (test/helpers/daemon.ts), so a bug is not hidden. A synchronous throw
  // (uncaughtException) still crashes: the state it leaves is unknown.
  process.on('unhandledRejection', (e) =>
    log.error(
      { err: e instanceof Error ? e.message : String(e), stack: e instanceof Error ? e.stack : undefined },
      UNHANDLED_REJECTION,
    ),
  );
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
}

if (require.main === module) void main();
