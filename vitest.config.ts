import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['./test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Memory tests force a collection (global.gc) before they read RSS, so growth is what is kept, not garbage.
    execArgv: ['--expose-gc'],
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
