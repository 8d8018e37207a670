import { Job, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Outcomes } from './outcomes.ts';
import type { TaskClient } from './task-client.ts';
import { OutageLog } from '../queue/outage-log.ts';

/**
 * Some jobs fail for good without any Taskmaster code in the loop: BullMQ fails a job that
 * stalled too often inside its own scripts, and a plain BullMQ worker may consume the queue.
 * The master watches the queue's event stream and records those failures too, so that their
 * dependents fail instead of waiting forever. Recording is idempotent, so a failure a worker
 * already recorded is harmless here.
 */
export class FailureWatcher {
  private readonly events: QueueEvents;
  private readonly connection: Redis;

  constructor(opts: { queue: string; prefix: string; connection: Redis; client: TaskClient; outcomes: Outcomes; log: Logger }) {
    const log = opts.log.child({ component: 'failure-watcher' });
    // QueueEvents blocks on XREAD, so it needs a connection of its own.
    this.connection = opts.connection.duplicate();
    this.events = new QueueEvents(opts.queue, { connection: this.connection, prefix: opts.prefix });
    this.events.on('error', OutageLog.listener(log, 'queue events error'));
    this.events.on('failed', ({ jobId, failedReason }) => {
      void (async () => {
        const job = await Job.fromId(opts.client.queue(opts.queue), jobId);
        if (!job || !job.finishedOn || (await job.getState()) !== 'failed') return;
        await opts.outcomes.record('failed', job as Job & { id: string }, failedReason);
      })().catch((err) => log.warn({ err, jobId }, 'could not record a failure'));
    });
  }

  async close(): Promise<void> {
    await this.events.close();
    this.connection.disconnect();
  }
}
