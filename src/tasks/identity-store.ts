import type { Redis } from 'ioredis';
import type { Keys } from '../queue/keys.ts';

/**
 * Lua shared by the claim scripts: the job key that holds identity `tk` while it is live, or
 * false. KEYS[1] is the live hash.
 */
export const HOLDER_LUA = `
local function holderOf(tk, now, stale)
  local cur = redis.call('HGET', KEYS[1], tk)
  if not cur then return false end
  local sep = string.find(cur, '|', 1, true)
  local at = tonumber(string.sub(cur, 1, sep - 1))
  local curKey = string.sub(cur, sep + 1)
  if redis.call('EXISTS', curKey) == 1 then
    if not redis.call('HGET', curKey, 'finishedOn') then return curKey end
  elseif now - at < stale then
    return curKey
  end
  return false
end
`;

/**
 * Claims identities for a batch in one round trip.
 * KEYS[1] live hash, KEYS[2] failed hash
 * ARGV[1] now (ms), ARGV[2] how long a claim whose job does not exist yet is honoured (ms),
 * then triples: taskKey, jobKey, dependencyKey
 * Returns, per triple, the job key that holds the identity: the given one when it was claimed,
 * another one when a live task already has it; then one more element, a string with a '1' for
 * each claimed identity whose last run failed for good (its record is cleared once the add
 * commits) and '0' otherwise. A holder is live while its job hash exists
 * without `finishedOn`, or, before the job is written, while its claim is young; so a crash
 * between claim and add, or a finished job whose claim was never released, heals itself.
 */
const CLAIM = `${HOLDER_LUA}
local out = {}
local now = tonumber(ARGV[1])
local stale = tonumber(ARGV[2])
local failed = {}
for i = 3, #ARGV, 3 do
  local tk, jk = ARGV[i], ARGV[i + 1]
  local holder = holderOf(tk, now, stale)
  if holder then
    out[#out + 1] = holder
    failed[#failed + 1] = '0'
  else
    redis.call('HSET', KEYS[1], tk, now .. '|' .. jk)
    out[#out + 1] = jk
    failed[#failed + 1] = redis.call('HEXISTS', KEYS[2], ARGV[i + 2]) == 1 and '1' or '0'
  end
end
out[#out + 1] = table.concat(failed)
return out
`;

/**
 * Releases claims that still point at the given job keys (a failed add, a finished task).
 * KEYS[1] live hash; ARGV pairs: taskKey, jobKey
 */
const RELEASE = `
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and string.sub(cur, string.find(cur, '|', 1, true) + 1) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
`;

/**
 * Lua shared by the scripts that record outcomes (SETTLE here, and the worker's finishing
 * script, see workers/finish-script.ts): records one identity's final outcome, releases its
 * claim if it still points at this job, and returns the gates waiting on it — putting the
 * identity in the `opening` set when there are any, so that a crash before they are promoted
 * leaves work the reconciler finds.
 */
export const SETTLE_ONE_LUA = `
local function settleOne(live, done, failed, opening, waitersKey, outcome, tk, dk, jk, record)
  local cur = redis.call('HGET', live, tk)
  if cur and string.sub(cur, string.find(cur, '|', 1, true) + 1) == jk then
    redis.call('HDEL', live, tk)
  end
  if outcome == 'completed' then
    redis.call('HSET', done, dk, record)
    redis.call('HDEL', failed, dk)
  else
    redis.call('HSET', failed, dk, record)
  end
  local waiters = redis.call('SMEMBERS', waitersKey)
  if #waiters > 0 then redis.call('SADD', opening, dk) end
  return waiters
end
`;

/**
 * Records the final outcomes of identities and returns, per identity, the gates waiting on it.
 * Most tasks have no waiters, and then this is the only round trip a completion costs — shared
 * by the tasks that finish in the same turn of the event loop.
 * KEYS[1] live, KEYS[2] done, KEYS[3] failed, KEYS[4] opening, then per item its waiters set
 * ARGV per item: 'completed' | 'failed', taskKey, dependencyKey, jobKey, record JSON
 */
const SETTLE = `${SETTLE_ONE_LUA}
local out = {}
for n = 1, #KEYS - 4 do
  local a = (n - 1) * 5
  out[n] = settleOne(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[4 + n], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
end
return out
`;

type Scripted = Redis & {
  tmClaim(live: string, failed: string, ...args: (string | number)[]): Promise<string[]>;
  tmRelease(live: string, ...args: string[]): Promise<number>;
  /** numberOfKeys first: 4 + one waiters key per item. */
  tmSettle(numberOfKeys: number, ...keysAndArgs: string[]): Promise<string[][]>;
};

function scripted(redis: Redis): Scripted {
  const r = redis as Scripted;
  if (typeof r.tmClaim !== 'function') {
    redis.defineCommand('tmClaim', { numberOfKeys: 2, lua: CLAIM });
    redis.defineCommand('tmRelease', { numberOfKeys: 1, lua: RELEASE });
    redis.defineCommand('tmSettle', { lua: SETTLE });
  }
  return r;
}

export interface ClaimItem {
  taskKey: string;
  dependencyKey: string;
  jobKey: string;
}

export interface Outcome {
  jobId: string;
  at: number;
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
  item: ClaimItem;
  record: Outcome;
  sent(): void;
  resolve(waiters: string[]): void;
  reject(err: unknown): void;
}

/** A claim younger than this whose job is not written yet is an add in progress elsewhere. */
export const CLAIM_GRACE_MS = 30_000;
const CHUNK = 1000;

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
   * Claims each identity; returns the holder's job key per item (its own when claimed), and
   * whether any claimed identity has a failed-for-good record (to clear once the add commits).
   */
  async claim(items: ClaimItem[], now = Date.now()): Promise<{ holders: string[]; anyFailed: boolean }> {
    const holders: string[] = [];
    let anyFailed = false;
    for (let i = 0; i < items.length; i += CHUNK) {
      const args: (string | number)[] = [now, CLAIM_GRACE_MS];
      for (const it of items.slice(i, i + CHUNK)) args.push(it.taskKey, it.jobKey, it.dependencyKey);
      const out = await this.redis.tmClaim(this.keys.live, this.keys.failed, ...args);
      anyFailed ||= out.pop()!.includes('1');
      holders.push(...out);
    }
    return { holders, anyFailed };
  }

  /** Forgets failed-for-good records of identities that have a new run now. */
  async clearFailures(dependencyKeys: string[]): Promise<void> {
    if (dependencyKeys.length) await this.redis.hdel(this.keys.failed, ...dependencyKeys);
  }

  async release(items: { taskKey: string; jobKey: string }[]): Promise<void> {
    for (let i = 0; i < items.length; i += CHUNK) {
      const args = items.slice(i, i + CHUNK).flatMap((it) => [it.taskKey, it.jobKey]);
      if (args.length) await this.redis.tmRelease(this.keys.live, ...args);
    }
  }

  /**
   * Records the outcome; `waiters` resolves to the ids of the gates waiting on this identity.
   * Outcomes recorded in the same turn of the event loop go to Redis together, in one command,
   * written at the end of the turn; `sent` resolves once it is written, ahead of whatever is
   * sent on this connection after that (Redis runs a connection's commands in order).
   */
  settle(outcome: 'completed' | 'failed', item: ClaimItem, record: Outcome): { sent: Promise<void>; waiters: Promise<string[]> } {
    let sent!: () => void;
    const sentP = new Promise<void>((r) => (sent = r));
    const waiters = new Promise<string[]>((resolve, reject) => {
      if (this.settling.push({ outcome, item, record, sent, resolve, reject }) === 1) setImmediate(() => this.flushSettles());
    });
    return { sent: sentP, waiters };
  }

  private flushSettles(): void {
    const batch = this.settling;
    this.settling = [];
    for (let i = 0; i < batch.length; i += CHUNK) {
      const part = batch.slice(i, i + CHUNK);
      const keys = [this.keys.live, this.keys.done, this.keys.failed, this.keys.opening];
      const args: string[] = [];
      for (const { outcome, item, record } of part) {
        keys.push(this.keys.waiters(item.dependencyKey));
        args.push(outcome, item.taskKey, item.dependencyKey, item.jobKey, JSON.stringify(record));
      }
      this.redis.tmSettle(keys.length, ...keys, ...args).then(
        (out) => part.forEach((s, n) => s.resolve(out[n] ?? [])),
        (err) => part.forEach((s) => s.reject(err)),
      );
      // ioredis has written the command (or queued it, in order, while reconnecting).
      for (const s of part) s.sent();
    }
  }

  /** Outcome per dependency key: completed wins over failed; undefined while neither. */
  async outcomes(dependencyKeys: string[]): Promise<({ state: 'completed' | 'failed' } & Outcome | undefined)[]> {
    if (!dependencyKeys.length) return [];
    const [done, failed] = (await this.redis
      .multi()
      .hmget(this.keys.done, ...dependencyKeys)
      .hmget(this.keys.failed, ...dependencyKeys)
      .exec())!.map(([err, v]) => {
      if (err) throw err;
      return v as (string | null)[];
    });
    const out = dependencyKeys.map((_, i) => {
      if (done![i]) return { state: 'completed' as const, ...(JSON.parse(done![i]!) as Outcome) };
      if (failed![i]) return { state: 'failed' as const, ...(JSON.parse(failed![i]!) as Outcome) };
      return undefined;
    });
    const unknown = dependencyKeys.filter((_, i) => !out[i]);
    if (this.archive && unknown.length) {
      // An archive that is away must not stop adds: the identity counts as not completed.
      const found = await this.archive.completed(unknown).catch(() => new Map<string, Outcome>());
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

  async addWaiters(edges: { dependencyKey: string; gateId: string }[]): Promise<void> {
    if (!edges.length) return;
    const m = this.redis.pipeline();
    for (const e of edges) m.sadd(this.keys.waiters(e.dependencyKey), e.gateId);
    await m.exec();
  }

  async removeWaiters(edges: { dependencyKey: string; gateId: string }[]): Promise<void> {
    if (!edges.length) return;
    const m = this.redis.pipeline();
    for (const e of edges) m.srem(this.keys.waiters(e.dependencyKey), e.gateId);
    await m.exec();
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
