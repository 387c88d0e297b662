// The write pipeline of one open file. FUSE is answered as soon as a WRITE is
// queued to the server (write-behind, as sshfs does), so what close(2),
// fsync(2) and a stat owe the caller is tracked here: every queued piece gets
// a sequence number; a caller that must see "everything written before me"
// takes the current watermark and waits until every piece up to it is
// answered, not until the pipe is empty (a stat of a file being written
// would otherwise wait for writes queued after it, without end under a
// steady writer). The first failure is kept and reported by every later
// flush/fsync/release and write: a gap in the file is never reported as
// success.
import { FsError } from './errno';

export class WritePipeline {
  /** Sequence number of the last piece queued (0: none yet). */
  private issued = 0;
  /** Every piece up to this number is answered. */
  private answeredThrough = 0;
  /** Pieces above answeredThrough answered out of order. */
  private early = new Set<number>();
  private waiters: { mark: number; wake: () => void }[] = [];
  /** The first failure of any piece. */
  error?: FsError;
  /** Called on every queue and answer: lets the metadata cache refuse answers that raced a write (see attr-cache.ts). */
  onActivity?: () => void;

  /** Pieces queued but not answered yet. */
  get pending(): number {
    return this.issued - this.answeredThrough - this.early.size;
  }

  /** The sequence number covering every piece queued so far. */
  mark(): number {
    return this.issued;
  }

  /** Register one piece about to be sent; call answer(seq, err) when the server answers it. */
  queue(): number {
    this.onActivity?.();
    return ++this.issued;
  }

  answer(seq: number, err?: FsError): void {
    if (err && !this.error) this.error = err;
    if (seq === this.answeredThrough + 1) {
      this.answeredThrough = seq;
      while (this.early.delete(this.answeredThrough + 1)) this.answeredThrough++;
    } else if (seq > this.answeredThrough) this.early.add(seq);
    this.onActivity?.();
    if (this.waiters.length === 0) return;
    const ready = this.waiters.filter((w) => w.mark <= this.answeredThrough);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.mark > this.answeredThrough);
    for (const w of ready) w.wake();
  }

  /** Resolves once every piece up to `mark` is answered (never rejects: read `error`). */
  drainTo(mark: number): Promise<void> {
    if (mark <= this.answeredThrough) return Promise.resolve();
    return new Promise((wake) => this.waiters.push({ mark, wake }));
  }

  /** Everything queued before this call answered. */
  settle(): Promise<void> {
    return this.drainTo(this.mark());
  }
}
