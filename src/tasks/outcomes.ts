import type { Gates } from './gates.ts';
import type { IdentityStore } from './identity-store.ts';
import { taskFromJob, type JobLike, type JobTask } from './task.ts';

/**
 * Records how a task ended for good — completed, or failed with no attempt left — so that
 * dedup releases its identity and the tasks waiting on it move on (or fail). Whoever finishes a
 * job calls it: a worker process, the worker pool after killing a run, the bridge for remote
 * runners. It is idempotent, so a second call for the same job does no harm.
 */
export class Outcomes {
  constructor(
    private readonly store: IdentityStore,
    private readonly gates: Gates,
  ) {}

  /** `task` may be passed when the caller already has it, to save hashing it again. */
  async record(
    outcome: 'completed' | 'failed',
    job: JobLike & { id: string; queueName: string },
    reason?: string,
    task: Pick<JobTask, 'taskKey' | 'dependencyKey'> = taskFromJob(job),
  ): Promise<void> {
    const waiting = await this.store.settle(
      outcome,
      { taskKey: task.taskKey, dependencyKey: task.dependencyKey, jobKey: this.store.keys.job(job.queueName, job.id) },
      { jobId: job.id, at: Date.now(), reason },
    );
    await this.gates.open(task.dependencyKey, waiting);
  }
}
