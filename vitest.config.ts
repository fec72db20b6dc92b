import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The native addon and its thread pool are per process: run files in forked processes.
    pool: 'forks',
    poolOptions: { forks: { execArgv: ['--expose-gc'] } },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores here and in CI: keep at most two test files running at once.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
