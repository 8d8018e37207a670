import { Worker, type Job, type JobJson } from 'bullmq';

/**
 * A Worker for manual processing that can also turn the next job a finishing call fetched
 * (`job.moveToCompleted(value, token, true)`) into a Job, with BullMQ's protected
 * nextJobFromJobData, as its own workers do.
 */
export class ManualWorker extends Worker {
  /** `raw` is what moveToCompleted with fetchNext returned: [jobData, jobId, …]. */
  jobFrom(raw: unknown[], token: string): Promise<Job | undefined> {
    const [data, id] = raw as [JobJson | undefined, string | undefined];
    return this.nextJobFromJobData(data, id, token);
  }
}
