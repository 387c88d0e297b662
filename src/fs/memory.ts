// The daemon's memory: handing freed memory back to the kernel, collecting
// V8's garbage when idle, and one bound on write buffering for all volumes.
//
// glibc keeps what the daemon frees: an arena shrinks only from its top, so
// the holes left by the 1 MiB request copies of libfuse's threads and by
// the socket and packet buffers a V8 collection frees stay resident, and
// the daemon's RSS after a busy hour is its peak of every earlier workload,
// not what it holds. Measured (docs/performance.md, "Daemon memory"): after
// 8 busy volumes, malloc_trim(0) took RSS from 238 to 170 MiB. glibc's
// tunables do not do this: the trim threshold acts only at an arena's top,
// and a lower mmap threshold (each 1 MiB copy mapped and unmapped) cost seq
// write a third more CPU.
import { performance } from 'node:perf_hooks';
import Fuse from 'fuse-native';
import { ByteBudget } from '../sftp/budget';

/**
 * Often enough that an idle daemon is back to what it holds within seconds.
 * A trim runs on this thread: 1.6 ms when there is nothing to return, 11-14
 * ms when it returns 62 MiB of 32 KiB holes (measured on this 2-core VM).
 */
const TRIM_INTERVAL_MS = 5_000;

/** Busier than this over a tick, the event loop had work; at or under it, the daemon was idle. */
const IDLE_UTILIZATION = 0.05;
const TICK_MS = 1_000;

/**
 * When to collect V8's garbage: once, after IDLE_TICKS_TO_COLLECT whole idle
 * ticks that follow work. --initial-old-space-size=64 (node-flags.ts) lets
 * the old generation hold up to 64 MB between collections, and a daemon that
 * goes idle never reaches that, so it kept its last workload's garbage (and
 * the ArrayBuffers that garbage holds) for good. Two seconds idle: the
 * collection (tens of ms, docs/performance.md "Idle collection") then lands
 * between workloads, not in one, and an idle daemon is not collected again
 * until it has worked.
 */
export const IDLE_TICKS_TO_COLLECT = 2;
export class IdleCollector {
  private idleTicks = 0;
  /**
   * Start-up counts as work: loading the daemon's code leaves garbage and
   * grows V8's young generation, which an idle daemon would otherwise keep
   * until its first workload (measured with V8's 16 MB semi-spaces: a
   * daemon with no volume 87 → 77 MiB resident, docs/performance.md "Idle
   * collection from start-up").
   */
  private workSinceCollect = true;
  constructor(private readonly collect: () => void) {}
  /** One tick's end; `busy`: the event loop had work in it. */
  tick(busy: boolean): void {
    if (busy) {
      this.idleTicks = 0;
      this.workSinceCollect = true;
    } else if (this.workSinceCollect && ++this.idleTicks >= IDLE_TICKS_TO_COLLECT) {
      this.workSinceCollect = false;
      this.collect();
    }
  }
}

type Gc = (opts: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

let timer: NodeJS.Timeout | undefined;

/**
 * From now on (once per process; the timer never keeps it alive): trim every
 * TRIM_INTERVAL_MS, and when the daemon goes idle after work, collect V8's
 * garbage and trim at once. The collection is V8's last-resort flavour (it
 * also shrinks the young generation, "Mark-Compact (reduce)"), which only
 * the gc() of --expose-gc offers; without that flag (node-flags.ts) there is
 * only the trim.
 */
export function keepMemoryTrimmed(): void {
  if (timer) return;
  const gc = (globalThis as { gc?: Gc }).gc;
  let sinceTrim = 0;
  const trim = () => {
    sinceTrim = 0;
    Fuse.trimMemory();
  };
  const idle = new IdleCollector(() => {
    gc?.({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    trim();
  });
  let last = performance.eventLoopUtilization();
  timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    idle.tick(performance.eventLoopUtilization(now, last).utilization > IDLE_UTILIZATION);
    last = now;
    if ((sinceTrim += TICK_MS) >= TRIM_INTERVAL_MS) trim();
  }, TICK_MS).unref();
}

/**
 * Write buffering of all volumes together. Each volume may hold 2 MiB of
 * WRITEs unanswered by its server (src/sftp/session.ts) and 2 MiB of early
 * write replies' copies (src/fs/mount.ts), and a busy volume uses both, so
 * the daemon's memory grew with the number of busy volumes: 1.5-1.8 GiB
 * resident with 256 volumes writing at once (docs/scaling.md). Past these
 * budgets a write waits (unanswered WRITEs) or is answered from JS instead
 * of early (copies). 4 MiB each: one busy volume still gets its full 2 MiB
 * of each, so a single writer's pace is untouched; two busy volumes get
 * theirs too, and more share it. The server, not the window, sets the pace
 * of many busy volumes: 8 of them wrote as fast together with 4 MiB budgets
 * as with 8, and the daemon held less (docs/performance.md, "Write
 * budgets 8 → 4 MiB").
 */
export const WRITES_UNANSWERED_BUDGET = 4 * 1024 * 1024;
export const EARLY_REPLY_COPIES_BUDGET = 4 * 1024 * 1024;

let writes: ByteBudget | undefined;

/** The daemon's one budget for unanswered WRITEs; the first call also bounds the binding's copies. */
export function writeBudget(): ByteBudget {
  if (!writes) {
    writes = new ByteBudget(WRITES_UNANSWERED_BUDGET);
    Fuse.setWriteBehindBudget(EARLY_REPLY_COPIES_BUDGET);
  }
  return writes;
}
