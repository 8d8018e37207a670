/**
 * Taskmaster's own Redis keys, beside BullMQ's and under the same prefix so that on Redis
 * Cluster a hash-tagged prefix (`{taskmaster}`) keeps them in one slot with the jobs.
 */
export interface Keys {
  /** hash taskKey → "claimedAtMs|jobKey": the live task holding that identity (dedup). */
  live: string;
  /** hash dependencyKey → JSON {jobId, at}: identities that have completed (durable). */
  done: string;
  /** hash dependencyKey → JSON {jobId, at, reason}: identities whose last run failed for good. */
  failed: string;
  /**
   * hash dependencyKey → "startedAtMs|jobKey": a re-add in progress of an identity that failed for
   * good, which hides that failure from new dependents until it is written or given up.
   */
  readding: string;
  /** set of dependencyKeys whose gates are being opened (re-run by the reconciler after a crash). */
  opening: string;
  /** pub/sub channel: a dependencyKey whose gates are to be opened (see workers/finish-script.ts). */
  openingChannel: string;
  /** set of gate job ids waiting on one dependencyKey. */
  waiters(dependencyKey: string): string;
  /** string: id of the last event of a queue's BullMQ event stream whose outcome the master handled. */
  eventsSeen(queue: string): string;
  /** BullMQ job hash key of a job. */
  job(queue: string, jobId: string): string;
  /**
   * hash of one schedule: `last` (JSON: its last firing) and `keys` (JSON array: the dependency
   * keys of that firing's tasks, read to count how many are done).
   */
  schedule(name: string): string;
  /** sorted set of a schedule's firing ids already added, scored by when each fired (the most recent kept). */
  scheduleFired(name: string): string;
}

/**
 * The hash tag of a prefix, as Redis Cluster reads it from a key: what lies between the first "{"
 * and the first "}" after it, when not empty; undefined when the prefix has none. Every key
 * starts with the prefix, so a prefix with a tag puts them all in one slot.
 */
export function hashTagOf(prefix: string): string | undefined {
  const open = prefix.indexOf('{');
  const close = open < 0 ? -1 : prefix.indexOf('}', open + 1);
  return close > open + 1 ? prefix.slice(open + 1, close) : undefined;
}

/** Internal queue holding one "gate" job per dependency edge that is not a direct flow child. */
export const GATE_QUEUE = '_gates';

/** Internal queue holding the BullMQ job schedulers of schedules and the firing jobs they produce. */
export const SCHEDULE_QUEUE = '_schedules';

export function keysFor(prefix: string): Keys {
  return {
    live: `${prefix}:tm:live`,
    done: `${prefix}:tm:done`,
    failed: `${prefix}:tm:failed`,
    readding: `${prefix}:tm:readding`,
    opening: `${prefix}:tm:opening`,
    openingChannel: `${prefix}:tm:opening:announce`,
    waiters: (dk) => `${prefix}:tm:waiters:${dk}`,
    eventsSeen: (queue) => `${prefix}:tm:events-seen:${queue}`,
    job: (queue, id) => `${prefix}:${queue}:${id}`,
    schedule: (name) => `${prefix}:tm:schedule:${name}`,
    scheduleFired: (name) => `${prefix}:tm:schedule-fired:${name}`,
  };
}
