import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { keysFor } from '../queue/keys.ts';
import { lua } from '../queue/scripts.ts';
import { FinishedJobRemover } from './remove-finished.ts';

export type FinishedState = 'completed' | 'failed';

export interface PendingJob {
  id: string;
  state: FinishedState;
  finishedOn: number;
}

type Scripts = Redis & {
  tmArchivePending(set: string, archived: string, aside: string, want: number, slack: number): Promise<string[]>;
  tmArchiveExcess(
    set: string,
    archived: string,
    aside: string,
    keep: number,
    most: number,
    needArchived: string,
  ): Promise<string[]>;
};

/** How far below the top of the archived ones a walk for pending ones starts. */
const SLACK = 1000;
const STATES: FinishedState[] = ['completed', 'failed'];

/** One queue's finished jobs in Redis, as the archive sees them. */
export class FinishedJobs {
  private readonly redis: Scripts;
  private readonly keys: Record<FinishedState, { set: string; archived: string; aside: string }>;
  private readonly remover: FinishedJobRemover;

  constructor(
    redis: Redis,
    prefix: string,
    readonly queue: Queue,
  ) {
    this.redis = redis as Scripts;
    if (!this.redis.tmArchivePending) {
      redis.defineCommand('tmArchivePending', { numberOfKeys: 3, lua: lua('archive-pending') });
      redis.defineCommand('tmArchiveExcess', { numberOfKeys: 3, lua: lua('archive-excess') });
    }
    const k = keysFor(prefix);
    const keys = (state: FinishedState) => ({
      set: k.queue(queue.name, state),
      archived: k.archived(queue.name, state),
      aside: k.archiveAside(queue.name, state),
    });
    this.keys = { completed: keys('completed'), failed: keys('failed') };
    this.remover = new FinishedJobRemover(redis, queue, prefix);
  }

  /** Up to `want` finished jobs of each state not archived yet, oldest first; `full` walks from the oldest. */
  async pending(want: number, full = false): Promise<PendingJob[]> {
    const out: PendingJob[] = [];
    for (const state of STATES) {
      const { set, archived, aside } = this.keys[state];
      const flat = await this.redis.tmArchivePending(set, archived, aside, want, full ? -1 : SLACK);
      for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i]!, state, finishedOn: Number(flat[i + 1]) });
    }
    return out;
  }

  /** Marks jobs archived, with the finish time their document holds. */
  async markArchived(jobs: PendingJob[]): Promise<void> {
    await this.mark(jobs, 'archived');
  }

  /**
   * Marks jobs set aside: MongoDB refused their document even reduced. They are not picked
   * again (until they finish again), stay in Redis (never trimmed) and are counted in the lag.
   */
  async setAside(jobs: PendingJob[]): Promise<void> {
    await this.mark(jobs, 'aside');
  }

  private async mark(jobs: PendingJob[], as: 'archived' | 'aside'): Promise<void> {
    if (!jobs.length) return;
    const m = this.redis.multi();
    for (const state of STATES) {
      const of = jobs.filter((j) => j.state === state);
      if (!of.length) continue;
      m.zadd(this.keys[state][as], ...of.flatMap((j) => [j.finishedOn, j.id]));
      // One set aside before, archived now that it finished again: no longer apart.
      if (as === 'archived') m.zrem(this.keys[state].aside, ...of.map((j) => j.id));
    }
    await m.exec();
  }

  /**
   * Removes the oldest finished jobs beyond `keep` of each state (with `needArchived`, only
   * archived ones), at most `most` of each a call; returns how many left Redis. A job leaves
   * only if it is still finished (and archived) when it is removed, and never with its
   * children: a parent that failed early may have children that have not run yet (see
   * FinishedJobRemover).
   */
  async trim(keep: Record<FinishedState, number>, most: number, needArchived: boolean): Promise<number> {
    let removed = 0;
    for (const state of STATES) {
      const { set, archived, aside } = this.keys[state];
      const ids = await this.redis.tmArchiveExcess(set, archived, aside, keep[state], most, needArchived ? '1' : '0');
      if (!ids.length) continue;
      const checkArchived = needArchived ? archived : undefined;
      const done = await Promise.all(ids.map((id) => this.remover.remove(id, set, checkArchived)));
      // A job that stayed (retried meanwhile) is archived again when it finishes again.
      await this.redis.zrem(archived, ...ids);
      removed += done.filter(Boolean).length;
    }
    return removed;
  }

  /** Finished jobs waiting to be archived, the finish time of the oldest of them, and those set aside. */
  async lag(): Promise<{ count: number; oldestFinishedOn?: number; setAside: number }> {
    let count = 0;
    let setAside = 0;
    let oldest = Infinity;
    for (const state of STATES) {
      const { set, archived, aside } = this.keys[state];
      const [total, done, apart, first] = await Promise.all([
        this.redis.zcard(set),
        this.redis.zcard(archived),
        this.redis.zcard(aside),
        this.redis.tmArchivePending(set, archived, aside, 1, SLACK),
      ]);
      // Archived and set-aside entries are jobs of the set, so the rest is the lag.
      count += Math.max(0, total - done - apart);
      setAside += apart;
      if (first.length) oldest = Math.min(oldest, Number(first[1]));
    }
    return Number.isFinite(oldest) ? { count, oldestFinishedOn: oldest, setAside } : { count, setAside };
  }
}
