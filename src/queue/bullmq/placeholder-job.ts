import { Job, type Queue } from 'bullmq';

/**
 * A Job object for job `id` of `queue` without its data, for the calls that need only the queue,
 * the id and a lock token (moveToWait, moveToFailed on a job this process holds), sparing a read
 * of the job hash. Which fields those calls read is BullMQ's own business, hence here.
 */
export function placeholderJob(queue: Queue, id: string): Job {
  return new Job(queue, '', {}, {}, id);
}
