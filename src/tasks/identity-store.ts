import type { Redis } from 'ioredis';
import { ArchiveLookupTimeoutError } from '../errors.ts';
import type { Keys } from '../queue/keys.ts';
import { lua } from '../queue/scripts.ts';

/** Lua: claimOf (lua/includes/claim-of.lua). */
const CLAIM_OF_LUA = lua('includes/claim-of');

/**
 * Lua for the add script: the job key that holds an identity while it is live, or false, from
 * its entry `cur` in the live hash. Claims are written by the script that writes their jobs, so a claim
 * whose job is gone (removed by hand) or finished (its claim never released) holds nothing.
 */
export const HOLDER_LUA = `${CLAIM_OF_LUA}
local function holderOf(cur)
  local _, curKey = claimOf(cur)
  if curKey and redis.call('EXISTS', curKey) == 1 and not redis.call('HGET', curKey, 'finishedOn') then
    return curKey
  end
  return false
end
`;

/**
 * Lua for the add script: the job key of the completed task whose record `cur` (its entry in the
 * live hash, see SETTLE_ONE_LUA) is from `since` (ms) or later, or false. A new task of that
 * identity is then a duplicate of it (the dedup window); `since` below 0 (a rerun asked for)
 * counts no completion. `jk` is the new task's job key, whose prefix (and queue, for records
 * that name none) the completed one's shares.
 */
export const COMPLETED_HOLDER_LUA = `
local function completedHolder(cur, since, jk)
  if since < 0 or not cur or string.byte(cur, 1) ~= 123 then return false end
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' or type(rec['at']) ~= 'number' or rec['at'] < since then return false end
  local pfx, queue = string.match(jk, '^(.*):([^:]*):[^:]*$')
  if type(rec['queue']) == 'string' then queue = rec['queue'] end
  if not pfx or rec['jobId'] == nil then return false end
  return pfx .. ':' .. queue .. ':' .. tostring(rec['jobId'])
end
`;

/**
 * Lua (after CLAIM_OF_LUA): whether the failure for good recorded for `dk` is hidden by a re-add
 * of it in progress (an entry of the `readding` hash, `<started at>|<job key>`, younger than
 * `hides` ms): new dependents then wait for the new run instead of failing on the old one.
 */
export const HIDDEN_LUA = `
local function failureHidden(readding, dk, now, hides)
  local at = claimOf(redis.call('HGET', readding, dk))
  return at and now - at < hides
end
`;

/**
 * Lua shared by the scripts that read or keep outcomes. A task without dependencies (its task
 * key is its dependency key) that completes, with no gates waiting on it, writes its completion
 * record in place of its claim in the live hash instead of releasing the claim and writing the
 * record to `done`: one write instead of four when finishing (see workers/finish-script.ts).
 * claimedCompletion gives such a record, or false; keepClaimed moves it to `done` before a new
 * run of the identity claims it, as completed wins over whatever the new run does.
 */
export const CLAIMED_LUA = `
local function claimedCompletion(live, tk)
  local cur = redis.call('HGET', live, tk)
  return cur and string.byte(cur, 1) == 123 and cur
end
local function keepClaimed(live, done, tk, dk)
  local record = claimedCompletion(live, tk)
  if record then redis.call('HSETNX', done, dk, record) end
end
`;

/**
 * Hides the failures for good of identities that a batch is about to add again, until its jobs
 * are written (the add script then drops the failure and the entry) or given up (GIVE_BACK).
 * KEYS[1] failed hash, KEYS[2] readding hash; ARGV[1] now (ms), then pairs: dependencyKey, jobKey
 * Returns the 1-based numbers of the pairs whose failure was hidden.
 */
const HIDE = `
local out = {}
if redis.call('HLEN', KEYS[1]) == 0 then return out end
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1] .. '|' .. ARGV[i + 1])
    out[#out + 1] = i / 2
  end
end
return out
`;

/**
 * Gives back failures that HIDE hid for a batch that was not written: drops the entries that
 * still point at the batch's job keys, and returns the dependency keys whose failure is visible
 * again and has gates waiting (dependents added meanwhile, which must now fail), each put in the
 * `opening` set so that a crash before they are opened leaves work the reconciler finds.
 * KEYS[1] readding, KEYS[2] failed, KEYS[3] opening, then per pair its waiters set
 * ARGV pairs: dependencyKey, jobKey
 */
const GIVE_BACK = `${CLAIM_OF_LUA}
local out = {}
for n = 1, #KEYS - 3 do
  local dk = ARGV[2 * n - 1]
  local _, jk = claimOf(redis.call('HGET', KEYS[1], dk))
  if jk == ARGV[2 * n] then
    redis.call('HDEL', KEYS[1], dk)
    if redis.call('HEXISTS', KEYS[2], dk) == 1 and redis.call('SCARD', KEYS[3 + n]) > 0 then
      redis.call('SADD', KEYS[3], dk)
      out[#out + 1] = dk
    end
  end
end
return out
`;

/** Lua: settleOne, shared by the scripts that record outcomes (lua/includes/settle-one.lua). */
export const SETTLE_ONE_LUA = lua('includes/settle-one');

/**
 * Records the final outcomes of identities and returns, per identity, the gates waiting on it.
 * Most tasks have no waiters, and then this is the only round trip a completion costs — shared
 * by the tasks that finish in the same turn of the event loop. A completion also records that
 * its module completed (see moduleKey), and announces the gates of dependencies on any task of
 * the module, if some wait, on the channel consumers listen to.
 * KEYS[1] live, KEYS[2] done, KEYS[3] failed, KEYS[4] opening, then per item its waiters set
 * and the waiters set of its module
 * ARGV[1] the gate opening channel, then per item: 'completed' | 'failed', taskKey,
 * dependencyKey, jobKey, record JSON, module key
 */
const SETTLE = `${SETTLE_ONE_LUA}
local out = {}
for n = 1, (#KEYS - 4) / 2 do
  local a = 1 + (n - 1) * 6
  local outcome, record, mk = ARGV[a + 1], ARGV[a + 5], ARGV[a + 6]
  out[n] = settleOne(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[3 + 2 * n], outcome, ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], record)
  if outcome == 'completed' then
    redis.call('HSET', KEYS[2], mk, record)
    if redis.call('EXISTS', KEYS[4 + 2 * n]) == 1 then
      redis.call('SADD', KEYS[4], mk)
      redis.call('PUBLISH', ARGV[1], mk)
    end
  end
end
return out
`;

/**
 * Outcome per dependency key: 'c' and the record when it completed (in `done`, or kept in
 * place of its claim), else 'f' and the record when it failed for good and no re-add of it is
 * in progress (HIDDEN_LUA), else ''. One script, so a record moving from the live hash to
 * `done` meanwhile cannot fall between two reads.
 * KEYS[1] live, KEYS[2] done, KEYS[3] failed, KEYS[4] readding
 * ARGV[1] now (ms), ARGV[2] how long a re-add in progress hides a failure (ms), then the
 * dependency keys.
 */
const OUTCOMES = `${CLAIM_OF_LUA}${CLAIMED_LUA}${HIDDEN_LUA}
local now, hides = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local dk = ARGV[i]
  local record = redis.call('HGET', KEYS[2], dk) or claimedCompletion(KEYS[1], dk)
  if record then
    out[i - 2] = 'c' .. record
  else
    local failed = redis.call('HGET', KEYS[3], dk)
    out[i - 2] = (failed and not failureHidden(KEYS[4], dk, now, hides)) and ('f' .. failed) or ''
  end
end
return out
`;

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
    redis.defineCommand('tmHide', { numberOfKeys: 2, lua: HIDE });
    redis.defineCommand('tmGiveBack', { lua: GIVE_BACK });
    redis.defineCommand('tmOutcomes', { numberOfKeys: 4, lua: OUTCOMES });
    redis.defineCommand('tmSettle', { lua: SETTLE });
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

export interface Outcome {
  jobId: string;
  at: number;
  /** The queue of the job (completions: a duplicate within the dedup window names it). */
  queue?: string;
  reason?: string;
}

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
 * How long a re-add in progress hides its identity's failure for good (HIDDEN_LUA): longer than
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
   * adding them again is on its way (see HIDE); returns those items, to give back if the batch
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
   * Gives back what hideFailures hid for a batch that was not written (see GIVE_BACK); returns
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
        args.push(outcome, taskKey, dependencyKey, jobKey, JSON.stringify(record), moduleKey);
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
        ...(JSON.parse(f.slice(1)) as Outcome),
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
        for (const [dk, o] of found) m.hsetnx(this.keys.done, dk, JSON.stringify(o));
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
