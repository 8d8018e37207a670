import type { Logger } from 'pino';
import type { Gates } from './gates.ts';
import { outcomeRecord } from './identity-records.ts';
import type { IdentityStore } from './identity-store.ts';
import { moduleKey } from './identity.ts';
import { taskFromJob, type JobLike, type JobTask } from './task.ts';

type OutcomeJob = JobLike & { id: string; queueName: string };
type OutcomeTask = Pick<JobTask, 'taskKey' | 'dependencyKey'>;

/** How long a settle that Redis refused is retried, at most between tries. */
const RETRY_MAX_MS = 5000;

/**
 * Records how a task ended for good — completed, or failed with no attempt left — so that
 * dedup releases its identity and the tasks waiting on it move on (or fail), with a command of
 * its own: Finishing (queue/finishing.ts) calls it for the jobs its finishing script does not
 * record, the outcome watcher and the worker pool for jobs finished elsewhere. It is
 * idempotent, so a second call for the same job does no harm.
 */
export class Outcomes {
  /** Records sent ahead whose answer (and gate opening) is still to come → their job ids. */
  private readonly inFlight = new Map<Promise<void>, string>();
  private closing = false;

  constructor(
    private readonly store: IdentityStore,
    private readonly gates: Gates,
    private readonly log?: Logger,
  ) {}

  /** `task` may be passed when the caller already has it, to save hashing it again. */
  async record(
    outcome: 'completed' | 'failed',
    job: OutcomeJob,
    reason?: string,
    task: OutcomeTask = taskFromJob(job),
  ): Promise<void> {
    const waiting = await this.settle(outcome, job, reason, task).waiters;
    await this.gates.open(task.dependencyKey, waiting);
  }

  /**
   * Records the outcome ahead of the job's own move to completed or failed: resolves once the
   * record is written to the store's connection, so a BullMQ command sent next on that same
   * connection runs after it in Redis. The job cannot finish without its record (a process that
   * dies first leaves the job active, and it runs again), and the run saves a round trip. The
   * answer is handled after: gates opened, and a record Redis refused tried again until it
   * takes (close() waits for these).
   */
  async recordAhead(
    outcome: 'completed' | 'failed',
    job: OutcomeJob,
    reason?: string,
    task: OutcomeTask = taskFromJob(job),
  ): Promise<void> {
    const { sent, waiters } = this.settle(outcome, job, reason, task);
    const after = this.finish(outcome, job, reason, task, waiters);
    this.inFlight.set(after, job.id);
    void after.finally(() => this.inFlight.delete(after));
    await sent;
  }

  /**
   * Waits, up to `limitMs`, for the records sent ahead to be answered (and, where refused,
   * retried); what is still open then is logged, with its job ids.
   */
  async close(limitMs = 10_000): Promise<void> {
    this.closing = true;
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), limitMs)));
    while (this.inFlight.size) {
      if (!(await Promise.race([Promise.all(this.inFlight.keys()).then(() => true), limit]))) {
        this.log?.error(
          { jobIds: [...this.inFlight.values()] },
          'stopped with task outcomes not yet recorded in Redis',
        );
        break;
      }
    }
    clearTimeout(timer);
  }

  private settle(outcome: 'completed' | 'failed', job: OutcomeJob, reason: string | undefined, task: OutcomeTask) {
    return this.store.settle(
      outcome,
      {
        taskKey: task.taskKey,
        dependencyKey: task.dependencyKey,
        jobKey: this.store.keys.job(job.queueName, job.id),
        moduleKey: moduleKey(job.name),
      },
      outcomeRecord(job.id, Date.now(), outcome === 'completed' ? { queue: job.queueName } : { reason }),
    );
  }

  private async finish(
    outcome: 'completed' | 'failed',
    job: OutcomeJob,
    reason: string | undefined,
    task: OutcomeTask,
    first: Promise<string[]>,
  ): Promise<void> {
    let waiters = first;
    for (let delay = 100; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      try {
        // A gate left unopened is found by the reconciler: settle put its identity in `opening`.
        return await this.gates
          .open(task.dependencyKey, await waiters)
          .catch((err) => this.log?.warn({ err }, 'opening gates failed; the reconciler will'));
      } catch (err) {
        this.log?.error(
          { err, jobId: job.id, outcome, retryInMs: delay },
          'recording the outcome of a finished task failed; trying again',
        );
        await new Promise((r) => setTimeout(r, this.closing ? Math.min(delay, 500) : delay));
        waiters = this.settle(outcome, job, reason, task).waiters;
      }
    }
  }
}
