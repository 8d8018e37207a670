import type { Redis } from 'ioredis';
import { ArchiveLookupTimeoutError } from '../errors.ts';
import type { Keys } from '../queue/keys.ts';
import { lua } from '../queue/scripts.ts';
import { encodeOutcome, parseOutcome, type Outcome } from './identity-records.ts';

type Scripted = Redis & {
  tmHide(failed: string, readding: string, now: number, ...pairs: string[]): Promise<number[]>;
  /** numberOfKeys first: 3 + one waiters key per pair. */
  tmGiveBack(numberOfKeys: number, ...keysAndArgs: string[]): Promise<string[]>;
  tmOutcomes(
    live: string,
    done: string,
    failed: string,
    readding: string,
    now: number,
    hides: number,
    ...dependencyKeys: string[]
  ): Promise<string[]>;
  /** numberOfKeys first: 4 + one waiters key per item. */
  tmSettle(numberOfKeys: number, ...keysAndArgs: string[]): Promise<string[][]>;
};

function scripted(redis: Redis): Scripted {
  const r = redis as Scripted;
  if (typeof r.tmHide !== 'function') {
    redis.defineCommand('tmHide', { numberOfKeys: 2, lua: lua('hide-failures') });
    redis.defineCommand('tmGiveBack', { lua: lua('give-back-failures') });
    redis.defineCommand('tmOutcomes', { numberOfKeys: 4, lua: lua('outcomes') });
    redis.defineCommand('tmSettle', { lua: lua('settle') });
  }
  return r;
}

export interface ClaimItem {
  taskKey: string;
  dependencyKey: string;
  jobKey: string;
}

/** An identity whose outcome is recorded, with its module's key (see moduleKey). */
export type SettleItem = ClaimItem & { moduleKey: string };

export type { Outcome };

/**
 * Where identities that completed long ago are still found when Redis no longer has their
 * record (the archive, see archive/store.ts).
 */
export interface IdentityArchive {
  completed(dependencyKeys: string[]): Promise<Map<string, { jobId: string; at: number }>>;
}

interface PendingSettle {
  outcome: 'completed' | 'failed';
  item: SettleItem;
  record: Outcome;
  sent(): void;
  resolve(waiters: string[]): void;
  reject(err: unknown): void;
}

/**
 * How long a re-add in progress hides its identity's failure for good (hidden.lua): longer than
 * an add takes (its archive lookups are bounded well below this, see TaskClient), short enough
 * that a producer that died half-way does not hide a failure for long.
 */
export const READD_HIDES_MS = 30_000;
const CHUNK = 1000;

/** `lookup`, or an ArchiveLookupTimeoutError if it has not answered within `ms`. */
async function withinLimit<T>(lookup: Promise<T>, ms: number, count: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const what = `${count} dependenc${count === 1 ? 'y' : 'ies'}`;
      const message = `archive lookup of ${what} (completions no longer in Redis) did not answer within ${ms} ms`;
      reject(new ArchiveLookupTimeoutError(message));
    }, ms);
  });
  try {
    return await Promise.race([lookup, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Durable records about task identities: which live task holds each one (dedup), which
 * dependency keys completed or failed for good, and which gates wait on each.
 */
export class IdentityStore {
  private readonly redis: Scripted;
  /** Asked about identities Redis has no outcome for; what it knows is written back to Redis. */
  archive?: IdentityArchive;
  /** Outcomes waiting for this turn's command (see settle). */
  private settling: PendingSettle[] = [];
  constructor(
    redis: Redis,
    readonly keys: Keys,
  ) {
    this.redis = scripted(redis);
  }

  /**
   * Hides the failures for good of the identities among `items` that have one, while the batch
   * adding them again is on its way (see hide-failures.lua); returns those items, to give back if the batch
   * is not written.
   */
  async hideFailures<T extends Pick<ClaimItem, 'dependencyKey' | 'jobKey'>>(
    items: T[],
    now = Date.now(),
  ): Promise<T[]> {
    const hidden: T[] = [];
    for (let i = 0; i < items.length; i += CHUNK) {
      const part = items.slice(i, i + CHUNK);
      const pairs = part.flatMap((it) => [it.dependencyKey, it.jobKey]);
      if (!pairs.length) continue;
      const out = await this.redis.tmHide(this.keys.failed, this.keys.readding, now, ...pairs);
      for (const n of out) hidden.push(part[n - 1]!);
    }
    return hidden;
  }

  /**
   * Gives back what hideFailures hid for a batch that was not written (see give-back-failures.lua); returns
   * the dependency keys whose gates are to be opened.
   */
  async giveBackFailures(items: Pick<ClaimItem, 'dependencyKey' | 'jobKey'>[]): Promise<string[]> {
    const toOpen: string[] = [];
    for (let i = 0; i < items.length; i += CHUNK) {
      const part = items.slice(i, i + CHUNK);
      const { readding, failed, opening } = this.keys;
      const keys = [readding, failed, opening, ...part.map((it) => this.keys.waiters(it.dependencyKey))];
      const pairs = part.flatMap((it) => [it.dependencyKey, it.jobKey]);
      toOpen.push(...(await this.redis.tmGiveBack(keys.length, ...keys, ...pairs)));
    }
    return toOpen;
  }

  /**
   * Records the outcome; `waiters` resolves to the ids of the gates waiting on this identity.
   * Outcomes recorded in the same turn of the event loop go to Redis together, in one command,
   * written at the end of the turn; `sent` resolves once it is written, ahead of whatever is
   * sent on this connection after that (Redis runs a connection's commands in order).
   */
  settle(
    outcome: 'completed' | 'failed',
    item: SettleItem,
    record: Outcome,
  ): { sent: Promise<void>; waiters: Promise<string[]> } {
    let sent!: () => void;
    const sentP = new Promise<void>((r) => (sent = r));
    const waiters = new Promise<string[]>((resolve, reject) => {
      if (this.settling.push({ outcome, item, record, sent, resolve, reject }) === 1)
        setImmediate(() => this.flushSettles());
    });
    return { sent: sentP, waiters };
  }

  private flushSettles(): void {
    const batch = this.settling;
    this.settling = [];
    for (let i = 0; i < batch.length; i += CHUNK) {
      const part = batch.slice(i, i + CHUNK);
      const keys = [this.keys.live, this.keys.done, this.keys.failed, this.keys.opening];
      const args: string[] = [this.keys.openingChannel];
      for (const { outcome, item, record } of part) {
        keys.push(this.keys.waiters(item.dependencyKey), this.keys.waiters(item.moduleKey));
        const { taskKey, dependencyKey, jobKey, moduleKey } = item;
        args.push(outcome, taskKey, dependencyKey, jobKey, encodeOutcome(record), moduleKey);
      }
      this.redis.tmSettle(keys.length, ...keys, ...args).then(
        (out) => part.forEach((s, n) => s.resolve(out[n] ?? [])),
        (err) => part.forEach((s) => s.reject(err)),
      );
      // ioredis has written the command (or queued it, in order, while reconnecting).
      for (const s of part) s.sent();
    }
  }

  /**
   * Outcome per dependency key: completed wins over failed; undefined while neither, and while
   * a re-add of a failed one is in progress. With `archiveLimitMs`, an archive lookup that has
   * not answered in that time rejects with ArchiveLookupTimeoutError (adds, which must not wait
   * without end); without, it is waited for (the gate worker, which only waits).
   */
  async outcomes(
    dependencyKeys: string[],
    opts: { archiveLimitMs?: number } = {},
  ): Promise<(({ state: 'completed' | 'failed' } & Outcome) | undefined)[]> {
    if (!dependencyKeys.length) return [];
    const read: string[] = [];
    const { live, done, failed, readding } = this.keys;
    const now = Date.now();
    for (let i = 0; i < dependencyKeys.length; i += CHUNK) {
      const part = dependencyKeys.slice(i, i + CHUNK);
      read.push(...(await this.redis.tmOutcomes(live, done, failed, readding, now, READD_HIDES_MS, ...part)));
    }
    const out = read.map((f) => {
      if (!f) return undefined;
      return {
        state: f[0] === 'c' ? ('completed' as const) : ('failed' as const),
        ...parseOutcome(f.slice(1)),
      };
    });
    const unknown = dependencyKeys.filter((_, i) => !out[i]);
    if (this.archive && unknown.length) {
      // An archive that is away must not stop adds: the identity counts as not completed.
      const archive = this.archive;
      const lookup = Promise.resolve()
        .then(() => archive.completed(unknown))
        .catch(() => new Map<string, Outcome>());
      const limit = opts.archiveLimitMs;
      const found = limit === undefined ? await lookup : await withinLimit(lookup, limit, unknown.length);
      if (found.size) {
        const m = this.redis.multi();
        for (const [dk, o] of found) m.hsetnx(this.keys.done, dk, encodeOutcome(o));
        await m.exec();
        dependencyKeys.forEach((dk, i) => {
          const o = found.get(dk);
          if (!out[i] && o) out[i] = { state: 'completed', ...o };
        });
      }
    }
    return out;
  }

  waiters(dependencyKey: string): Promise<string[]> {
    return this.redis.smembers(this.keys.waiters(dependencyKey));
  }

  async forgetWaiters(dependencyKey: string, gateIds: string[]): Promise<void> {
    if (gateIds.length) await this.redis.srem(this.keys.waiters(dependencyKey), ...gateIds);
  }

  opening(): Promise<string[]> {
    return this.redis.smembers(this.keys.opening);
  }

  async opened(dependencyKey: string): Promise<void> {
    await this.redis.srem(this.keys.opening, dependencyKey);
  }
}
