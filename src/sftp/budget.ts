// Bytes that several writers may hold at once, up to a limit, granted in
// the order asked: each session's WRITE window (SessionOptions.maxInFlight),
// and the WRITE data of all volumes together (src/fs/memory.ts makes the
// daemon's one), which keeps the sum bounded however many volumes are busy.
export class ByteBudget {
  private used = 0;
  /** In the order they came: a small request does not pass a large one, which could then wait for ever. */
  private queue: { bytes: number; go: () => void }[] = [];

  constructor(readonly limit: number) {}

  /** Bytes taken now. */
  get held(): number {
    return this.used;
  }

  /**
   * Wait until `bytes` fit and every earlier waiter has gone, then take
   * them. A request larger than the limit goes once nothing else is taken,
   * so it cannot wait for ever either.
   */
  take(bytes: number): Promise<void> {
    if (this.queue.length === 0 && this.fits(bytes)) {
      this.used += bytes;
      return Promise.resolve();
    }
    return new Promise<void>((go) => this.queue.push({ bytes, go }));
  }

  give(bytes: number): void {
    this.used -= bytes;
    while (this.queue.length > 0 && this.fits(this.queue[0].bytes)) {
      const w = this.queue.shift()!;
      this.used += w.bytes;
      w.go();
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.limit;
  }
}
