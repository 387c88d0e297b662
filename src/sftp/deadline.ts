// A bound on the steps after the SSH handshake (opening channels, the
// probe's stat and realpath, the mount's first realpath): ssh2's readyTimeout
// covers only the handshake, and a server that stalls after it would
// otherwise hold the volume's lock, and dockerd's Create or Mount, forever.

/** `work`, or a rejection with `onTimeout()`'s error once `ms` have passed. */
export async function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(onTimeout()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
