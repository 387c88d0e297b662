// mountSftpFs's failure paths without FUSE or sshd: the binding's constructor
// throwing must not leave the SSH session (a live connection) behind.
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';

const closed: string[] = [];

vi.mock('fuse-native', () => ({
  default: class {
    static setWriteBehindBudget() {
      return 0;
    }
    constructor() {
      throw new Error('fuse: device not found');
    }
  },
}));

vi.mock('../../src/sftp/session', async (orig) => {
  const real = await orig<typeof import('../../src/sftp/session')>();
  return {
    ...real,
    SftpSession: class {
      state = 'connected';
      async start() {
        return { meta: {}, data: {}, ext: new Set<string>(), gen: 1, maxRead: 1, maxWrite: 1 };
      }
      close() {
        closed.push('session');
      }
    },
    sftpCall: { ...real.sftpCall, realpath: async () => '/store', stat: async () => ({ isDirectory: () => true }) },
  };
});

describe('mountSftpFs', () => {
  it('closes the SSH session when the FUSE binding throws while setting up the mount', async () => {
    const { mountSftpFs } = await import('../../src/fs/mount');
    await expect(
      mountSftpFs({
        target: { host: 'h', port: 22, username: 'u', remotePath: '/store', strictHostKeyChecking: 'no', keepaliveInterval: 0, keepaliveCountMax: 3, connectTimeout: 1000 } as never,
        mountpoint: '/nonexistent-tsfs-mountpoint',
        allowOther: true,
        readOnly: false,
        cacheTimeout: 20,
        log: pino({ level: 'silent' }),
      }),
    ).rejects.toThrow(/fuse: device not found/);
    expect(closed).toEqual(['session']);
  });
});
