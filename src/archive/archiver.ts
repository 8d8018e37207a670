import { Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { keysFor, type Keys } from '../queue/keys.ts';
import { lua } from '../queue/scripts.ts';
import {
  documentFromJob,
  jobFromSnapshot,
  type CancelledSnapshot,
  type FinishedJob,
  type TaskDocument,
} from './document.ts';
import { FinishedJobs, type PendingJob } from './finished-jobs.ts';
import { fitForStorage, reduceRefused } from './storable.ts';
import type { ArchiveStore } from './store.ts';

export interface ArchiverOptions {
  connection: Redis;
  prefix: string;
  /** Who holds the archiving role while this archiver has it: the process root's instance id. */
  owner: string;
  queues: Queue[];
  /** Unset: no archive; finished jobs are only trimmed to `keep`. */
  store?: ArchiveStore;
  /** Finished jobs kept in Redis per queue, after archiving (the most recent). */
  keep: { completed: number; failed: number };
  log: Logger;
  /** Jobs per MongoDB write. @defaultValue 500 */
  batch?: number;
  /** Pause when there is nothing to do. @defaultValue 1000 */
  idleMs?: number;
  /** Longest pause between attempts while MongoDB is failing. @defaultValue 30000 */
  maxBackoffMs?: number;
}

/** What the archiver reports (API, status). */
export interface ArchiveLag {
  enabled: boolean;
  /** Finished jobs (and tasks cancelled before they ran) waiting to be archived. */
  pending: number;
  /** Age of the oldest of them, ms. */
  oldestAgeMs?: number;
  /**
   * Finished jobs (and cancelled tasks) whose document MongoDB refused even reduced: kept in
   * Redis, not archived; the master's log says why. Absent when none.
   */
  setAside?: number;
  lastError?: string;
}

/** How often the walk for jobs to archive starts from the oldest finished job. */
const FULL_WALK_EVERY_MS = 30_000;
/** How long one master holds the archiving role without renewing it. */
const LOCK_MS = 15_000;
/** The archiving role's lock (take-lock.lua, release-lock.lua): 1 when it is (now) the owner's, or was released. */
type LockCommands = Redis & {
  tmTakeLock(key: string, owner: string, ms: number): Promise<number>;
  tmReleaseLock(key: string, owner: string): Promise<number>;
};

/**
 * Moves every finished job — completed, failed for good, cancelled — from Redis into the
 * archive, losslessly: a job is marked archived only after MongoDB acknowledged its document,
 * and only archived jobs ever leave Redis (beyond the most recent `keep`, left for the page).
 * Documents are upserted by job id, so archiving again (a master killed between the write and
 * the mark, two masters) never duplicates. One master at a time archives (a lock in Redis that
 * another master takes over when its holder dies); while MongoDB is away it retries with
 * back-off and Redis keeps everything.
 *
 * A document MongoDB cannot store as it is (too large, too deep, refused) is stored reduced
 * (see storable.ts); one refused even reduced is set aside in Redis and reported in the lag.
 * Either way the rest of its batch is archived, and no round picks the same document again.
 *
 * Without a store it only keeps Redis trimmed: the most recent `keep` finished jobs stay.
 */
export class Archiver {
  private readonly sets: FinishedJobs[];
  private readonly lockKey: string;
  private readonly keys: Keys;
  private readonly cancelledKey: string;
  private readonly owner: string;
  private readonly log: Logger;
  private running = false;
  private loop?: Promise<void>;
  private wake?: () => void;
  private lastError?: string;
  private lastFullWalk = 0;

  constructor(private readonly opts: ArchiverOptions) {
    this.log = opts.log.child({ component: 'archiver' });
    this.owner = opts.owner;
    this.sets = opts.queues.map((q) => new FinishedJobs(opts.connection, opts.prefix, q));
    this.keys = keysFor(opts.prefix);
    this.lockKey = this.keys.archiverLock;
    this.cancelledKey = this.keys.cancelled;
    opts.connection.defineCommand('tmTakeLock', { numberOfKeys: 1, lua: lua('take-lock') });
    opts.connection.defineCommand('tmReleaseLock', { numberOfKeys: 1, lua: lua('release-lock') });
  }

  start(): this {
    this.running = true;
    this.loop = this.run();
    return this;
  }

  async close(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    // Hand the role over at once rather than after the lock expires (which it does if this fails).
    await (this.opts.connection as LockCommands).tmReleaseLock(this.lockKey, this.owner).catch(() => undefined);
  }

  private async run(): Promise<void> {
    let backoff = 0;
    while (this.running) {
      let busy = false;
      try {
        if (await this.takeLock()) busy = await this.round();
        if (backoff) this.log.info('archive is reachable again; catching up');
        backoff = 0;
        this.lastError = undefined;
      } catch (err) {
        backoff = Math.min(backoff ? backoff * 2 : 500, this.opts.maxBackoffMs ?? 30_000);
        this.lastError = (err as Error).message;
        this.log.warn({ err, retryInMs: backoff }, 'archiving failed; finished jobs stay in Redis until it succeeds');
      }
      if (!busy || backoff) await this.sleep(backoff || (this.opts.idleMs ?? 1000));
    }
  }

  private async takeLock(): Promise<boolean> {
    const r = this.opts.connection as LockCommands;
    return (await r.tmTakeLock(this.lockKey, this.owner, LOCK_MS)) === 1;
  }

  /** One batch per queue and of cancelled snapshots; true when there was work (go on at once). */
  private async round(): Promise<boolean> {
    const { store, keep } = this.opts;
    const batch = this.opts.batch ?? 500;
    let busy = false;
    for (const set of this.sets) {
      if (store) {
        // Now and then from the oldest, for jobs that arrived with an older finish time.
        const full = Date.now() - this.lastFullWalk > FULL_WALK_EVERY_MS;
        if (full) this.lastFullWalk = Date.now();
        const pending = await set.pending(batch, full);
        if (pending.length) {
          await this.archive(set, pending, store);
          busy ||= pending.length >= batch;
        }
      }
      const removed = await set.trim(keep, batch, !!store);
      busy ||= removed >= batch;
    }
    busy = (await this.cancelled(batch)) || busy;
    return busy;
  }

  private async archive(set: FinishedJobs, pending: PendingJob[], store: ArchiveStore): Promise<void> {
    const jobs = await Promise.all(pending.map((p) => Job.fromId(set.queue, p.id)));
    const docs: TaskDocument[] = [];
    const written: PendingJob[] = [];
    pending.forEach((p, i) => {
      const job = jobs[i];
      // Gone meanwhile (removed by someone): nothing left to archive.
      if (!job || job.finishedOn !== p.finishedOn) return;
      docs.push(documentFromJob(job as FinishedJob, p.state));
      written.push(p);
    });
    const refused = await this.write(store, docs);
    await set.markArchived(written.filter((_, i) => !refused.has(i)));
    await set.setAside(written.filter((_, i) => refused.has(i)));
    const counts = { archived: written.length - refused.size, setAside: refused.size };
    this.log.debug({ queue: set.queue.name, ...counts }, 'archived');
  }

  /**
   * Writes documents, each reduced as far as MongoDB needs: first what is known not to fit
   * (size, depth), then, for a document MongoDB refuses, its task data. Returns the indexes of
   * those it refused even then, for the caller to set aside.
   */
  private async write(store: ArchiveStore, docs: TaskDocument[]): Promise<Set<number>> {
    const fitted = docs.map(fitForStorage);
    for (const d of fitted) {
      if (d.reduced) this.log.warn({ id: d._id, reduced: d.reduced }, 'document archived reduced');
    }
    const refused = await store.write(fitted);
    if (!refused.length) return new Set();
    for (const r of refused) {
      this.log.warn({ id: fitted[r.index]!._id, reason: r.reason }, 'MongoDB refused a document; archiving it reduced');
    }
    const again = await store.write(refused.map((r) => reduceRefused(fitted[r.index]!, r.reason)));
    const aside = new Set(again.map((a) => refused[a.index]!.index));
    for (const a of again) {
      const id = fitted[refused[a.index]!.index]!._id;
      const what = 'MongoDB refused a document even reduced; it stays in Redis, set aside, not archived';
      this.log.error({ id, reason: a.reason }, what);
    }
    return aside;
  }

  /**
   * Tasks cancelled before they ran, kept as snapshots by the canceller: archived (with an
   * archive), then dropped; without one, only the most recent `keep.failed` are kept.
   */
  private async cancelled(batch: number): Promise<boolean> {
    const { connection, store, keep } = this.opts;
    if (!store) {
      await connection.ltrim(this.cancelledKey, -Math.max(1, keep.failed), -1);
      return false;
    }
    const raw = await connection.lrange(this.cancelledKey, 0, batch - 1);
    if (!raw.length) return false;
    const docs: TaskDocument[] = [];
    const texts: string[] = [];
    for (const text of raw) {
      try {
        docs.push(documentFromJob(jobFromSnapshot(JSON.parse(text) as CancelledSnapshot), 'cancelled'));
        texts.push(text);
      } catch (err) {
        this.log.error({ err, snapshot: text.slice(0, 200) }, 'unreadable snapshot of a cancelled task; dropped');
      }
    }
    const refused = await this.write(store, docs);
    const m = connection.multi();
    for (const text of raw) m.lrem(this.cancelledKey, 1, text);
    // Set aside: kept beside the list, counted in the lag, not tried again.
    for (const i of refused) m.rpush(this.keys.cancelledAside, texts[i]!);
    await m.exec();
    return raw.length === batch;
  }

  /** Jobs waiting to be archived and the age of the oldest (from Redis: works while MongoDB is away). */
  async lag(): Promise<ArchiveLag> {
    return archiveLag(this.sets, this.opts.connection, this.keys, !!this.opts.store, this.lastError);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}

/** The lag, read from Redis by whoever asks (the master's API, `taskmaster status`). */
export async function archiveLag(
  sets: FinishedJobs[],
  connection: Redis,
  keys: Pick<Keys, 'cancelled' | 'cancelledAside'>,
  enabled: boolean,
  lastError?: string,
): Promise<ArchiveLag> {
  if (!enabled) return { enabled, pending: 0 };
  const lags = await Promise.all(sets.map((s) => s.lag()));
  const snapshots = await connection.lrange(keys.cancelled, 0, 0);
  const cancelled = await connection.llen(keys.cancelled);
  // Snapshots whose document MongoDB refused even reduced.
  const cancelledAside = await connection.llen(keys.cancelledAside);
  let oldest = Math.min(...lags.map((l) => l.oldestFinishedOn ?? Infinity));
  if (snapshots[0]) oldest = Math.min(oldest, (JSON.parse(snapshots[0]) as CancelledSnapshot).cancelledAt);
  const out: ArchiveLag = { enabled, pending: lags.reduce((n, l) => n + l.count, 0) + cancelled };
  if (Number.isFinite(oldest)) out.oldestAgeMs = Math.max(0, Date.now() - oldest);
  const setAside = lags.reduce((n, l) => n + l.setAside, 0) + cancelledAside;
  if (setAside) out.setAside = setAside;
  if (lastError) out.lastError = lastError;
  return out;
}
