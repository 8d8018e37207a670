import { QueueEvents, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Components } from '../components.ts';
import { OutageLog } from '../queue/outage-log.ts';
import { decodeClaim, decodeOutcome } from './identity-records.ts';
import type { Outcomes } from './outcomes.ts';
import { taskFromJob, type JobTask } from './task.ts';

type Outcome = 'completed' | 'failed';

export interface OutcomeWatcherOptions {
  /** The queue watched. */
  queue: string;
  prefix: string;
  /** Duplicated for the blocking reads of the event stream; used as it is for the rest. */
  connection: Redis;
  /** The process root's: where jobs are read and outcomes recorded. */
  components: Pick<Components, 'keys' | 'queues' | 'outcomes'>;
  log: Logger;
}

/** A job the event stream (or a catch-up) says finished, and the event that said so. */
interface Finished {
  outcome: Outcome;
  jobId: string;
  reason?: string;
  eventId?: string;
}

/** Jobs read from Redis per round trip. */
const CHUNK = 500;
/**
 * How long before the last event handled a catch-up starts: a job's finish time is its
 * worker's clock, the event id Redis's.
 */
const CLOCK_SLACK_MS = 60_000;
/** Longest wait between tries while Redis refuses. */
const RETRY_MAX_MS = 5_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Records the outcome of every job of a queue that finishes for good without Taskmaster code
 * recording it — one completed or failed by a plain BullMQ worker, or failed by BullMQ itself
 * (stalled too often) — so that its dependents move on or fail instead of waiting forever.
 *
 * It follows the queue's BullMQ event stream from the last event it handled, kept in Redis
 * (`eventsSeen`), so what finished while no master ran is recorded when one starts. BullMQ
 * trims that stream (about 10,000 events); when it no longer holds the event after the last
 * one handled, the finished jobs since then are read from BullMQ's completed and failed sets
 * instead (caughtUp). A job whose outcome is already recorded — Taskmaster's workers record
 * theirs as they finish — is left alone; recording again would be harmless, only costlier.
 * A job that left Redis before it was read (removeOnComplete, or trimmed) cannot be recorded,
 * and is logged.
 */
export class OutcomeWatcher {
  private readonly log: Logger;
  private readonly connection: Redis;
  private readonly queue: Queue;
  private events?: QueueEvents;
  private pending: Finished[] = [];
  private draining?: Promise<void>;
  private closing = false;
  /** Resolves once what finished while no master watched is recorded, and events are followed. */
  readonly caughtUp: Promise<void>;

  constructor(private readonly opts: OutcomeWatcherOptions) {
    this.log = opts.log.child({ component: 'outcome-watcher', queue: opts.queue });
    this.queue = opts.components.queues.get(opts.queue);
    // QueueEvents blocks on XREAD, so it needs a connection of its own.
    this.connection = opts.connection.duplicate();
    this.caughtUp = this.start();
  }

  private get seenKey(): string {
    return this.opts.components.keys.eventsSeen(this.opts.queue);
  }

  private async start(): Promise<void> {
    const redis = this.opts.connection;
    let from = '0-0';
    for (let delay = 100; !this.closing; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      try {
        from = (await redis.get(this.seenKey)) ?? '0-0';
        const [first] = await redis.xrange(this.queue.keys.events!, '-', '+', 'COUNT', 1);
        // Events after `from` may have been trimmed away: read the finished sets instead.
        if (!first || compareIds(first[0], from) > 0) await this.catchUp(Number(from.split('-')[0]) - CLOCK_SLACK_MS);
        break;
      } catch (err) {
        this.log.warn({ err, retryInMs: delay }, 'could not read what finished while no master watched; trying again');
        await sleep(delay);
      }
    }
    if (this.closing) return;
    const { queue, prefix } = this.opts;
    this.events = new QueueEvents(queue, { connection: this.connection, prefix, lastEventId: from });
    this.events.on('error', OutageLog.listener(this.log, 'queue events error'));
    this.events.on('completed', ({ jobId }, eventId) => this.push({ outcome: 'completed', jobId, eventId }));
    this.events.on('failed', ({ jobId, failedReason: reason }, eventId) => {
      this.push({ outcome: 'failed', jobId, reason, eventId });
    });
  }

  /** Records the jobs that finished from `sinceMs` on, oldest first, whose outcome is not recorded. */
  private async catchUp(sinceMs: number): Promise<void> {
    let recorded = 0;
    for (const outcome of ['completed', 'failed'] as const) {
      // By rank: nothing leaves these sets meanwhile, as the master starts its archiver after this.
      for (let offset = 0; !this.closing; offset += CHUNK) {
        const set = this.queue.keys[outcome]!;
        const ids = await this.opts.connection.zrangebyscore(set, Math.max(0, sinceMs), '+inf', 'LIMIT', offset, CHUNK);
        if (!ids.length) break;
        recorded += await this.record(ids.map((jobId) => ({ outcome, jobId })));
      }
    }
    if (recorded) this.log.info({ recorded }, 'recorded the outcomes of jobs that finished while no master watched');
  }

  private push(f: Finished): void {
    this.pending.push(f);
    this.draining ??= this.drain();
  }

  /** Records pending outcomes in order, then keeps the last event handled; retries while Redis refuses. */
  private async drain(): Promise<void> {
    try {
      // The events of one read of the stream are handled together.
      await new Promise((r) => setImmediate(r));
      while (this.pending.length && !this.closing) {
        const batch = this.pending.splice(0, CHUNK);
        for (let delay = 100; !this.closing; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
          try {
            await this.record(batch);
            await this.opts.connection.set(this.seenKey, batch[batch.length - 1]!.eventId!);
            break;
          } catch (err) {
            const what = { err, jobs: batch.length, retryInMs: delay };
            this.log.warn(what, 'could not record outcomes of finished jobs; trying again');
            await sleep(delay);
          }
        }
      }
    } finally {
      this.draining = undefined;
    }
  }

  /** Records the outcome of each finished job that nothing recorded yet; returns how many. */
  private async record(items: Finished[]): Promise<number> {
    const redis = this.opts.connection;
    const { keys } = this.opts.components;
    const read = redis.pipeline();
    for (const it of items) {
      read.hmget(keys.job(this.opts.queue, it.jobId), 'name', 'data', 'timestamp', 'failedReason');
      read.zscore(this.queue.keys[it.outcome]!, it.jobId);
    }
    const rows = (await read.exec())!.map(([err, v]) => {
      if (err) throw err;
      return v;
    });
    const found: { it: Finished; job: Parameters<Outcomes['record']>[1]; task: JobTask; reason?: string }[] = [];
    items.forEach((it, i) => {
      const [name, data, timestamp, failedReason] = rows[2 * i] as (string | null)[];
      if (name === null) {
        const what = { jobId: it.jobId, outcome: it.outcome };
        return void this.log.warn(what, 'a finished job left Redis before its outcome was recorded');
      }
      // No longer in that state (retried since): where it ends next is another event.
      if (rows[2 * i + 1] === null) return;
      let parsed: unknown;
      try {
        parsed = data === null ? undefined : JSON.parse(data);
      } catch (err) {
        // Not written by BullMQ: no identity can be read from it, and retrying would not help.
        return void this.log.warn({ err, jobId: it.jobId }, 'finished job data is not JSON: outcome not recorded');
      }
      const job = { id: it.jobId, name, data: parsed, timestamp: Number(timestamp), queueName: this.opts.queue };
      const reason = it.outcome === 'failed' ? (it.reason ?? failedReason ?? undefined) : undefined;
      found.push({ it, job, task: taskFromJob(job), reason });
    });
    // What the identity records say (see identity-store.ts): the outcome's own record, and the
    // live entry (a claim `<at>|<job key>`, or a completion kept in its place, JSON).
    const check = redis.pipeline();
    for (const { it, task } of found) {
      check.hget(it.outcome === 'completed' ? keys.done : keys.failed, task.dependencyKey);
      check.hget(keys.live, task.taskKey);
    }
    const answers = (await check.exec())!.map(([err, v]) => {
      if (err) throw err;
      return v as string | null;
    });
    const jobKey = (f: (typeof found)[number]) => keys.job(this.opts.queue, f.it.jobId);
    const todo = found.filter((f, i) => !recorded(f.it, jobKey(f), answers[2 * i]!, answers[2 * i + 1]!));
    await Promise.all(todo.map((f) => this.opts.components.outcomes.record(f.it.outcome, f.job, f.reason, f.task)));
    return todo.length;
  }

  async close(): Promise<void> {
    this.closing = true;
    // start() logs its own failures and retries; closing only waits for it to stop.
    await this.caughtUp.catch(() => undefined);
    await this.draining;
    await this.events?.close();
    this.connection.disconnect();
  }
}

/**
 * Whether a finished job's outcome needs no recording: it is recorded already, or (a failure)
 * a newer run of its identity holds it now, whose dependents an old failure must not fail.
 */
function recorded(it: Finished, jobKey: string, own: string | null, live: string | null): boolean {
  if (decodeOutcome(own)?.jobId === it.jobId) return true;
  if (it.outcome === 'completed') return decodeOutcome(live)?.jobId === it.jobId;
  const claim = decodeClaim(live);
  return claim !== undefined && claim.jobKey !== jobKey;
}

/** Orders two stream ids (`<ms>-<seq>`). */
function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(Number) as [number, number];
  const [bm, bs] = b.split('-').map(Number) as [number, number];
  return am - bm || as - bs;
}
