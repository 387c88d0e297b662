// The connection a Create keeps for its Mount (src/sftp/handoff.ts): taken
// once, closed when it expires or the volume goes, dropped if the server
// closes it first.
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { SFTPWrapper } from 'ssh2';
import type { SshLink } from '../../src/sftp/connect';
import { HANDOFF_TTL_MS, Handoff } from '../../src/sftp/handoff';

function fakeLink() {
  const client = new EventEmitter();
  const sftp = new EventEmitter();
  let closed = 0;
  const link = { client, close: () => void closed++ } as unknown as SshLink;
  return { held: { link, sftp: sftp as unknown as SFTPWrapper }, client, sftp, closes: () => closed };
}

describe('Handoff', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('hands the connection over once, and does not close what it handed over', () => {
    const f = fakeLink();
    const h = new Handoff(f.held);
    expect(h.take()).toBe(f.held);
    expect(h.take()).toBeUndefined();
    vi.advanceTimersByTime(HANDOFF_TTL_MS * 2);
    h.discard();
    expect(f.closes()).toBe(0);
  });

  it('closes the connection when no Mount takes it in time', () => {
    const f = fakeLink();
    const h = new Handoff(f.held);
    vi.advanceTimersByTime(HANDOFF_TTL_MS - 1);
    expect(f.closes()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(f.closes()).toBe(1);
    expect(h.take()).toBeUndefined();
  });

  it('does not hand over a connection or a channel the server closed', () => {
    for (const which of ['client', 'sftp'] as const) {
      const f = fakeLink();
      const h = new Handoff(f.held);
      f[which].emit('close');
      expect(h.take()).toBeUndefined();
    }
  });

  it('closes the connection when the volume is removed first', () => {
    const f = fakeLink();
    new Handoff(f.held).discard();
    expect(f.closes()).toBe(1);
  });
});
