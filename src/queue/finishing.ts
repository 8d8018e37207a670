import { UnrecoverableError, type Job, type Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { encodeOutcome, outcomeRecord } from '../tasks/identity-records.ts';
import { moduleKey } from '../tasks/identity.ts';
import type { Outcomes } from '../tasks/outcomes.ts';
import { storedKeys, type JobTask } from '../tasks/task.ts';
import { appendFinishArgs, finishingBackend, type FinishingJob } from './bullmq/finish-args.ts';
import { moveToFinishedCommand } from './bullmq/move-to-finished.ts';
import { encodeScriptCommands } from './command-encoding.ts';
import { keysFor } from './keys.ts';
import { finishScript } from './scripts.ts';

/** A task's identity keys, as recording its outcome needs them (a JobTask has them). */
export type OutcomeKeys = Pick<JobTask, 'taskKey' | 'dependencyKey' | 'keysStored'>;

/** A job being finished: fetched from Redis, so it has its id. */
type Finished = Job & { id: string };

/**
 * Whether failing this attempt with `err` ends the job for good, as BullMQ decides it
 * (Job.shouldRetryJob): an UnrecoverableError, or no attempt left.
 */
export function isFinalAttempt(job: Pick<Job, 'attemptsMade' | 'opts'>, err: unknown): boolean {
  return err instanceof UnrecoverableError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

export interface FinishingOptions {
  /** The connection jobs are finished on: BullMQ's finishing script is replaced there by ours. */
  connection: Redis;
  /** Records the outcomes the finishing script does not. */
  outcomes: Outcomes;
  log: Logger;
  /**
   * Whether such a record is only sent ahead of the job's finishing command (Outcomes.recordAhead)
   * rather than awaited: right where `outcomes` writes on `connection`, since Redis runs one
   * connection's commands in order. @defaultValue false
   */
  ahead?: boolean;
}

/**
 * Where a task's job is finished and its outcome recorded — completed, or failed with no attempt
 * left — so that dedup releases its identity and the tasks waiting on it move on (or fail).
 * Local workers (TaskWorker: BullMQ's Worker finishes the job once the processor returns) and the
 * bridge for remote runners (it finishes the jobs runners held) use one each, and so does the
 * worker pool for a run whose process it killed (WorkerPool.failRun). Jobs finished by anyone
 * else (plain BullMQ workers) are recorded by the master's OutcomeWatcher.
 *
 * A job finished by a worker prepare() was given — whoever produced it — has its outcome recorded
 * by the script that finishes it (finish-record.lua spliced into BullMQ's moveToFinished), under
 * the keys recordCompletion or recordFailure was given: a job cannot finish without its record,
 * and a completion costs no command of ours. Elsewhere on `connection` the script reads the keys
 * from the job's data, where TaskClient stored them. Any other job — one without stored keys
 * finished elsewhere, or every job where BullMQ's script has changed shape — has its outcome
 * recorded by a command of its own, sent first: if this process dies before the job is finished,
 * the job runs again (recording twice is harmless), whereas the reverse order could leave
 * dependents waiting on a completion nobody recorded.
 */
export class Finishing {
  /** Whether `connection` finishes jobs with the script that records their outcomes. */
  readonly inScript: boolean;
  private readonly outcomes: Outcomes;
  private readonly ahead: boolean;
  /** What finishes the jobs of the workers prepare() was given (see finishingBackend). */
  private readonly handing = new WeakSet<object>();
  /** The keys to hand the finishing script for jobs about to finish through those workers. */
  private readonly toHand = new WeakMap<Job, OutcomeKeys>();

  constructor(opts: FinishingOptions) {
    this.outcomes = opts.outcomes;
    this.ahead = opts.ahead ?? false;
    this.inScript = installFinishScript(opts.connection);
    if (!this.inScript) {
      opts.log.warn(
        "BullMQ's finishing script has changed shape; task outcomes are recorded by a command of their own",
      );
    }
  }

  /** Makes `worker` (on `connection`) hand the finishing script the identity keys it records outcomes with. */
  prepare(worker: Worker): void {
    if (!this.inScript) return;
    // Where the worker cannot hand the keys, jobs without stored keys keep a command of their own.
    if (passIdentityKeys(worker, (job) => this.toHand.get(job as Job))) this.handing.add(finishingBackend(worker));
  }

  /** Records a completion where the finishing script will not; call it before the job is moved to completed. */
  async recordCompletion(job: Job, keys: OutcomeKeys): Promise<void> {
    if (!this.leftToScript(job, keys)) await this.record('completed', job as Finished, keys);
  }

  /**
   * Records a failure for good where the finishing script will not; call it before the job is
   * moved to failed, for a final attempt (isFinalAttempt). Its reason is `err`'s message, as
   * BullMQ keeps it in failedReason.
   */
  async recordFailure(job: Job, keys: OutcomeKeys, err: Error): Promise<void> {
    if (!this.leftToScript(job, keys)) await this.record('failed', job as Finished, keys, err.message);
  }

  /** Completes a held job; with `fetchNext`, BullMQ's answer carries the next job under the same token. */
  moveToCompleted(job: Job, token: string, result: unknown, fetchNext: boolean): Promise<unknown> {
    return job.moveToCompleted(result, token, fetchNext);
  }

  /**
   * Fails this attempt of a held job: BullMQ retries it per the job's attempts and backoff, and
   * never after an UnrecoverableError.
   */
  async fail(job: Job, token: string, err: Error, keys: OutcomeKeys): Promise<void> {
    if (isFinalAttempt(job, err)) await this.recordFailure(job, keys, err);
    await job.moveToFailed(err, token, false);
  }

  /**
   * Leaves the record of `job` to the script that finishes it, noting `keys` for it where this
   * Finishing's workers hand them; false where that script will not record it.
   */
  private leftToScript(job: Job, keys: OutcomeKeys): boolean {
    if (!this.inScript) return false;
    if (!this.handing.has(finishingBackend(job))) return keys.keysStored;
    this.toHand.set(job, keys);
    return true;
  }

  private record(outcome: 'completed' | 'failed', job: Finished, keys: OutcomeKeys, reason?: string): Promise<void> {
    return this.ahead
      ? this.outcomes.recordAhead(outcome, job, reason, keys)
      : this.outcomes.record(outcome, job, reason, keys);
  }
}

/**
 * What passIdentityKeys hands the finishing script after BullMQ's arguments, in this order
 * (ARGV[10..17] of finish-record.lua).
 */
const HANDED = ['task', 'dependency', 'live', 'waiters', 'record', 'module', 'moduleWaiters', 'done'] as const;
/** One string per handed argument, in HANDED's order. */
type Handed = StringsFor<typeof HANDED>;
type StringsFor<T extends readonly unknown[]> = { [K in keyof T]: string };
/** What is handed for a job without identity keys. */
const NONE_HANDED = HANDED.map(() => '');

/**
 * Makes `connection` finish jobs with finishScript. BullMQ defines its scripts on a connection
 * only where they are not defined yet, and this replaces its own where it already did.
 * Returns false (and changes nothing) when the script cannot be built.
 */
export function installFinishScript(connection: Redis): boolean {
  const lua = finishScript();
  if (!lua) return false;
  const { name, keys } = moveToFinishedCommand;
  connection.defineCommand(name, { numberOfKeys: keys, lua });
  // Sent once per job: worth encoding the quicker way.
  encodeScriptCommands(connection, name);
  return true;
}

/**
 * Makes `worker` hand the finishing script what it needs to record each job's outcome: the
 * identity keys, our keys for them and the completion record, built here rather than in the
 * script (see finish-record.lua), so that the script need not read and decode the job's data
 * nor make strings in Redis, where every job's finishing step is spent and which a busy queue
 * waits on. The identity keys are those `given` has for the job, else those its data carries
 * (by the same test as JobTask.keysStored). Returns false where the worker's finishing arguments
 * are not BullMQ's as expected, and nothing is handed (see appendFinishArgs).
 */
export function passIdentityKeys(worker: Worker, given?: (job: FinishingJob) => OutcomeKeys | undefined): boolean {
  const keys = keysFor(worker.opts.prefix ?? 'bull');
  const queue = worker.name;
  return appendFinishArgs(worker, (job, jobId, at) => {
    const own = given?.(job);
    const ids = own ? { task: own.taskKey, dependency: own.dependencyKey } : storedKeys(job.data);
    // None is said too, so the script does not look for them.
    if (!ids) return NONE_HANDED;
    // The record as Outcomes writes it; `at` is the finishing time BullMQ hands the script.
    const mk = moduleKey(job.name);
    return [
      ids.task,
      ids.dependency,
      keys.live,
      keys.waiters(ids.dependency),
      encodeOutcome(outcomeRecord(jobId, at, { queue })),
      mk,
      keys.waiters(mk),
      keys.done,
    ] satisfies Handed;
  });
}
