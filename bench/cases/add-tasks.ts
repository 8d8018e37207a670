/**
 * Adding 20,000 independent tasks in batches of 1,000: TaskClient.add (validation, identity
 * claims, flows) against Queue.addBulk with the same job options and the same job data.
 */
import { Queue, type JobsOptions } from 'bullmq';
import { TaskClient } from '../../src/tasks/task-client.ts';
import { toBullPriority } from '../../src/tasks/priority.ts';
import { toJobData } from '../../src/tasks/task.ts';
import type { BenchCase, Scope } from '../run.ts';

const TOTAL = 20_000;
const BATCH = 1_000;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

function inputs(): { module: string; params: unknown[] }[][] {
  const batches = [];
  for (let b = 0; b < TOTAL / BATCH; b++) {
    batches.push(Array.from({ length: BATCH }, (_, i) => ({ module: 'noop', params: [b * BATCH + i] })));
  }
  return batches;
}

async function ours(scope: Scope) {
  const client = new TaskClient(scope.config, await scope.connection('client'));
  scope.defer(() => client.close());
  await client.queue().waitUntilReady();
  const batches = inputs();
  const start = performance.now();
  for (const batch of batches) await client.add(batch);
  return { ms: performance.now() - start };
}

async function raw(scope: Scope) {
  const { config } = scope;
  const queue = new Queue(config.queue, { connection: await scope.connection('queue'), prefix: config.prefix });
  scope.defer(() => queue.close());
  await queue.waitUntilReady();
  // What TaskClient.jobOpts sets, except the job id (BullMQ numbers raw jobs itself).
  const opts: JobsOptions = {
    priority: toBullPriority(config.defaults.priority),
    attempts: config.retry.attempts,
    backoff: { type: 'exponential', delay: config.retry.backoffMs },
    removeOnComplete: { count: config.keep.completed },
    removeOnFail: { count: config.keep.failed },
  };
  const created = Math.floor(Date.now() / 1000);
  const batches = inputs().map((batch) =>
    batch.map((t) => ({
      name: t.module,
      data: toJobData({ ...t, priority: config.defaults.priority, timeout: config.defaults.timeout, dependencies: [], created }),
      opts,
    })),
  );
  const start = performance.now();
  for (const batch of batches) await queue.addBulk(batch);
  return { ms: performance.now() - start };
}

export const addTasks: BenchCase = {
  name: 'add',
  async run(ctx) {
    const m = await ctx.compare('add', { ours, raw });
    const rate = (ms: number) => `${fmt((TOTAL / ms) * 1000)} tasks/s (${(ms / 1000).toFixed(2)} s)`;
    return [
      {
        name: `add ${fmt(TOTAL)} tasks, batches of ${fmt(BATCH)}`,
        ours: rate(m.ours.ms),
        raw: rate(m.raw.ms),
        ratio: m.ratio.ms,
        goal: 0.9,
      },
    ];
  },
};
