// The write pipeline's bookkeeping, without a server: sequence numbers,
// waiting for a watermark (not for an empty pipe), the first error kept.
import { describe, expect, it } from 'vitest';
import { FsError } from '../../src/fs/errno';
import { WritePipeline } from '../../src/fs/write-pipeline';

const settled = async (p: Promise<unknown>) => {
  let done = false;
  void p.then(() => (done = true));
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return done;
};

describe('WritePipeline', () => {
  it('a waiter for the watermark resolves when the writes before it are answered, though later ones are still pending', async () => {
    const w = new WritePipeline();
    const a = w.queue();
    const b = w.queue();
    const mark = w.mark();
    const waiting = w.drainTo(mark);
    const c = w.queue(); // queued after the stat: must not be waited for
    w.answer(a);
    expect(await settled(waiting)).toBe(false);
    w.answer(b);
    expect(await settled(waiting)).toBe(true);
    expect(w.pending).toBe(1);
    w.answer(c);
    expect(w.pending).toBe(0);
  });

  it('answers out of order count only once every earlier piece is answered', async () => {
    const w = new WritePipeline();
    const [a, b, c] = [w.queue(), w.queue(), w.queue()];
    const all = w.settle();
    w.answer(c);
    w.answer(b);
    expect(await settled(all)).toBe(false);
    expect(w.pending).toBe(1);
    w.answer(a);
    expect(await settled(all)).toBe(true);
  });

  it('keeps the first error, not a later one', () => {
    const w = new WritePipeline();
    const [a, b] = [w.queue(), w.queue()];
    w.answer(b, new FsError(28, 'first'));
    w.answer(a, new FsError(5, 'second'));
    expect(w.error?.errno).toBe(28);
  });

  it('settle with nothing queued resolves at once, and activity is reported on queue and answer', async () => {
    const w = new WritePipeline();
    let n = 0;
    w.onActivity = () => n++;
    expect(await settled(w.settle())).toBe(true);
    w.answer(w.queue());
    expect(n).toBe(2);
  });
});
