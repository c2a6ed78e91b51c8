import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Network-namespace tests share the host's netns names and take minutes; they run in one worker.
    fileParallelism: true,
    pool: 'forks',
  },
});
