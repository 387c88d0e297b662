// Node/V8 flags the daemon must be started with: `node <DAEMON_NODE_FLAGS> dist/main.js`,
// and the environment it must be started in (DAEMON_ENV, below).
// They size the heap, which V8 sets up before any of our code runs: a
// v8.setFlagsFromString() from main.ts comes too late (checked: the limits do
// not change) and NODE_OPTIONS refuses them. So every launcher passes them:
// config.json's entrypoint, the Dockerfile's CMD and package.json's start
// script (test/docs.test.ts holds those to this list), the tests' and the
// benches' spawns (they import it); main() warns when they are missing.
//
// --initial-old-space-size=64: no full GC while the old generation (plus the
// ArrayBuffer memory allocated since the last full GC, see below) is under
// 64 MB. Without it a busy mount runs a mark-compact every ~30 ms, 50-100 per
// 256 MiB read or written, each freeing nothing, and the daemon's CPU doubles
// and its throughput halves, in about one run of three. The mechanism (V8 11):
// - V8 charges the ArrayBuffer backing-store bytes allocated since the last
//   mark-compact against the old generation's allocation limit, and starts
//   incremental marking once the room left is under the new space's
//   capacity.
// - Every 128 KiB of file data allocates several backing stores (socket reads,
//   ssh2 packets, the readahead chunk). They die young but are freed only by a
//   scavenge, which V8 forces when young backing stores reach 32 MB: the
//   external total saw-tooths between ~17 and ~50 MB (--trace-gc-verbose).
// - The JS heap is ~12 MB and promotes little, so each mark-compact measures a
//   fast GC against a slow mutator and lowers the heap-growing factor (4.0,
//   2.9, 2.0, 1.6 ... 1.1); the limit bottoms out at old size + 16 MB (V8's
//   minimum step plus the new space), and from then on every saw tooth
//   starts marking again. A mark-compact cannot free
//   young backing stores, so it never breaks the loop.
// A floor of 64 MB leaves room for the ~33 MB saw tooth above the ~12 MB
// heap: 0-2 mark-compacts per run in 10 bench runs of seq read, seq write and
// 8 writers (128 MB did as well, but the old generation then kept garbage up
// to ~80-110 MB: peak RSS with 8 busy volumes 179 MiB, against 115 MiB at 64).
// A heap with more live data than that gets V8's ordinary limits.
//
// --max-semi-space-size=2: a young generation of at most 2 MB per
// semi-space instead of V8's 16. Any sustained workload grows it to its
// cap (V8 grows it once the bytes surviving scavenges add up to its size),
// and a grown semi-space stays resident until the idle collection: it was
// the largest part of the daemon's peak that its busy volumes did not
// need. With 2 MB, 8 busy volumes and a single big read held less, at no
// CPU cost seen on seq read, seq write or small files (docs/performance.md,
// "A 2 MB young generation"). Not 1 MB: there, 256 volumes connecting at
// once produced young garbage fast enough that some missed their 25 s
// connection deadline. Stop 14 refused 1 and 4 MB for that storm cost;
// on stop 21's code, alternated storms took as long with 2 MB as without.
//
// --expose-gc: gives the daemon gc(), which src/fs/memory.ts calls once the
// daemon has been idle for a few seconds after work. The floor above lets
// the old generation keep up to 64 MB of garbage between collections, and a
// daemon that goes idle never reaches it, so without a collection an idle
// daemon stays at its last workload's size. Figures in docs/performance.md,
// "Idle collection".
/** Each flag, and what a daemon started without it loses (for main()'s warning). */
const FLAGS: Readonly<Record<string, string>> = {
  '--initial-old-space-size=64': 'reads and writes may run at half speed (V8 mark-compact storms)',
  '--expose-gc': 'an idle daemon keeps the memory its last workload left',
  '--max-semi-space-size=2': 'every busy volume and every big read holds more memory (a 16 MB young generation)',
};
export const DAEMON_NODE_FLAGS: readonly string[] = Object.keys(FLAGS);

/** What a daemon started without `flag` loses. */
export const withoutFlag = (flag: string): string => FLAGS[flag] ?? '';

/** The flags this process was started without (they must come before the script, as node options). */
export function missingNodeFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return DAEMON_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}

// MALLOC_ARENA_MAX=1: every thread allocates from glibc's one main arena.
// By default each thread that mallocs gets an arena of its own (up to 8 per
// core), and libfuse's workers (up to 64 per mount, about 3 per busy one)
// malloc their 1 MiB request buffers and the binding's early-reply copies in
// theirs. A copy freed later stays in its arena as a hole that only the
// periodic trim (src/fs/memory.ts) returns: with 8 busy volumes the worker
// arenas held four times what was in use in them (malloc_stats). One arena
// lowers that peak, with no throughput cost measured: a worker mallocs once
// per write, so it rarely waits on the main thread's lock (figures in
// docs/performance.md, "One malloc arena"). glibc reads it once, at start,
// so it must be in the environment the process starts with;
// mallopt(M_ARENA_MAX) from the binding would come after Node's own threads
// made theirs. The plugin sets it on its command line (`/usr/bin/env
// MALLOC_ARENA_MAX=1 node ...`), not in config.json's env: dockerd keeps an
// installed plugin's env across `docker plugin upgrade` and takes the new
// entrypoint, so an env entry would never reach plugins installed before it.
export const DAEMON_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1' };

/** The DAEMON_ENV settings this process was started without. */
export function missingDaemonEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return Object.entries(DAEMON_ENV).filter(([k, v]) => env[k] !== v).map(([k, v]) => `${k}=${v}`);
}
