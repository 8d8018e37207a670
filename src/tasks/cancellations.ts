import { Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { TaskmasterError } from '../errors.ts';
import { GATE_QUEUE, keysFor, type Keys } from '../queue/keys.ts';
import { cancelScript, lua } from '../queue/scripts.ts';
import type { CancelledSnapshot } from '../archive/document.ts';
import type { Gates } from './gates.ts';
import { encodeOutcome, outcomeRecord } from './identity-records.ts';
import type { Outcomes } from './outcomes.ts';
import { taskFromJob } from './task.ts';

/** A run was stopped because someone cancelled its task; it is not retried. */
export class TaskCancelledError extends TaskmasterError {
  override readonly code = 'TASK_CANCELLED';
}

export const CANCELLED_REASON = 'cancelled';

export type CancelResult =
  | { id: string; state: 'removed'; was: string }
  | { id: string; state: 'cancelling' }
  | { id: string; state: 'finished'; was: 'completed' | 'failed' }
  | { id: string; state: 'not-found' };

/** What is stored for a running job asked to stop; the queue lets the sweep find the job. */
interface CancelRequest {
  at: number;
  queue: string;
}

/** How often a listener of cancel requests forgets those whose runs ended without them. */
export const CANCEL_SWEEP_MS = 30_000;

type Scripted = Redis & {
  tmCancel(...keysAndArgs: (string | number)[]): Promise<string[]>;
  tmSweepCancels(requests: string, prefix: string): Promise<number>;
};

function scripted(redis: Redis): Scripted {
  const r = redis as Scripted;
  if (typeof r.tmCancel !== 'function') {
    redis.defineCommand('tmCancel', { numberOfKeys: 8, lua: cancelScript() });
    redis.defineCommand('tmSweepCancels', { numberOfKeys: 1, lua: lua('sweep-cancels') });
  }
  return r;
}

/**
 * Cancels tasks. Whether a task is finished, running or not yet running is decided in the same
 * step as what is done about it (cancel.lua), so a task that finishes meanwhile keeps its result:
 * - finished: nothing changes;
 * - running: a request is stored in a hash and announced on a channel; a worker that missed the
 *   announcement (it was reconnecting) finds the request when it resubscribes, and requests
 *   whose runs ended without honouring them are swept;
 * - otherwise: the job is removed with its gates, kept as a snapshot for the archive, its
 *   identity recorded as failed `cancelled`, and its dependents fail naming it — through their
 *   gates, or, for a flow parent, through its failed children as with a failing child.
 */
export class Cancellations {
  readonly hashKey: string;
  /** List of CancelledSnapshot JSON, taken by the archiver (or trimmed when there is none). */
  readonly cancelledKey: string;
  readonly channel: string;
  private readonly redis: Scripted;
  private readonly keys: Keys;

  /** `_outcomes` is no longer used: the cancel script records the outcome itself. */
  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly gates: Gates,
    _outcomes?: Outcomes,
  ) {
    this.redis = scripted(redis);
    this.keys = keysFor(prefix);
    this.hashKey = this.keys.cancel;
    this.cancelledKey = this.keys.cancelled;
    this.channel = this.keys.cancelChannel;
  }

  /**
   * Cancels a task: a waiting, delayed or blocked one is removed at once; a running one is
   * asked to stop wherever it runs (the worker aborts it, then kills it if it does not stop).
   */
  async request(queue: Queue, id: string): Promise<CancelResult> {
    // Read first only for what the script needs about the task (its identity, its snapshot);
    // what happens is decided by the script against the job's state then.
    const job = await Job.fromId(queue, id);
    if (!job) return { id, state: 'not-found' };
    const task = taskFromJob(job);
    const now = Date.now();
    const snapshot: CancelledSnapshot = {
      queue: queue.name,
      id,
      name: job.name,
      data: job.data,
      priority: job.opts.priority,
      timestamp: job.timestamp,
      attemptsMade: job.attemptsMade,
      cancelledAt: now,
    };
    const request: CancelRequest = { at: now, queue: queue.name };
    const jobKey = this.keys.job(queue.name, id);
    const out = await this.redis.tmCancel(
      jobKey,
      this.hashKey,
      this.cancelledKey,
      this.keys.live,
      this.keys.done,
      this.keys.failed,
      this.keys.opening,
      this.keys.waiters(task.dependencyKey),
      id,
      this.keys.queue(queue.name, ''),
      now,
      JSON.stringify(request),
      this.channel,
      JSON.stringify(snapshot),
      task.taskKey,
      task.dependencyKey,
      encodeOutcome(outcomeRecord(id, now, { reason: CANCELLED_REASON })),
      CANCELLED_REASON,
      this.keys.queue(GATE_QUEUE, ''),
    );
    const [state, was, ...waiters] = out;
    if (state === 'finished') return { id, state, was: was as 'completed' | 'failed' };
    if (state === 'cancelling' || state === 'not-found') return { id, state };
    // Recorded as failed in the same step: a crash before the gates open leaves the identity in
    // `opening`, which the gate reconciler works off.
    if (waiters.length) await this.gates.open(task.dependencyKey, waiters);
    return { id, state: 'removed', was: was! };
  }

  /** Which of these job ids have a pending cancel request. */
  async pending(ids: string[]): Promise<Set<string>> {
    if (!ids.length) return new Set();
    const found = await this.redis.hmget(this.hashKey, ...ids);
    return new Set(ids.filter((_, i) => found[i]));
  }

  /** The request for a job is honoured: it goes. */
  async done(id: string): Promise<void> {
    await this.redis.hdel(this.hashKey, id);
  }

  /**
   * Forgets the requests whose runs ended without honouring them (finished first, or by a
   * consumer that does not listen for cancels); returns how many.
   */
  sweep(): Promise<number> {
    return this.redis.tmSweepCancels(this.hashKey, this.prefix);
  }

  /** Sweeps now and every `everyMs`; returns the stopper. A failed sweep is retried at the next tick. */
  sweepEvery(everyMs = CANCEL_SWEEP_MS, onError: (err: unknown) => void = () => {}): () => void {
    const tick = () => void this.sweep().catch(onError);
    tick();
    const timer = setInterval(tick, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }
}
