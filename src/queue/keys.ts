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
  /** pub/sub channel: a dependencyKey whose gates are to be opened (see queue/finishing.ts). */
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
  /** A key of BullMQ's for a queue: `queue(name, 'active')` is its active list, `queue(name, '')` its jobs' prefix. */
  queue(queue: string, suffix: string): string;
  /** hash jobId → JSON {at, queue}: cancel requests for running jobs. */
  cancel: string;
  /** pub/sub channel: the job id of a running job asked to stop (the same name as the hash). */
  cancelChannel: string;
  /** list of JSON snapshots of jobs removed by a cancel, taken by the archiver. */
  cancelled: string;
  /** list of cancelled snapshots the archive refused, kept aside. */
  cancelledAside: string;
  /** sorted set of consumer ids, scored by when each entry expires. */
  consumers: string;
  /** string: JSON of one live consumer (see workers/registry.ts). */
  consumer(id: string): string;
  /** string: which master archives now, with an expiry. */
  archiverLock: string;
  /** sorted set of a queue's finished jobs of one state that are archived, by finish time. */
  archived(queue: string, state: string): string;
  /** sorted set of a queue's finished jobs of one state that the archive refused. */
  archiveAside(queue: string, state: string): string;
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
    queue: (queue, suffix) => `${prefix}:${queue}:${suffix}`,
    cancel: `${prefix}:tm:cancel`,
    cancelChannel: `${prefix}:tm:cancel`,
    cancelled: `${prefix}:tm:cancelled`,
    cancelledAside: `${prefix}:tm:cancelled:aside`,
    consumers: `${prefix}:tm:consumers`,
    consumer: (id) => `${prefix}:tm:consumer:${id}`,
    archiverLock: `${prefix}:tm:archiver`,
    archived: (queue, state) => `${prefix}:tm:archived:${queue}:${state}`,
    archiveAside: (queue, state) => `${prefix}:tm:archive-aside:${queue}:${state}`,
  };
}

/**
 * The rule for queue names, checked wherever one comes in (config, tasks, sockets, the API):
 * no ':' in a name is what lets a job key (`<prefix>:<queue>:<id>`) be read back by parseJobKey.
 */
export const QUEUE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** QUEUE_NAME in words, for error messages. */
export const QUEUE_NAME_RULE = 'letters, digits, "_", "." or "-" (1-64 characters)';

/** `<prefix>:<queue>:<id>` → queue and id; undefined for a key of another prefix or shape. */
export function parseJobKey(prefix: string, key: string): { queue: string; id: string } | undefined {
  if (!key.startsWith(`${prefix}:`)) return undefined;
  const rest = key.slice(prefix.length + 1);
  // The queue name holds no ':' (QUEUE_NAME); an id may.
  const at = rest.indexOf(':');
  return at > 0 && at < rest.length - 1 ? { queue: rest.slice(0, at), id: rest.slice(at + 1) } : undefined;
}
