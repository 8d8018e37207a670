import { defineConfig } from 'vitest/config';

/** Suites that also run on a private three-master Redis Cluster (`--project cluster`), on hash-tagged prefixes. */
const CLUSTER_SUITES = [
  'test/cluster.test.ts',
  'test/atomic-add.test.ts',
  'test/dedup.test.ts',
  'test/integrity-cancel.test.ts',
  'test/integrity-claims.test.ts',
  'test/dependencies.test.ts',
  'test/integrity-gates.test.ts',
  'test/workers-pool.test.ts',
  'test/workers-modules.test.ts',
  'test/finish-script.test.ts',
  'test/bridge-feeder.test.ts',
  'test/bridge-runner.test.ts',
  'test/bridge-masters.test.ts',
];

export default defineConfig({
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    // Tests share one Redis server; each isolates itself by its own key prefix.
    // Tests wait on events and states, never on elapsed time: these limits only stop a test that
    // hangs, and are wide enough for a two-core machine whose other core is busy.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'redis',
          include: ['test/**/*.test.ts'],
          exclude: ['test/cluster.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: { name: 'cluster', include: CLUSTER_SUITES, globalSetup: ['test/support/cluster-setup.ts'] },
      },
    ],
  },
});
