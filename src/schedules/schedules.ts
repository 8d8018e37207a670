import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { ScheduleConfig } from '../config/config-file.ts';
import type { Config } from '../config/config.ts';
import { ConfigError, InvalidTaskError } from '../errors.ts';
import { isFinalAttempt } from '../queue/finishing.ts';
import { keysFor, SCHEDULE_QUEUE, type Keys } from '../queue/keys.ts';
import { OutageLog } from '../queue/outage-log.ts';
import { canonicalJson } from '../tasks/identity.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { FiringRecords } from './firing-records.ts';
import { fireSchedule, firingTasks, manualFiring, scheduledFiring, type FireResult } from './firing.ts';

/**
 * Options of every firing job: a firing that could not be added (Redis away) is tried again,
 * and the last firing jobs stay in the queue to look at.
 */
const FIRING_JOB_OPTS = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 2000 },
  removeOnComplete: { count: 100 },
  removeOnFail: { count: 100 },
};

/** Firings processed at once by one master (each is one batch, however many tickers). */
const CONCURRENCY = 4;

export interface SyncResult {
  added: string[];
  updated: string[];
  unchanged: string[];
  removed: string[];
}

/** The scheduler of a schedule: its id, job name and template data are the schedule's name and definition. */
export function schedulesQueue(connection: Redis, prefix: string, log: Logger): Queue<ScheduleConfig> {
  const queue = new Queue<ScheduleConfig>(SCHEDULE_QUEUE, { connection, prefix });
  queue.on('error', OutageLog.listener(log, 'schedule queue error'));
  return queue;
}

/**
 * The schedules of the config file as BullMQ job schedulers in the internal queue `_schedules`,
 * and the worker that turns each firing job into one atomic batch of tasks.
 *
 * Missed firings: BullMQ keeps one pending firing job per scheduler and makes the next one only
 * when a worker takes the pending one. A firing due while no master ran therefore happens once
 * when a master is back (the earliest one missed, under its own scheduled time) and the others
 * are skipped: a day's analysis is still worth running late, a backlog of identical ones is not.
 * Start-up leaves an unchanged scheduler as it is so that its pending firing survives; a changed
 * schedule is replaced and starts from its next run.
 */
export class Schedules {
  readonly queue: Queue<ScheduleConfig>;
  private readonly log: Logger;
  private readonly keys: Keys;
  private readonly records: FiringRecords;
  private worker?: Worker<ScheduleConfig>;

  constructor(private readonly opts: { config: Config; connection: Redis; client: TaskClient; log: Logger }) {
    this.log = opts.log.child({ component: 'schedules' });
    this.queue = schedulesQueue(opts.connection, opts.config.prefix, this.log);
    this.keys = keysFor(opts.config.prefix);
    this.records = new FiringRecords(opts.connection, this.keys);
  }

  /**
   * Checks every schedule as a firing would build it (a problem stops start-up, naming the
   * schedule), makes Redis match the config file, then starts the firing worker.
   */
  async start(): Promise<this> {
    const { config } = this.opts;
    for (const s of config.schedules) checkSchedule(s, this.opts.client);
    const result = await this.sync();
    if (config.configFile !== undefined) {
      this.log.info({ ...result, configFile: config.configFile }, 'schedules in Redis match the config file');
    }
    this.worker = new Worker<ScheduleConfig>(SCHEDULE_QUEUE, (job) => this.fire(job), {
      connection: this.opts.connection,
      prefix: config.prefix,
      concurrency: CONCURRENCY,
    });
    this.worker.on('error', OutageLog.listener(this.log, 'schedule worker error'));
    return this;
  }

  /**
   * Upserts the schedules of the config file as job schedulers and removes the ones it does not
   * list. Idempotent, and safe with several masters starting at once: an unchanged scheduler
   * whose pending firing exists is left alone. A master started without a config file leaves
   * the schedulers as they are (it only runs firings): it cannot tell what the schedules are.
   */
  async sync(): Promise<SyncResult> {
    const { config } = this.opts;
    const result: SyncResult = { added: [], updated: [], unchanged: [], removed: [] };
    const existing = new Map((await this.queue.getJobSchedulers(0, -1)).map((s) => [s.key, s]));
    if (config.configFile === undefined) {
      if (existing.size) {
        this.log.info(
          { schedules: [...existing.keys()] },
          'no config file: the schedules in Redis keep firing as they are',
        );
      }
      result.unchanged = [...existing.keys()];
      return result;
    }
    for (const s of config.schedules) {
      const current = existing.get(s.name);
      existing.delete(s.name);
      if (current && (await this.upToDate(s, current))) {
        result.unchanged.push(s.name);
        continue;
      }
      await this.queue.upsertJobScheduler(
        s.name,
        { pattern: s.cron, tz: s.tz },
        { name: s.name, data: s, opts: FIRING_JOB_OPTS },
      );
      (current ? result.updated : result.added).push(s.name);
    }
    for (const name of existing.keys()) {
      await this.queue.removeJobScheduler(name);
      await this.records.forget(name);
      result.removed.push(name);
    }
    return result;
  }

  /** Whether a scheduler has the schedule's pattern, zone and definition, and its pending firing. */
  private async upToDate(s: ScheduleConfig, current: Awaited<ReturnType<Queue['getJobScheduler']>>): Promise<boolean> {
    if (!current || current.pattern !== s.cron || current.tz !== s.tz) return false;
    if (canonicalJson(current.template?.data) !== canonicalJson(s)) return false;
    if (current.next === undefined) return false;
    const pending = await this.queue.getJob(`repeat:${s.name}:${current.next}`);
    return Boolean(pending && !pending.finishedOn);
  }

  /**
   * A firing job: its scheduled time is the job's `prevMillis` (also the end of its id). One that
   * fails for good is recorded with its reason, for `taskmaster schedules`.
   */
  private async fire(job: Job<ScheduleConfig>): Promise<FireResult> {
    const s = job.data;
    const at = job.opts.prevMillis ?? Number(job.id!.slice(job.id!.lastIndexOf(':') + 1));
    const firing = scheduledFiring(s.name, at);
    const lateMs = Date.now() - at;
    // A firing that was due while no master ran fires now, once (see the class comment).
    if (lateMs > 60_000) this.log.info({ schedule: s.name, firing: firing.id, lateMs }, 'firing a missed run');
    try {
      const ctx = { client: this.opts.client, keys: this.keys, redis: this.opts.connection, log: this.log };
      return await fireSchedule(ctx, s, firing);
    } catch (err) {
      const invalid = err instanceof InvalidTaskError;
      const final = invalid || isFinalAttempt(job, err);
      this.log.error({ err, schedule: s.name, firing: firing.id, final }, 'a firing failed');
      if (final) {
        const record = {
          firing: firing.id,
          scheduledAt: new Date(at).toISOString(),
          firedAt: new Date().toISOString(),
          manual: false,
          tickers: s.tickers.length,
          tasks: 0,
          added: 0,
          duplicates: 0,
          error: (err as Error).message,
        };
        await this.records
          .failed(s.name, record)
          .catch((e: unknown) => this.log.warn({ err: e }, 'could not record a failed firing'));
      }
      // An invalid firing is invalid at every attempt.
      throw invalid ? new UnrecoverableError((err as Error).message) : err;
    }
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue.close();
  }
}

/** Builds a schedule's firing once, so that what a firing would refuse stops start-up instead. */
export function checkSchedule(s: ScheduleConfig, client: TaskClient): void {
  try {
    firingTasks(s, manualFiring(s.name), client.config);
  } catch (err) {
    if (!(err instanceof InvalidTaskError)) throw err;
    const p = err.problems[0]!;
    throw new ConfigError(`schedule ${JSON.stringify(s.name)}: ${p.field}: ${p.message}`, { cause: err });
  }
}
