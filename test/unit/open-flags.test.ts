// open(2) flags to SFTP pflags, checked against ssh2's own names for them.
import { constants as fsc } from 'node:fs';
import { utils } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { planOpen } from '../../src/fs/open-flags';

const names = (pflags: number) => utils.sftp.flagsToString(pflags);

describe('planOpen', () => {
  it.each([
    // flags, readable, changes the file
    [fsc.O_RDONLY, true, false],
    [fsc.O_WRONLY, false, true],
    [fsc.O_RDWR, true, true],
    [fsc.O_WRONLY | fsc.O_TRUNC, false, true],
    [fsc.O_WRONLY | fsc.O_APPEND, false, true],
    [fsc.O_RDONLY | fsc.O_TRUNC, true, true],
  ])('open flags %o: readable %s, writes %s', (flags, readable, writes) => {
    const p = planOpen(flags, false);
    expect(p.readable).toBe(readable);
    expect(p.writes).toBe(writes);
    // Reopening after a reconnect never truncates, creates or requires absence.
    const S = utils.sftp.OPEN_MODE;
    expect(p.reopen & (S.TRUNC | S.CREAT | S.EXCL)).toBe(0);
    expect(!!(p.pflags & S.TRUNC)).toBe(!!(flags & fsc.O_TRUNC));
  });

  it("create's flags are what fopen's modes mean to ssh2", () => {
    expect(names(planOpen(fsc.O_WRONLY | fsc.O_TRUNC, true).pflags)).toBe('w');
    expect(names(planOpen(fsc.O_RDWR | fsc.O_TRUNC, true).pflags)).toBe('w+');
    expect(names(planOpen(fsc.O_WRONLY | fsc.O_APPEND, true).pflags)).toBe('a');
    expect(names(planOpen(fsc.O_RDWR | fsc.O_APPEND, true).pflags)).toBe('a+');
    expect(names(planOpen(fsc.O_WRONLY | fsc.O_TRUNC | fsc.O_EXCL, true).pflags)).toBe('wx');
    expect(names(planOpen(fsc.O_RDONLY, false).pflags)).toBe('r');
    expect(names(planOpen(fsc.O_RDWR, false).pflags)).toBe('r+');
  });
});
