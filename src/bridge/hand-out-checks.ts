import type { Job } from 'bullmq';
import { DependencyFailedError } from '../errors.ts';
import { CANCELLED_REASON } from '../tasks/cancellations.ts';
import { assertDependenciesSucceeded, type DependencyReader } from '../tasks/dependency-check.ts';
import type { JobTask } from '../tasks/task.ts';

/** Why a fetched job must fail for good instead of going to a runner. */
export interface Refusal {
  /** The job's failedReason, which dependents and the archive see too. */
  reason: string;
  /** A cancel request, whose stored entry is then done with. */
  cancelled?: boolean;
}

/**
 * The checks between fetching a job and handing it to a runner: a cancel announced before the
 * job was held here; a task started too often without finishing (each start whose runner
 * disconnected is free, so this is what stops a task that kills its runners); a dependency that
 * failed for good (dependents reach a consumer when one does, and must fail, not run).
 */
export async function refusalBeforeHandOut(
  job: Job,
  task: JobTask,
  opts: { announced: Map<string, number>; maxStarts: number; components: DependencyReader },
): Promise<Refusal | undefined> {
  if (opts.announced.delete(job.id!)) return { reason: CANCELLED_REASON, cancelled: true };
  if (job.attemptsStarted > opts.maxStarts) {
    return {
      reason:
        `task was started ${job.attemptsStarted} times without finishing (its runners disconnected or stalled); ` +
        `at most ${opts.maxStarts} are allowed`,
    };
  }
  if (task.dependencies.length) {
    try {
      await assertDependenciesSucceeded(job, opts.components);
    } catch (err) {
      if (!(err instanceof DependencyFailedError)) throw err;
      return { reason: err.message };
    }
  }
  return undefined;
}
