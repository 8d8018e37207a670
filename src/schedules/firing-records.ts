import type { Redis } from 'ioredis';
import type { Keys } from '../queue/keys.ts';
import type { IdentityStore } from '../tasks/identity-store.ts';

/** What one firing of a schedule did, as `taskmaster schedules` shows it. */
export interface FiringRecord {
  /**
   * The firing's identity, also the scope of its tasks: `schedule:<name>@<time>`
   * (`@manual:<time>` for a run by hand).
   */
  firing: string;
  /** ISO 8601 UTC: the time the firing was scheduled for (for a run by hand, when it was asked for). */
  scheduledAt: string;
  /** ISO 8601 UTC: when its tasks were added (or when it failed). */
  firedAt: string;
  manual: boolean;
  tickers: number;
  /** Tasks of the firing: one per ticker, and the summary when there is one. */
  tasks: number;
  /** Tasks added by this firing (the others were already there: the firing had been seen before). */
  added: number;
  duplicates: number;
  /** Job id of the summary task, when the schedule has one. */
  summaryId?: string;
  /** Why the firing added nothing, when it failed for good. */
  error?: string;
}

/** A firing record with how its tasks are doing now. */
export interface FiringProgress extends FiringRecord {
  /** Tasks of the firing (the summary included) that completed / failed for good so far. */
  done: number;
  failed: number;
  summary?: 'completed' | 'failed' | 'pending';
}

/** Firing ids remembered per schedule, to answer a firing seen again long after its tasks finished. */
const FIRED_KEPT = 1000;
const ARCHIVE_LIMIT_MS = 5000;

/** The Redis records of schedules' firings (keys in queue/keys.ts). */
export class FiringRecords {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {}

  /** Whether a firing was added already (by this master, another one, or an attempt before a crash). */
  async fired(name: string, firing: string): Promise<boolean> {
    return (await this.redis.zscore(this.keys.scheduleFired(name), firing)) !== null;
  }

  /** Records a firing that was added, with the dependency keys of its tasks (summary last). */
  async added(name: string, record: FiringRecord, dependencyKeys: string[]): Promise<void> {
    const fired = this.keys.scheduleFired(name);
    await this.redis
      .multi()
      .hset(this.keys.schedule(name), 'last', JSON.stringify(record), 'keys', JSON.stringify(dependencyKeys))
      .zadd(fired, Date.parse(record.firedAt), record.firing)
      .zremrangebyrank(fired, 0, -FIRED_KEPT - 1)
      .exec();
  }

  /** Records a firing that failed for good (nothing of it was added). */
  async failed(name: string, record: FiringRecord): Promise<void> {
    await this.redis.hset(this.keys.schedule(name), 'last', JSON.stringify(record), 'keys', '[]');
  }

  /** The last firing of a schedule and how its tasks are doing (identity records, and the archive). */
  async last(name: string, store: IdentityStore): Promise<FiringProgress | undefined> {
    const [last, keys] = await this.redis.hmget(this.keys.schedule(name), 'last', 'keys');
    if (!last) return undefined;
    const record = JSON.parse(last) as FiringRecord;
    const dks = JSON.parse(keys ?? '[]') as string[];
    // The archive is asked about tasks whose records left Redis, for a few seconds at most.
    const outcomes = await store.outcomes(dks, { archiveLimitMs: ARCHIVE_LIMIT_MS });
    const progress: FiringProgress = {
      ...record,
      done: outcomes.filter((o) => o?.state === 'completed').length,
      failed: outcomes.filter((o) => o?.state === 'failed').length,
    };
    if (record.summaryId !== undefined && outcomes.length) progress.summary = outcomes.at(-1)?.state ?? 'pending';
    return progress;
  }

  /** Drops a removed schedule's records. */
  async forget(name: string): Promise<void> {
    await this.redis.del(this.keys.schedule(name), this.keys.scheduleFired(name));
  }
}
