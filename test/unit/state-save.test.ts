// StateStore.save under many calls at once (a storm of Creates and Mounts):
// each call resolves only once a snapshot at least as new as its own is on
// disk, the file ends with the last snapshot, and calls made while a write is
// in flight share one write instead of queueing one fsync each.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { STATE_VERSION, StateStore, type VolumeRecord } from '../../src/state';

let dir: string;
beforeEach(() => void (dir = mkdtempSync(join(tmpdir(), 'tsfs-save-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const record = (i: number): VolumeRecord => ({ name: `v${i}`, createdAt: '2026-11-30T00:00:00Z', opts: { sshcmd: `u@h:/d${i}` }, mountIds: [] });
const snapshot = (n: number) => ({ version: STATE_VERSION as typeof STATE_VERSION, volumes: Array.from({ length: n }, (_, i) => record(i)) });
const onDisk = () => (JSON.parse(readFileSync(join(dir, 'tsfs.json'), 'utf8')) as { volumes: unknown[] }).volumes.length;

describe('StateStore.save', () => {
  it('many saves at once: each resolves with its snapshot or a newer one on disk, in few writes', async () => {
    const store = new StateStore(dir);
    const writes = vi.spyOn(store as unknown as { write: (s: unknown) => Promise<void> }, 'write');
    const seen: number[] = [];
    await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        store.save(snapshot(i + 1)).then(() => {
          expect(onDisk()).toBeGreaterThanOrEqual(i + 1);
          seen.push(i);
        }),
      ),
    );
    expect(seen.length).toBe(64);
    expect(onDisk()).toBe(64);
    // The first write, then one for everything asked for while it ran.
    expect(writes.mock.calls.length).toBeLessThanOrEqual(2);
  });

  it('a save made while a write is in flight gets its own write after it', async () => {
    const store = new StateStore(dir);
    const first = store.save(snapshot(1));
    await Promise.resolve();
    const second = store.save(snapshot(2));
    await first;
    await second;
    expect(onDisk()).toBe(2);
    await store.save(snapshot(3));
    expect(onDisk()).toBe(3);
  });

  it('a failed write rejects the saves that waited for it, and the next save writes again', async () => {
    const sub = join(dir, 'not-yet');
    const store = new StateStore(sub);
    const a = store.save(snapshot(1));
    const b = store.save(snapshot(2));
    await expect(a).rejects.toThrow(/ENOENT/);
    await expect(b).rejects.toThrow(/ENOENT/);
    mkdirSync(sub);
    await store.save(snapshot(5));
    expect((JSON.parse(readFileSync(join(sub, 'tsfs.json'), 'utf8')) as { volumes: unknown[] }).volumes.length).toBe(5);
  });
});
