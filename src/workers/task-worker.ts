import { hostname } from 'node:os';
import { Job, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { DependencyFailedError, UnknownModuleError } from '../errors.ts';
import { describeDependency, Gates } from '../tasks/gates.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { taskFromJob, type JobTask } from '../tasks/task.ts';
import { ModuleLoader } from './module-loader.ts';
import { ResultNotSerialisableError, runTask, type TaskContext } from './run-task.ts';

export interface TaskWorkerOptions {
  config: Pick<Config, 'queue' | 'prefix' | 'concurrency' | 'tasksDir' | 'defaults'>;
  /** Shared connection for commands; BullMQ adds its own blocking one. */
  connection: Redis;
  client: TaskClient;
  log: Logger;
  /** Queue to serve. @defaultValue config.queue */
  queue?: string;
  /** Overrides config.concurrency. */
  concurrency?: number;
}

/**
 * A BullMQ Worker that runs task modules: it checks that the task's dependencies succeeded,
 * loads the module, runs it with its timeout and records the outcome of its identity so that
 * tasks waiting on it move on.
 */
export class TaskWorker {
  readonly worker: Worker;
  readonly loader: ModuleLoader;
  readonly gates: Gates;
  private readonly log: Logger;

  constructor(private readonly opts: TaskWorkerOptions) {
    const { config, connection } = opts;
    this.log = opts.log.child({ component: 'worker' });
    this.loader = new ModuleLoader(config.tasksDir);
    this.gates = new Gates({ connection, prefix: config.prefix, store: opts.client.store, log: this.log });
    this.worker = new Worker(opts.queue ?? config.queue, (job) => this.process(job), {
      connection,
      prefix: config.prefix,
      concurrency: opts.concurrency ?? config.concurrency,
      name: `${hostname()}:${process.pid}`,
      autorun: false,
    });
    this.worker.on('error', (err) => this.log.error({ err }, 'worker error'));
  }

  /** Starts taking jobs (and runs the gate worker in this process too). */
  start(): this {
    this.gates.start(this.opts.connection);
    void this.worker.run().catch((err) => this.log.error({ err }, 'worker stopped with an error'));
    return this;
  }

  async close(force = false): Promise<void> {
    await this.worker.close(force);
    await this.gates.close();
  }

  private async process(job: BullJob): Promise<unknown> {
    const task = taskFromJob(job as BullJob & { id: string });
    const log = this.log.child({ jobId: job.id, module: task.module });
    const jobKey = this.opts.client.keys.job(job.queueName, job.id!);
    try {
      if (task.dependencies.length) await this.checkDependencies(job);
      const fn = await this.loader.load(task.module);
      const abort = new AbortController();
      const ctx: TaskContext = {
        signal: abort.signal,
        log,
        jobId: job.id!,
        module: task.module,
        attempt: job.attemptsMade + 1,
        progress: (value) => job.updateProgress(value),
        add: async (tasks) => (await this.opts.client.add(tasks)).map((t) => t.id),
      };
      const result = await runTask(fn, task.params, ctx, task.timeout ?? this.opts.config.defaults.timeout, abort);
      await this.settle('completed', task, jobKey, job.id!);
      return result;
    } catch (err) {
      const final = isUnrecoverable(err) || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      log.warn({ err, attempt: job.attemptsMade + 1, final }, 'task failed');
      const error = isUnrecoverable(err) ? new UnrecoverableError((err as Error).message) : err;
      if (final) await this.settle('failed', task, jobKey, job.id!, (err as Error).message);
      throw error;
    }
  }

  /** A dependent runs only when every dependency completed; a failed one fails it for good. */
  private async checkDependencies(job: BullJob): Promise<void> {
    const failures = Object.entries(await job.getIgnoredChildrenFailures());
    if (!failures.length) return;
    const [childKey, reason] = failures[0]!;
    const parts = childKey.split(':');
    const childId = parts.pop()!;
    const childQueue = parts.pop()!;
    let name = childKey;
    if (!reason.startsWith('dependency ')) {
      const child = await Job.fromId(this.opts.client.queue(childQueue), childId).catch(() => undefined);
      if (child) name = `${describeDependency(taskFromJob(child))} (job ${childId})`;
    }
    throw new DependencyFailedError(reason.startsWith('dependency ') ? reason : `dependency ${name} failed for good: ${reason}`);
  }

  private async settle(outcome: 'completed' | 'failed', task: JobTask, jobKey: string, jobId: string, reason?: string) {
    const store = this.opts.client.store;
    const waiting = await store.settle(outcome, { taskKey: task.taskKey, dependencyKey: task.dependencyKey, jobKey }, { jobId, at: Date.now(), reason });
    await this.gates.open(task.dependencyKey, waiting);
  }
}

/** Errors for which another attempt cannot help. */
function isUnrecoverable(err: unknown): boolean {
  return (
    err instanceof UnrecoverableError ||
    err instanceof UnknownModuleError ||
    err instanceof DependencyFailedError ||
    err instanceof ResultNotSerialisableError
  );
}
