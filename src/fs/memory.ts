// Handing freed memory back to the kernel. glibc keeps what the daemon
// frees: an arena shrinks only from its top, so the holes left by the
// 1 MiB request copies of libfuse's threads and by the socket and packet
// buffers a V8 collection frees stay resident, and the daemon's RSS after a
// busy hour is its peak of every earlier workload, not what it holds.
// Measured (docs/performance.md, "Daemon memory"): after 8 busy volumes,
// malloc_trim(0) took RSS from 238 to 170 MiB. glibc's tunables do not do
// this: the trim threshold acts only at an arena's top, and a lower mmap
// threshold (each 1 MiB copy mapped and unmapped) cost seq write a third
// more CPU.
import Fuse from 'fuse-native';

/**
 * Often enough that an idle daemon is back to what it holds within seconds.
 * A trim runs on this thread: 1.6 ms when there is nothing to return, 11-14
 * ms when it returns 62 MiB of 32 KiB holes (measured on this 2-core VM).
 */
const TRIM_INTERVAL_MS = 5_000;

let timer: NodeJS.Timeout | undefined;

/** Trim every TRIM_INTERVAL_MS from now on (once per process; the timer never keeps it alive). */
export function keepMemoryTrimmed(): void {
  timer ??= setInterval(() => Fuse.trimMemory(), TRIM_INTERVAL_MS).unref();
}
