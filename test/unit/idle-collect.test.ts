// When an idle daemon collects V8's garbage (src/fs/memory.ts IdleCollector):
// once per stretch of idleness that follows work (start-up included), never
// while busy, and not again while it stays idle.
import { describe, expect, it } from 'vitest';
import { IDLE_TICKS_TO_COLLECT, IdleCollector } from '../../src/fs/memory';

function run(ticks: string): string {
  let out = '';
  const c = new IdleCollector(() => (out += 'C'));
  for (const t of ticks) {
    const before = out.length;
    c.tick(t === 'b');
    if (out.length === before) out += '.';
  }
  return out;
}

describe('idle collection', () => {
  it(`collects after ${IDLE_TICKS_TO_COLLECT} idle ticks that follow work, and only then`, () => {
    expect(IDLE_TICKS_TO_COLLECT).toBe(2);
    // b = a busy tick, i = an idle one; C = collected at that tick.
    expect(run('iiiii')).toBe('.C...'); // start-up counts as work
    expect(run('biiii')).toBe('..C..'); // once, then not again while idle
    expect(run('bibibi')).toBe('......'); // one idle tick between work is not idle
    expect(run('ibiibi')).toBe('...C..'); // nor one right after start-up
    expect(run('bbbiibii')).toBe('....C..C');
    expect(run('biibbbiiii')).toBe('..C....C..');
  });
});
