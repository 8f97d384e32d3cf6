import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // System tests share root-only resources (netns names, sshd ports): run files one at a time.
    fileParallelism: false,
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default'],
  },
});
