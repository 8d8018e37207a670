/**
 * A fan-in DAG, end to end: 200 × (10 tasks → 1 dependent), each fan-in added as one batch
 * (one flow), then worked off at equal concurrency until every dependent has completed.
 * Ours: TaskClient.add + TaskWorker running bench/tasks/noop.js. Raw: FlowProducer.add with
 * the same shape and job options + a BullMQ Worker with an empty processor.
 * Each side reports addMs, totalMs, and startMs (worker start to first completion: start-up
 * cost, shown in the progress lines only).
 */
import { FlowProducer, type Job, type Worker } from 'bullmq';
import { createLogger, type Logger } from '../../src/logger.ts';
import { TaskClient } from '../../src/tasks/task-client.ts';
import type { BenchCase, Scope } from '../run.ts';
import { benchTaskWorker, rate, rawJobs, rawWorker, type BenchTask } from './common.ts';

const FAN_INS = 200;
const WIDTH = 10;
const JOBS = FAN_INS * (WIDTH + 1);
const CONCURRENCY = 20;
const WAIT_LIMIT_MS = 60_000;

/** Each fan-in as the batch a producer would send: ten tasks, then one depending on all ten. */
function fanIns(): BenchTask[][] {
  return Array.from({ length: FAN_INS }, (_, f) => {
    const leaves = Array.from({ length: WIDTH }, (_, i) => ({ module: 'noop', params: [f, i] }));
    return [...leaves, { module: 'noop', params: [f, 'join'], dependencies: leaves }];
  });
}

/**
 * Resolves, with the time of the first completion, when all JOBS jobs have completed (the 200
 * roots among them); rejects on a failure.
 */
function allCompleted(worker: Worker): Promise<number> {
  return new Promise((resolve, reject) => {
    let first = 0;
    let done = 0;
    let roots = 0;
    const timer = setTimeout(
      () =>
        reject(
          new Error(
            `only ${done} of ${JOBS} jobs (${roots} of ${FAN_INS} dependents) completed within ${WAIT_LIMIT_MS} ms`,
          ),
        ),
      WAIT_LIMIT_MS,
    );
    worker.on('completed', (job: Job) => {
      if (!done++) first = performance.now();
      if (!job.parentKey) roots++;
      if (done === JOBS && roots === FAN_INS) {
        clearTimeout(timer);
        resolve(first);
      }
    });
    worker.on('failed', (job, err) => {
      clearTimeout(timer);
      reject(new Error(`job ${job?.id} (${job?.name}) failed: ${err.message}`));
    });
  });
}

function ours(log: Logger) {
  return async (scope: Scope) => {
    const { config } = scope;
    const client = new TaskClient(config, await scope.connection('client'));
    scope.defer(() => client.close());
    const [tw] = await Promise.all([benchTaskWorker(scope, log, CONCURRENCY), client.queue().waitUntilReady()]);
    const batches = fanIns();

    const start = performance.now();
    for (const batch of batches) await client.add(batch);
    const addMs = performance.now() - start;
    const completed = allCompleted(tw.worker);
    tw.start();
    const first = await completed;
    return { addMs, totalMs: performance.now() - start, startMs: first - start - addMs };
  };
}

async function raw(scope: Scope) {
  const { config } = scope;
  const flows = new FlowProducer({ connection: await scope.connection('flows'), prefix: config.prefix });
  scope.defer(() => flows.close());
  await flows.waitUntilReady();
  const worker = await rawWorker(scope, CONCURRENCY);
  const node = (t: BenchTask) => ({ ...rawJobs(config, [t])[0]!, queueName: config.queue });
  const trees = fanIns().map((batch) => ({ ...node(batch[WIDTH]!), children: batch.slice(0, WIDTH).map(node) }));

  const start = performance.now();
  for (const tree of trees) await flows.add(tree);
  const addMs = performance.now() - start;
  const completed = allCompleted(worker);
  void worker.run();
  const first = await completed;
  return { addMs, totalMs: performance.now() - start, startMs: first - start - addMs };
}

export const fanInDag: BenchCase = {
  name: 'fan-in DAG',
  async run(ctx) {
    const log = createLogger({ level: 'silent', pretty: false });
    const m = await ctx.compare('fan-in', { ours: ours(log), raw });
    const shape = `${FAN_INS} × (${WIDTH} → 1)`;
    return [
      {
        name: `fan-in DAG ${shape}, add + run, concurrency ${CONCURRENCY}`,
        ours: rate(JOBS, m.ours.totalMs, 'jobs'),
        raw: rate(JOBS, m.raw.totalMs, 'jobs'),
        ratio: m.ratio.totalMs,
        goal: 0.7,
      },
      {
        name: `fan-in DAG ${shape}, add only`,
        ours: rate(JOBS, m.ours.addMs, 'jobs'),
        raw: rate(JOBS, m.raw.addMs, 'jobs'),
        ratio: m.ratio.addMs,
      },
    ];
  },
};
