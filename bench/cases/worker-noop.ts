/**
 * Workers on no-op tasks: 10,000 tasks queued through TaskClient (batches of 1,000, not timed),
 * then worked off; the clock runs from the moment the queue is released until the last one has
 * completed. Ours: Taskmaster workers running bench/tasks/noop.js (a legacy module calling
 * `this.done(null)`); raw: BullMQ Workers with an empty processor. Both sides work the very same
 * kind of jobs — added the same way, by TaskClient, so same data, options and ids — at the same
 * total concurrency; only what processes them differs. Two layouts:
 * - pool: a WorkerPool of 2 processes × 10 (what `taskmaster workers` runs) vs 2 forked
 *   processes each running a Worker × 10: the goal row;
 * - in-process: one TaskWorker embedded in this process at concurrency 20 vs one Worker at
 *   concurrency 20, shown without a goal. Here Redis is what both sides wait on, so the row
 *   shows mostly what a job costs Redis: ours records each task's outcome in its finishing step
 *   and names its worker (BullMQ's processedBy), about 7% and 2.5% more work in Redis per job.
 * The tasks are added while the queue is paused, and the workers started and given time to
 * settle before it is resumed, so start-up (forking, loading TypeScript, connecting) is not
 * counted on either side; in the pool layout the processes also work off WARM untimed tasks
 * first, so that what is timed is their steady pace. Each side returns its release as `Ready`,
 * so a round sets up both sides before it times them one right after the other. Each side also
 * reports the CPU it spent per task, in Redis and in Node.
 *
 * Run as a script (`node --import tsx bench/cases/worker-noop.ts <redisUrl> <prefix> <queue>
 * <concurrency>`), this file is one raw worker process of the pool layout.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker, type Queue } from 'bullmq';
import type { Config } from '../../src/config/config.ts';
import { createLogger, type Logger } from '../../src/logger.ts';
import { createRedis } from '../../src/queue/connection.ts';
import { TaskClient } from '../../src/tasks/task-client.ts';
import { ConsumerRegistry } from '../../src/workers/registry.ts';
import { WorkerPool } from '../../src/workers/worker-pool.ts';
import type { BenchCase, Ready, Scope } from '../run.ts';
import { benchTaskWorker, cpuPer, fmt, noopBatches, rate, rawWorker, withCpu, type CpuUse } from './common.ts';

const TASKS = 10_000;
const BATCH = 1_000;
const CONCURRENCY = 20;
const PROCESSES = 2;
const PER_PROCESS = CONCURRENCY / PROCESSES;
/**
 * Untimed tasks the pool layout's fresh processes work off first, on both sides: a process
 * compiles its hot code while it works, and a worker process's CPU per job (ours and raw
 * alike) settles only after about 6,000 jobs, so with fewer the pool row measured mostly
 * start-up. These give each of the two processes about 6,000. (An in-process worker runs code
 * the bench process has compiled already in its warm-up round.)
 */
const WARM = 12_000;
/** Pause between "every worker is up" and the release, on both sides. */
const SETTLE_MS = 300;
const READY_LIMIT_MS = 60_000;
const WAIT_LIMIT_MS = 120_000;
const SELF = fileURLToPath(import.meta.url);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A TaskClient of its own, with its queue paused so that nothing queued through it is taken
 * before the workers are ready; resume `client.queue()` to release.
 */
export async function pausedClient(scope: Scope): Promise<TaskClient> {
  const client = new TaskClient(scope.config, await scope.connection('client'));
  scope.defer(() => client.close());
  await client.queue().waitUntilReady();
  await client.queue().pause();
  return client;
}

/** Queues the no-op batches (not timed) with the queue paused; returns the queue. */
async function queued(scope: Scope, first?: (client: TaskClient) => Promise<void>): Promise<Queue> {
  const client = await pausedClient(scope);
  await first?.(client);
  for (const batch of batches()) await client.add(batch);
  return client.queue();
}

/**
 * Starts a WorkerPool of `processes` processes (each at `concurrency`) on the scope's prefix
 * and resolves once every process has announced itself in the registry (its BullMQ Worker is
 * running by then). Stopped when the scope ends.
 */
export async function startPool(
  scope: Scope,
  log: Logger,
  processes: number,
  concurrency: number,
): Promise<WorkerPool> {
  // The processes get this resolved config as it is (so the concurrency set here applies).
  const config: Config = { ...scope.config, concurrency };
  const connection = await scope.connection('pool');
  const pool = new WorkerPool({ config, connection, log, processes });
  pool.start();
  scope.defer(() => pool.stop());
  const registry = new ConsumerRegistry(connection, config.prefix);
  await until(
    async () => (await registry.live()).filter((c) => c.kind === 'worker').length >= processes,
    READY_LIMIT_MS,
    () => `the pool's ${processes} processes did not all start`,
  );
  return pool;
}

/** Resolves when `queue` counts `n` completed jobs (polled); rejects on a failed one. */
export async function completed(queue: Queue, n: number, limitMs = WAIT_LIMIT_MS): Promise<void> {
  let done = 0;
  await until(
    async () => {
      const counts = await queue.getJobCounts('completed', 'failed');
      if (counts.failed) throw new Error(`${counts.failed} job(s) failed`);
      done = counts.completed!;
      return done >= n;
    },
    limitMs,
    () => `only ${done} of ${n} jobs completed`,
    5,
  );
}

async function until(check: () => Promise<boolean>, limitMs: number, what: () => string, everyMs = 50): Promise<void> {
  const start = performance.now();
  while (!(await check())) {
    if (performance.now() - start > limitMs) throw new Error(`${what()} within ${limitMs} ms`);
    await sleep(everyMs);
  }
}

/** Resolves when `worker` has completed `n` jobs; rejects on a failure. */
function allCompleted(worker: Worker, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const timer = setTimeout(
      () => reject(new Error(`only ${done} of ${n} jobs completed within ${WAIT_LIMIT_MS} ms`)),
      WAIT_LIMIT_MS,
    );
    worker.on('completed', () => {
      if (++done === n) {
        clearTimeout(timer);
        resolve();
      }
    });
    worker.on('failed', (job, err) => {
      clearTimeout(timer);
      reject(new Error(`job ${job?.id} (${job?.name}) failed: ${err.message}`));
    });
  });
}

const batches = () => noopBatches(TASKS, BATCH);

/**
 * The timed step: releases the paused queue and times until all TASKS have completed, with the
 * CPU spent meanwhile by Redis, this process and `pids` (the side's other processes).
 */
function release(
  scope: Scope,
  queue: Queue,
  pids: number[],
  done: () => Promise<void>,
): Ready<{ ms: number } & CpuUse> {
  return {
    async timed() {
      await sleep(SETTLE_MS);
      return withCpu(await scope.connection('cpu'), pids, async () => {
        const start = performance.now();
        await queue.resume();
        await done();
        return { ms: performance.now() - start };
      });
    },
  };
}

function oursInProcess(log: Logger) {
  return async (scope: Scope) => {
    const queue = await queued(scope);
    const tw = await benchTaskWorker(scope, log, CONCURRENCY);
    const done = allCompleted(tw.worker, TASKS);
    tw.start();
    return release(scope, queue, [], () => done);
  };
}

async function rawInProcess(scope: Scope) {
  const queue = await queued(scope);
  const worker = await rawWorker(scope, CONCURRENCY);
  const done = allCompleted(worker, TASKS);
  void worker.run();
  return release(scope, queue, [], () => done);
}

/**
 * What `queued` does first in the pool layout: starts the workers with `start` and lets them
 * work off WARM untimed tasks, leaving the queue paused for the timed ones.
 */
function warmUp(start: () => Promise<void>): (client: TaskClient) => Promise<void> {
  return async (client) => {
    for (const batch of noopBatches(WARM, BATCH))
      await client.add(batch.map((t) => ({ ...t, params: ['warm', ...t.params] })));
    await start();
    const queue = client.queue();
    await queue.resume();
    await completed(queue, WARM);
    await queue.pause();
  };
}

function oursPool(log: Logger) {
  return async (scope: Scope) => {
    let pids: number[] = [];
    const queue = await queued(
      scope,
      warmUp(async () => {
        pids = (await startPool(scope, log, PROCESSES, PER_PROCESS)).pids();
      }),
    );
    return release(scope, queue, pids, () => completed(queue, WARM + TASKS));
  };
}

async function rawPool(scope: Scope) {
  let pids: number[] = [];
  const queue = await queued(
    scope,
    warmUp(async () => {
      pids = (await rawProcesses(scope)).map((c) => c.pid!);
    }),
  );
  return release(scope, queue, pids, () => completed(queue, WARM + TASKS));
}

/** Forks the raw side's worker processes and resolves once each runs its Worker. */
async function rawProcesses(scope: Scope): Promise<ChildProcess[]> {
  const { config } = scope;
  const children: ChildProcess[] = [];
  for (let i = 0; i < PROCESSES; i++) {
    // Loaded the way the pool loads its processes: through tsx, found from here.
    const child = fork(SELF, [config.redisUrl, config.prefix, config.queue, String(PER_PROCESS)], {
      execArgv: ['--import', import.meta.resolve('tsx')],
      stdio: 'inherit',
    });
    children.push(child);
    scope.defer(
      () =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          if (child.connected) child.send('stop');
          else child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
        }),
    );
  }
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('a raw worker process did not start')), READY_LIMIT_MS);
          child.once('message', () => {
            clearTimeout(timer);
            resolve();
          });
          child.once('exit', (code) => reject(new Error(`a raw worker process exited with code ${code}`)));
        }),
    ),
  );
  return children;
}

/** One raw worker process: a BullMQ Worker with an empty processor; says 'ready', ends on 'stop'. */
async function rawWorkerProcess(redisUrl: string, prefix: string, queue: string, concurrency: number): Promise<void> {
  const connection = createRedis(redisUrl, { name: `${prefix}:raw-worker` });
  const worker = new Worker(queue, async () => null, { connection, prefix, concurrency, autorun: false });
  worker.on('error', () => {});
  await worker.waitUntilReady();
  void worker.run();
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await worker.close().catch(() => undefined);
    connection.disconnect();
    process.exit(0);
  };
  process.on('message', (msg) => msg === 'stop' && void stop());
  process.on('disconnect', () => void stop());
  process.on('SIGTERM', () => void stop());
  process.send!('ready');
}

export const workerNoop: BenchCase = {
  name: 'worker no-op',
  async run(ctx) {
    const log = createLogger({ level: 'silent', pretty: false });
    // All the rounds: on a shared 2-core machine one round of either side varies by ±15%.
    const inProcess = await ctx.compare('worker no-op, in-process', { ours: oursInProcess(log), raw: rawInProcess });
    const pool = await ctx.compare('worker no-op, pool', { ours: oursPool(log), raw: rawPool });
    return [
      {
        name:
          `workers, ${fmt(TASKS)} no-op tasks, ${PROCESSES} processes × concurrency ${PER_PROCESS} ` +
          '(pool, as `taskmaster workers`)',
        ours: `${rate(TASKS, pool.ours.ms)}; ${cpuPer(TASKS, pool.ours, 'worker processes')}`,
        raw: `${rate(TASKS, pool.raw.ms)}; ${cpuPer(TASKS, pool.raw, 'worker processes')}`,
        ratio: pool.ratio.ms,
        goal: 0.9,
      },
      {
        name:
          `workers, ${fmt(TASKS)} no-op tasks, 1 process × concurrency ${CONCURRENCY} ` +
          '(TaskWorker embedded in-process; Redis-bound)',
        ours: `${rate(TASKS, inProcess.ours.ms)}; ${cpuPer(TASKS, inProcess.ours)}`,
        raw: `${rate(TASKS, inProcess.raw.ms)}; ${cpuPer(TASKS, inProcess.raw)}`,
        ratio: inProcess.ratio.ms,
      },
    ];
  },
};

if (process.argv[1] === SELF && process.send) {
  const [redisUrl, prefix, queue, concurrency] = process.argv.slice(2);
  void rawWorkerProcess(redisUrl!, prefix!, queue!, Number(concurrency)).catch((err) => {
    process.stderr.write(`raw worker: ${(err as Error).stack}\n`);
    process.exit(1);
  });
}
