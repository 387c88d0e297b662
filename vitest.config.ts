import { defineConfig } from 'vitest/config';

// Tests mount real FUSE filesystems and start real sshd/dockerd processes, so
// files run one at a time (2-core machine, shared /dev/fuse, shared dockerd)
// and generous timeouts apply; nothing here asserts on time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
  },
});
