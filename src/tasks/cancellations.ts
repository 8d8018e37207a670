import { Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { TaskmasterError } from '../errors.ts';
import { GATE_QUEUE } from '../queue/keys.ts';
import type { Gates } from './gates.ts';
import type { Outcomes } from './outcomes.ts';
import type { CancelledSnapshot } from '../archive/document.ts';

/** A run was stopped because someone cancelled its task; it is not retried. */
export class TaskCancelledError extends TaskmasterError {
  override readonly code = 'TASK_CANCELLED';
}

export const CANCELLED_REASON = 'cancelled';

export const cancelledSnapshotsKey = (prefix: string) => `${prefix}:tm:cancelled`;

export type CancelResult =
  | { id: string; state: 'removed'; was: string }
  | { id: string; state: 'cancelling' }
  | { id: string; state: 'finished'; was: 'completed' | 'failed' }
  | { id: string; state: 'not-found' };

/**
 * Durable cancel requests. A request is stored in a hash before anything else, and announced
 * on a channel; a worker that missed the announcement (it was reconnecting) finds the request
 * when it resubscribes. Only running tasks get one: a task that is not running is removed here.
 */
export class Cancellations {
  readonly hashKey: string;
  /** List of CancelledSnapshot JSON, taken by the archiver (or trimmed when there is none). */
  readonly cancelledKey: string;
  readonly channel: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly gates: Gates,
    private readonly outcomes: Outcomes,
  ) {
    this.hashKey = `${prefix}:tm:cancel`;
    this.cancelledKey = cancelledSnapshotsKey(prefix);
    this.channel = `${prefix}:tm:cancel`;
  }

  /**
   * Cancels a task: a waiting, delayed or blocked one is removed at once; a running one is
   * asked to stop wherever it runs (the worker aborts it, then kills it if it does not stop).
   */
  async request(queue: Queue, id: string): Promise<CancelResult> {
    const job = await Job.fromId(queue, id);
    if (!job) return { id, state: 'not-found' };
    const state = await job.getState();
    if (state === 'completed' || state === 'failed') return { id, state: 'finished', was: state };
    await this.redis.multi().hset(this.hashKey, id, JSON.stringify({ at: Date.now() })).publish(this.channel, id).exec();
    if (state === 'active') return { id, state: 'cancelling' };
    // Kept before the job goes, for the archive: a task cancelled before it ran is a finished
    // task too. Taken back if the job cannot be removed (it started meanwhile).
    const snapshot = JSON.stringify({
      queue: queue.name,
      id,
      name: job.name,
      data: job.data,
      priority: job.opts.priority,
      timestamp: job.timestamp,
      attemptsMade: job.attemptsMade,
      cancelledAt: Date.now(),
    } satisfies CancelledSnapshot);
    await this.redis.rpush(this.cancelledKey, snapshot);
    try {
      // Dependencies are tasks in their own right: keep them; gates exist only for this job.
      const deps = await job.getDependencies();
      await job.remove({ removeChildren: false });
      const gateIds = (deps.unprocessed ?? []).filter((k) => k.includes(`:${GATE_QUEUE}:`)).map((k) => k.slice(k.lastIndexOf(':') + 1));
      await Promise.all(gateIds.map((gid) => this.gates.queue.remove(gid).catch(() => 0)));
    } catch {
      await this.redis.lrem(this.cancelledKey, 1, snapshot);
      // It started meanwhile, perhaps after the announcement above reached its worker:
      // announce again now that it runs (the stored request covers a worker that is offline).
      await this.redis.publish(this.channel, id);
      return { id, state: 'cancelling' };
    }
    await this.outcomes.record('failed', { ...job, id, queueName: job.queueName }, CANCELLED_REASON);
    await this.done(id);
    return { id, state: 'removed', was: state };
  }

  /** Which of these job ids have a pending cancel request. */
  async pending(ids: string[]): Promise<Set<string>> {
    if (!ids.length) return new Set();
    const found = await this.redis.hmget(this.hashKey, ...ids);
    return new Set(ids.filter((_, i) => found[i]));
  }

  async done(id: string): Promise<void> {
    await this.redis.hdel(this.hashKey, id);
  }
}
