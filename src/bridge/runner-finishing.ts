import { UnrecoverableError, type Job, type Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Outcomes } from '../tasks/outcomes.ts';
import type { JobTask } from '../tasks/task.ts';
import { installFinishScript, passIdentityKeys } from '../workers/finish-script.ts';

/** A task's identity keys, computed once at hand-out, for recording its outcome. */
export type OutcomeKeys = Pick<JobTask, 'taskKey' | 'dependencyKey' | 'keysStored'>;

/**
 * How the bridge finishes the jobs runners held, with the finishing code local workers use (the
 * bridge's one way into it). A job that carries its identity keys has its outcome recorded by
 * the script that finishes it; any other (and every one, where BullMQ's script changed shape)
 * by a command of its own, written first: if this process dies before the job is finished, the
 * job runs again (recording twice is harmless), whereas the reverse order could leave dependents
 * waiting on a completion nobody recorded.
 */
export class RunnerFinishing {
  private readonly inScript: boolean;

  constructor(
    connection: Redis,
    private readonly outcomes: Outcomes,
    log: Logger,
  ) {
    this.inScript = installFinishScript(connection);
    if (!this.inScript) {
      log.warn("BullMQ's finishing script has changed shape; runner outcomes are recorded by a command of their own");
    }
  }

  /** Makes `worker`'s finishing calls hand the script the identity keys it records outcomes with. */
  prepare(worker: Worker): void {
    if (this.inScript) passIdentityKeys(worker);
  }

  /** Records a completion where the finishing script will not; call it before `moveToCompleted`. */
  async recordCompletion(job: Job, keys: OutcomeKeys): Promise<void> {
    if (!this.recordsInScript(keys)) await this.outcomes.record('completed', withId(job), undefined, keys);
  }

  /** Completes a held job; with `fetchNext`, BullMQ's answer carries the next job under the same token. */
  moveToCompleted(job: Job, token: string, result: unknown, fetchNext: boolean): Promise<unknown> {
    return job.moveToCompleted(result, token, fetchNext);
  }

  /** Fails this attempt of a held job; BullMQ retries it per the job's attempts and backoff. */
  async failAttempt(job: Job, token: string, err: Error, keys: OutcomeKeys): Promise<void> {
    const final = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    if (final && !this.recordsInScript(keys)) await this.outcomes.record('failed', withId(job), err.message, keys);
    await job.moveToFailed(err, token, false);
  }

  /** Fails a held job with no retry; `reason` becomes its failedReason and its identity's recorded reason alike. */
  async failForGood(job: Job, token: string, reason: string, keys: OutcomeKeys): Promise<void> {
    if (!this.recordsInScript(keys)) await this.outcomes.record('failed', withId(job), reason, keys);
    await job.moveToFailed(new UnrecoverableError(reason), token, false);
  }

  private recordsInScript(keys: OutcomeKeys): boolean {
    return this.inScript && keys.keysStored;
  }
}

/** A job runners hold was fetched from Redis, so it has its id. */
const withId = (job: Job) => job as Job & { id: string };
