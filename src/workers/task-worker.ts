import { hostname } from 'node:os';
import { DelayedError, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { DependencyFailedError, UnknownModuleError } from '../errors.ts';
import { assertDependenciesSucceeded } from '../tasks/dependency-check.ts';
import { listenForAnnouncements } from '../tasks/announcements.ts';
import { Components } from '../components.ts';
import { processName } from '../instance-id.ts';
import type { Gates } from '../tasks/gates.ts';
import { CANCELLED_REASON, type Cancellations, TaskCancelledError } from '../tasks/cancellations.ts';
import type { Outcomes } from '../tasks/outcomes.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { taskFromJob, type JobTask } from '../tasks/task.ts';
import { ModuleLoader } from './module-loader.ts';
import type { RecentCancels } from '../tasks/recent-cancels.ts';
import type { ConsumerRegistry } from './registry.ts';
import { RunContext } from './run-context.ts';
import { ResultNotSerialisableError, RunAbort, runTask, type TaskContext } from './run-task.ts';
import { Finishing, isFinalAttempt } from '../queue/finishing.ts';
import { OutageLog } from '../queue/outage-log.ts';

export interface TaskWorkerOptions {
  config: Pick<Config, 'queue' | 'prefix' | 'concurrency' | 'tasksDir' | 'defaults'>;
  /** Shared connection for commands; BullMQ adds its own blocking one. */
  connection: Redis;
  client: TaskClient;
  /**
   * The process's shared components (see components.ts) on `connection`, which their builder
   * closes. @defaultValue components of the worker's own on `connection`, closed with it
   */
  components?: Components;
  log: Logger;
  /** Queue to serve. @defaultValue config.queue */
  queue?: string;
  /** Overrides config.concurrency. */
  concurrency?: number;
  /** Told when a run starts, ends, or lingers after an abort (a pool process asks to be replaced then). */
  hooks?: RunHooks;
  /**
   * How long a job's lock lasts without renewal: a process that dies silently gives its jobs
   * back after about this long plus `stalledIntervalMs`. @defaultValue 10000
   */
  lockDurationMs?: number;
  /** @defaultValue 5000 */
  stalledIntervalMs?: number;
  /** Grace after an abort before a run that gave no sign of stopping counts as lingering. @defaultValue 2000 */
  lingerMs?: number;
}

export interface RunInfo {
  jobId: string;
  queue: string;
  token: string;
  timeoutMs: number;
}

export interface RunHooks {
  /** Told as a run begins, before its module is loaded. */
  onStart?(run: RunInfo): void;
  onEnd?(run: RunInfo): void;
  /** A run was aborted (timeout, cancel) and gave no sign of stopping within `lingerMs`. */
  onLinger?(run: RunInfo): void;
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
  readonly outcomes: Outcomes;
  readonly cancellations: Cancellations;
  private readonly log: Logger;
  /** Runs in flight in this process, by job id, so a cancel can reach them. */
  private readonly runs = new Map<string, Begun>();
  private stopListening?: () => void;
  /** Cancel announcements for runs not (yet) here. */
  private readonly recentCancels: RecentCancels;
  readonly registry: ConsumerRegistry;
  readonly consumerId: string;
  private stopHeartbeat?: () => Promise<void>;
  private readonly openingChannel: string;
  /** Finishes this worker's jobs with their outcomes recorded (see finishing.ts). */
  readonly finishing: Finishing;
  /** Grace and handler for aborted runs that keep going; one for all runs. */
  private readonly linger: { ms: number; onLinger(ctx: TaskContext): void };
  /** Components built here when none were given, closed with the worker. */
  private readonly own?: Components;
  private readonly parts: Components;

  constructor(private readonly opts: TaskWorkerOptions) {
    const { config, connection } = opts;
    this.log = opts.log.child({ component: 'worker' });
    this.linger = { ms: opts.lingerMs ?? 2000, onLinger: (ctx) => this.lingered(ctx) };
    this.loader = new ModuleLoader(config.tasksDir);
    // Given none, the worker builds its own components on its connection (with the client's archive for gates).
    const identityArchive = opts.client.store.archive;
    const parts = (this.parts =
      opts.components ?? (this.own = new Components({ config, connection, log: this.log, identityArchive })));
    this.gates = parts.gates;
    this.outcomes = parts.outcomes;
    // Outcomes are written on the connection the BullMQ Worker finishes jobs on: sent ahead is enough.
    this.finishing = new Finishing({ connection, outcomes: this.outcomes, log: this.log, ahead: true });
    this.cancellations = parts.cancellations;
    this.worker = new Worker(
      opts.queue ?? config.queue,
      (job, token) => this.process(job, token!) as Promise<unknown>,
      {
        connection,
        prefix: config.prefix,
        concurrency: opts.concurrency ?? config.concurrency,
        name: processName(),
        autorun: false,
        lockDuration: opts.lockDurationMs ?? 10_000,
        stalledInterval: opts.stalledIntervalMs ?? 5_000,
      },
    );
    this.finishing.prepare(this.worker);
    this.worker.on('error', OutageLog.listener(this.log, 'worker error'));
    this.registry = parts.registry;
    this.openingChannel = parts.keys.openingChannel;
    this.consumerId = parts.instanceId;
    this.recentCancels = parts.recentCancels;
  }

  private get queueName(): string {
    return this.opts.queue ?? this.opts.config.queue;
  }

  /** Starts taking jobs (and runs the gate worker in this process too). */
  start(): this {
    this.gates.start(this.opts.connection);
    this.listenForAnnouncements();
    const startedAt = Date.now();
    this.stopHeartbeat = this.registry.heartbeat(async () => ({
      id: this.consumerId,
      kind: 'worker',
      host: hostname(),
      pid: process.pid,
      queues: [this.queueName],
      modules: await this.loader.list(),
      concurrency: this.opts.concurrency ?? this.opts.config.concurrency,
      startedAt,
      running: [...this.runs.keys()],
    }));
    void this.worker.run().catch((err) => this.log.error({ err }, 'worker stopped with an error'));
    return this;
  }

  /** Stops taking jobs and waits for the runs in flight (all of them, unless `force`). */
  async close(force = false): Promise<void> {
    await this.worker.close(force);
    await this.stopHeartbeat?.();
    this.stopListening?.();
    this.loader.close();
    await this.own?.close();
  }

  /** Aborts a run in this process, if it is here. */
  abort(jobId: string, reason: Error): boolean {
    const run = this.runs.get(jobId);
    run?.abort.abort(reason);
    return Boolean(run);
  }

  /** The runs in flight in this process. */
  running(): RunInfo[] {
    return [...this.runs.values()];
  }

  private takeRecentCancel(jobId: string, abort: RunAbort): void {
    if (this.recentCancels.take(jobId)) abort.abort(new TaskCancelledError(`task ${jobId} was cancelled`));
  }

  /** What runTask does with a run that was aborted and shows no sign of stopping. */
  private lingered(ctx: TaskContext): void {
    ctx.log.warn('aborted run shows no sign of stopping');
    this.opts.hooks?.onLinger?.((ctx as RunContext).run!);
  }

  private listenForAnnouncements(): void {
    this.stopListening = listenForAnnouncements({
      connection: this.opts.connection,
      cancellations: this.cancellations,
      gates: this.gates,
      openingChannel: this.openingChannel,
      held: () => [...this.runs.keys()],
      // A cancel may arrive just before its run registers here (the job is already active in
      // Redis): remember it briefly, and process() checks before starting.
      cancel: (id) => {
        if (!this.abort(id, new TaskCancelledError(`task ${id} was cancelled`))) this.recentCancels.remember(id);
      },
      log: this.log,
    });
  }

  /**
   * Runs one job: checks that its dependencies succeeded, loads its module, runs it, and records
   * its outcome where the finishing script will not.
   */
  private async process(job: BullJob, token: string): Promise<unknown> {
    const task = taskFromJob(job);
    const r = this.begin(job, token, task);
    let result: unknown;
    try {
      if (task.dependencies.length) await assertDependenciesSucceeded(job, this.parts);
      let fn;
      try {
        fn = this.loader.loaded(task.module) ?? (await this.loader.load(task.module));
      } catch (err) {
        await this.handBackIfRunnableElsewhere(err, job, token, r.ctx);
        throw err;
      }
      result = await runTask(fn, task.params, r.ctx, r.timeoutMs, r.abort, this.linger);
      await this.finishing.recordCompletion(job, task);
    } catch (err) {
      return this.failed(err, job, task, r);
    }
    this.end(r);
    return result;
  }

  /** A run registered where cancels and the owner's hooks reach it. */
  private begin(job: BullJob, token: string, task: JobTask): Begun {
    const jobId = job.id!;
    const abort = new RunAbort();
    const ctx = new RunContext(job, task.module, this.log, abort, this.opts.client);
    const r: Begun = {
      jobId,
      queue: job.queueName,
      token,
      timeoutMs: task.timeout ?? this.opts.config.defaults.timeout,
      abort,
      ctx,
    };
    ctx.run = r;
    this.runs.set(jobId, r);
    this.opts.hooks?.onStart?.(r);
    if (this.recentCancels.size) this.takeRecentCancel(jobId, abort);
    return r;
  }

  private end(r: Begun): void {
    this.runs.delete(r.jobId);
    this.opts.hooks?.onEnd?.(r);
  }

  /** Ends a run that failed: records a final failure, and throws what BullMQ should see. */
  private async failed(err: unknown, job: BullJob, task: JobTask, r: Begun): Promise<never> {
    try {
      if (err instanceof DelayedError) throw err;
      const error = isUnrecoverable(err) ? new UnrecoverableError(failureReason(err)) : (err as Error);
      const final = isFinalAttempt(job, error);
      r.ctx.log.warn({ err, attempt: job.attemptsMade + 1, final }, 'task failed');
      if (final) await this.finishing.recordFailure(job, task, error);
      if (err instanceof TaskCancelledError) await this.cancellations.done(r.jobId);
      throw error;
    } finally {
      this.end(r);
    }
  }

  /**
   * Consumers are expected to hold the same modules; where they differ, one that lacks a
   * module hands the job back (no attempt spent) while another live one announces it.
   */
  private async handBackIfRunnableElsewhere(err: unknown, job: BullJob, token: string, ctx: RunContext): Promise<void> {
    if (
      !(err instanceof UnknownModuleError) ||
      !(await this.registry.canRun(ctx.module, job.queueName, this.consumerId))
    )
      return;
    ctx.log.info('module not here but another consumer has it; handing the job back');
    await job.moveToDelayed(Date.now() + 1000, token);
    throw new DelayedError();
  }
}

/** A run in flight, as begin registered it. */
interface Begun extends RunInfo {
  abort: RunAbort;
  ctx: RunContext;
}

/** Errors for which another attempt cannot help. */
function isUnrecoverable(err: unknown): boolean {
  return (
    err instanceof UnrecoverableError ||
    err instanceof TaskCancelledError ||
    err instanceof UnknownModuleError ||
    err instanceof DependencyFailedError ||
    err instanceof ResultNotSerialisableError
  );
}

/** What dependents and the archive see: cancellations say so plainly. */
function failureReason(err: unknown): string {
  return err instanceof TaskCancelledError ? CANCELLED_REASON : (err as Error).message;
}
