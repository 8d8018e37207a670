/**
 * Adding 20,000 independent tasks in batches of 1,000: TaskClient.add (validation, identity
 * claims, flows) against Queue.addBulk with the same job options and the same job data.
 */
import { TaskClient } from '../../src/tasks/task-client.ts';
import type { BenchCase, Scope } from '../run.ts';
import { fmt, noopBatches, rate, rawJobs, rawQueue } from './common.ts';

const TOTAL = 20_000;
const BATCH = 1_000;
const inputs = () => noopBatches(TOTAL, BATCH);

async function ours(scope: Scope) {
  const client = new TaskClient(scope.config, await scope.connection('client'));
  scope.defer(() => client.close());
  await client.queue().waitUntilReady();
  const batches = inputs();
  const start = performance.now();
  for (const batch of batches) await client.add(batch);
  return { ms: performance.now() - start };
}

/** Queue.addBulk of the same jobs, batch by batch. Also the raw side of the legacy feeder case. */
export async function rawAddBulk(scope: Scope, batches = inputs()) {
  const queue = await rawQueue(scope);
  const jobs = batches.map((batch) => rawJobs(scope.config, batch));
  const start = performance.now();
  for (const batch of jobs) await queue.addBulk(batch);
  return { ms: performance.now() - start };
}

export const addTasks: BenchCase = {
  name: 'add',
  async run(ctx) {
    const m = await ctx.compare('add', { ours, raw: (scope) => rawAddBulk(scope) });
    return [
      {
        name: `add ${fmt(TOTAL)} tasks, batches of ${fmt(BATCH)}`,
        ours: rate(TOTAL, m.ours.ms),
        raw: rate(TOTAL, m.raw.ms),
        ratio: m.ratio.ms,
        goal: 0.9,
      },
    ];
  },
};
