import type { Redis } from 'ioredis';
import type { Keys } from '../queue/keys.ts';

/**
 * Lua: an entry of the live hash read as a claim, `<claimed at>|<job key>`: when it was made
 * and the job key, or false for a completion record kept in its place (JSON, see CLAIMED_LUA)
 * or no entry.
 */
const CLAIM_OF_LUA = `
local function claimOf(cur)
  if not cur or string.byte(cur, 1) == 123 then return false end
  local sep = string.find(cur, '|', 1, true)
  if not sep then return false end
  return tonumber(string.sub(cur, 1, sep - 1)), string.sub(cur, sep + 1)
end
`;

/**
 * Lua shared by the claim scripts: the job key that holds identity `tk` while it is live, or
 * false. KEYS[1] is the live hash.
 */
export const HOLDER_LUA = `${CLAIM_OF_LUA}
local function holderOf(tk, now, stale)
  local at, curKey = claimOf(redis.call('HGET', KEYS[1], tk))
  if not at then return false end
  if redis.call('EXISTS', curKey) == 1 then
    if not redis.call('HGET', curKey, 'finishedOn') then return curKey end
  elseif now - at < stale then
    return curKey
  end
  return false
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
 * Claims identities for a batch in one round trip.
 * KEYS[1] live hash, KEYS[2] failed hash, KEYS[3] done hash
 * ARGV[1] now (ms), ARGV[2] how long a claim whose job does not exist yet is honoured (ms),
 * then triples: taskKey, jobKey, dependencyKey
 * Returns, per triple, the job key that holds the identity: the given one when it was claimed,
 * another one when a live task already has it; then one more element, a string with a '1' for
 * each claimed identity whose last run failed for good (its record is cleared once the add
 * commits) and '0' otherwise. A holder is live while its job hash exists
 * without `finishedOn`, or, before the job is written, while its claim is young; so a crash
 * between claim and add, or a finished job whose claim was never released, heals itself.
 */
const CLAIM = `${HOLDER_LUA}${CLAIMED_LUA}
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
    keepClaimed(KEYS[1], KEYS[3], tk, ARGV[i + 2])
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
const RELEASE = `${CLAIM_OF_LUA}
for i = 1, #ARGV, 2 do
  local _, jk = claimOf(redis.call('HGET', KEYS[1], ARGV[i]))
  if jk == ARGV[i + 1] then
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
export const SETTLE_ONE_LUA = `${CLAIM_OF_LUA}
local function settleOne(live, done, failed, opening, waitersKey, outcome, tk, dk, jk, record)
  local _, claimed = claimOf(redis.call('HGET', live, tk))
  if claimed == jk then
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

/**
 * Outcome per dependency key: 'c' and the record when it completed (in `done`, or kept in
 * place of its claim), else 'f' and the record when it failed for good, else ''. One script,
 * so a record moving from the live hash to `done` meanwhile cannot fall between two reads.
 * KEYS[1] live, KEYS[2] done, KEYS[3] failed; ARGV the dependency keys.
 */
const OUTCOMES = `${CLAIMED_LUA}
local out = {}
for i = 1, #ARGV do
  local dk = ARGV[i]
  local record = redis.call('HGET', KEYS[2], dk) or claimedCompletion(KEYS[1], dk)
  if record then
    out[i] = 'c' .. record
  else
    local failed = redis.call('HGET', KEYS[3], dk)
    out[i] = failed and ('f' .. failed) or ''
  end
end
return out
`;

type Scripted = Redis & {
  tmClaim(live: string, failed: string, done: string, ...args: (string | number)[]): Promise<string[]>;
  tmOutcomes(live: string, done: string, failed: string, ...dependencyKeys: string[]): Promise<string[]>;
  tmRelease(live: string, ...args: string[]): Promise<number>;
  /** numberOfKeys first: 4 + one waiters key per item. */
  tmSettle(numberOfKeys: number, ...keysAndArgs: string[]): Promise<string[][]>;
};

function scripted(redis: Redis): Scripted {
  const r = redis as Scripted;
  if (typeof r.tmClaim !== 'function') {
    redis.defineCommand('tmClaim', { numberOfKeys: 3, lua: CLAIM });
    redis.defineCommand('tmOutcomes', { numberOfKeys: 3, lua: OUTCOMES });
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
      const out = await this.redis.tmClaim(this.keys.live, this.keys.failed, this.keys.done, ...args);
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
    const read: string[] = [];
    for (let i = 0; i < dependencyKeys.length; i += CHUNK) {
      read.push(...(await this.redis.tmOutcomes(this.keys.live, this.keys.done, this.keys.failed, ...dependencyKeys.slice(i, i + CHUNK))));
    }
    const out = read.map((f) => {
      if (!f) return undefined;
      return { state: f[0] === 'c' ? ('completed' as const) : ('failed' as const), ...(JSON.parse(f.slice(1)) as Outcome) };
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
