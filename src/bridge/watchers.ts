import { Job, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { legacyFromJob, type LegacyTask } from './legacy-shape.ts';
import type { Peer } from './presence.ts';
import type { TaskDocument } from '../archive/document.ts';
import { OutageLog } from '../queue/outage-log.ts';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../queue/keys.ts';
import type { Queues } from '../queue/queues.ts';

/** What the watchers need of an archived task. */
export type ArchivedTask = Pick<
  TaskDocument,
  'module' | 'params' | 'priority' | 'timeout' | 'dependencies' | 'created' | 'status' | 'result' | 'error'
>;

/** What `task:completed` / `task:failed` carry: the task, and its result or its error. */
export type WatchEvent =
  | { event: 'task:completed'; payload: LegacyTask & { result: unknown } }
  | {
      event: 'task:failed';
      payload: Partial<LegacyTask> & { _id: string; queue: string; error: string; code?: string };
    };

export interface WatchAnswer {
  ok: boolean;
  /** Ids whose outcome will be sent when they finish. */
  watching: string[];
  /** Ids that had already finished: their outcome was sent at once. */
  finished: string[];
  /** Ids no task has (never added, or removed since): a `task:failed` with code NOT_FOUND was sent. */
  unknown: string[];
  message?: string;
}

interface Watched {
  task: LegacyTask;
  peers: Set<Peer>;
}

/** Ids one client may watch at once. */
export const MAX_WATCHED = 10_000;
/** How long a queue's reader stays open once nothing on that queue is watched. */
const READER_IDLE_MS = 10_000;

/**
 * `task:watch`: a feeder names task ids and is told when each finishes. Every master reads the
 * queue's BullMQ event stream (QueueEvents) for its own watchers, so a finish is delivered
 * whichever master, worker or runner saw it; nothing is held for clients of other masters.
 * The stream is read from a little before the reader started, so a watch registered and then
 * checked against the job's state cannot miss a finish that happens in between. A queue is
 * read only while something on it is watched (and READER_IDLE_MS after): reading every
 * event of a busy queue — each add, start and finish — cost the master more than a tenth of
 * what adding and handing out tasks cost.
 */
export class Watchers {
  private readonly byKey = new Map<string, Watched>();
  private readonly byPeer = new WeakMap<Peer, Set<string>>();
  private readonly readers = new Map<string, { events: QueueEvents; connection: Redis; idle?: NodeJS.Timeout }>();
  /** Watched jobs per queue, to close a queue's reader once none are left. */
  private readonly watchedIn = new Map<string, number>();
  private readonly log: Logger;

  constructor(
    private readonly opts: {
      config: Pick<Config, 'queue' | 'prefix' | 'defaults'>;
      connection: Redis;
      /** The process's queues (its components'), where a watched job is read. */
      queues: Queues;
      log: Logger;
      send(peer: Peer, e: WatchEvent): void;
      /** Where a task that left Redis is still found (the archive). */
      archived?: (id: string, queue: string) => Promise<ArchivedTask | undefined>;
      /** @defaultValue READER_IDLE_MS */
      readerIdleMs?: number;
    },
  ) {
    this.log = opts.log;
  }

  /** The queues whose events are being read now. */
  reading(): string[] {
    return [...this.readers.keys()];
  }

  /** Reads a queue's events (started on the first watch of one of its jobs). */
  private reader(queue: string): QueueEvents {
    let r = this.readers.get(queue);
    if (r?.idle) {
      clearTimeout(r.idle);
      r.idle = undefined;
    }
    if (!r) {
      // QueueEvents blocks on XREAD, so it needs a connection of its own.
      const connection = this.opts.connection.duplicate();
      // Errors of a duplicate are logged already, by the process's outage log (see createRedis).
      connection.on('error', () => {});
      const events = new QueueEvents(queue, {
        connection,
        prefix: this.opts.config.prefix,
        lastEventId: `${Date.now() - 2000}-0`,
      });
      events.on('error', OutageLog.listener(this.log.child({ queue }), 'queue events error'));
      events.on('completed', ({ jobId, returnvalue }) => this.finish(queue, jobId, { ok: true, result: returnvalue }));
      events.on('failed', ({ jobId, failedReason }) => this.finish(queue, jobId, { ok: false, error: failedReason }));
      events.on('removed', ({ jobId }) =>
        this.finish(queue, jobId, {
          ok: false,
          error: 'the task was removed before it finished (cancelled)',
          code: 'REMOVED',
        }),
      );
      r = { events, connection };
      this.readers.set(queue, r);
    }
    return r.events;
  }

  private key(queue: string, id: string): string {
    return `${queue}\u0000${id}`;
  }

  private queueOf(key: string): string {
    return key.slice(0, key.indexOf('\u0000'));
  }

  /** A job of `queue` is watched by someone more (+1) or by no one any more (-1). */
  private count(queue: string, delta: 1 | -1): void {
    const n = (this.watchedIn.get(queue) ?? 0) + delta;
    if (n > 0) return void this.watchedIn.set(queue, n);
    this.watchedIn.delete(queue);
    const r = this.readers.get(queue);
    if (!r || r.idle) return;
    r.idle = setTimeout(() => {
      if (this.watchedIn.has(queue) || this.readers.get(queue) !== r) return;
      this.readers.delete(queue);
      // A reader that fails to close is disconnected all the same.
      void r.events
        .close()
        .catch(() => undefined)
        .finally(() => r.connection.disconnect());
    }, this.opts.readerIdleMs ?? READER_IDLE_MS);
    r.idle.unref();
  }

  async watch(peer: Peer, input: unknown): Promise<WatchAnswer> {
    const refs = parseWatch(input, this.opts.config.queue);
    if (typeof refs === 'string') return { ok: false, watching: [], finished: [], unknown: [], message: refs };
    const mine = this.byPeer.get(peer) ?? new Set<string>();
    this.byPeer.set(peer, mine);
    if (mine.size + refs.length > MAX_WATCHED) {
      return {
        ok: false,
        watching: [],
        finished: [],
        unknown: [],
        message: `a client may watch at most ${MAX_WATCHED} tasks at once`,
      };
    }
    const answer: WatchAnswer = { ok: true, watching: [], finished: [], unknown: [] };
    await Promise.all(
      refs.map(async ({ id, queue }) => {
        const key = this.key(queue, id);
        const q = this.opts.queues.get(queue);
        const job = await Job.fromId(q, id);
        const gone = job
          ? undefined
          : await this.opts.archived?.(id, queue).catch((err) => {
              this.log.warn(
                { err, jobId: id },
                'could not look a watched task up in the archive; answering it unknown',
              );
              return undefined;
            });
        if (gone) {
          // Finished and archived since: answered from the archive.
          answer.finished.push(id);
          const task: LegacyTask = {
            _id: id,
            queue,
            module: gone.module,
            params: gone.params,
            priority: gone.priority,
            timeout: gone.timeout ?? this.opts.config.defaults.timeout,
            dependencies: gone.dependencies,
            created: Math.floor(new Date(gone.created).getTime() / 1000),
          };
          this.opts.send(
            peer,
            gone.status === 'completed'
              ? { event: 'task:completed', payload: { ...task, result: gone.result ?? null } }
              : { event: 'task:failed', payload: { ...task, queue, error: gone.error?.message ?? gone.status } },
          );
          return;
        }
        if (!job) {
          answer.unknown.push(id);
          this.opts.send(peer, {
            event: 'task:failed',
            payload: {
              _id: id,
              queue,
              error: `no task with id ${id} in queue ${queue} (never added, or removed since it finished)`,
              code: 'NOT_FOUND',
            },
          });
          return;
        }
        const task = legacyFromJob(job as Job & { id: string }, undefined, this.opts.config.defaults.timeout);
        delete task.attempt;
        // Only a queue that has the job gets a reader: a client cannot make readers at will.
        this.reader(queue);
        // Registered before the state is read: a finish after this point reaches the watcher
        // through the event stream, one before it is seen in the state.
        let w = this.byKey.get(key);
        if (!w) {
          w = { task, peers: new Set<Peer>() };
          this.byKey.set(key, w);
          this.count(queue, 1);
        }
        w.peers.add(peer);
        mine.add(key);
        const state = await q.getJobState(id);
        const done = state === 'completed' || state === 'failed' ? ((await Job.fromId(q, id)) ?? job) : job;
        if (state === 'completed') this.finish(queue, id, { ok: true, result: done.returnvalue ?? null }, peer);
        else if (state === 'failed') this.finish(queue, id, { ok: false, error: done.failedReason }, peer);
        if (state === 'completed' || state === 'failed') answer.finished.push(id);
        else answer.watching.push(id);
      }),
    );
    return answer;
  }

  /** Delivers an outcome to the watchers of a job (or only to `only`), then forgets them. */
  private finish(
    queue: string,
    id: string,
    outcome: { ok: true; result: unknown } | { ok: false; error: string; code?: string },
    only?: Peer,
  ): void {
    const key = this.key(queue, id);
    const w = this.byKey.get(key);
    if (!w) return;
    const peers = only ? [only].filter((p) => w.peers.has(p)) : [...w.peers];
    for (const peer of peers) {
      w.peers.delete(peer);
      this.byPeer.get(peer)?.delete(key);
      if (!peer.connected) continue;
      this.opts.send(
        peer,
        outcome.ok
          ? { event: 'task:completed', payload: { ...w.task, result: outcome.result } }
          : {
              event: 'task:failed',
              payload: { ...w.task, queue, error: outcome.error, ...(outcome.code ? { code: outcome.code } : {}) },
            },
      );
    }
    if (!w.peers.size) this.drop(key);
  }

  private drop(key: string): void {
    this.byKey.delete(key);
    this.count(this.queueOf(key), -1);
  }

  /** A client went away: forget what it watched. */
  forget(peer: Peer): void {
    for (const key of this.byPeer.get(peer) ?? []) {
      const w = this.byKey.get(key);
      w?.peers.delete(peer);
      if (w && !w.peers.size) this.drop(key);
    }
    this.byPeer.delete(peer);
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.readers.values()].map(async ({ events, connection, idle }) => {
        clearTimeout(idle);
        // A reader that fails to close is disconnected all the same.
        await events.close().catch(() => undefined);
        connection.disconnect();
      }),
    );
    this.readers.clear();
  }
}

/**
 * What `task:watch` accepts: an id, an array of ids, tasks as `task:added` returned them
 * (`{_id, queue}`), or a JSON string of any of these. Returns the refs, or a message.
 */
export function parseWatch(input: unknown, defaultQueue: string): { id: string; queue: string }[] | string {
  let v = input;
  if (typeof v === 'string' && /^\s*[[{]/.test(v)) {
    try {
      v = JSON.parse(v);
    } catch {
      return (
        'task:watch takes a task id, an array of ids or of tasks, or a JSON string of those; ' +
        'the string is not valid JSON'
      );
    }
  }
  const list = Array.isArray(v) ? v : [v];
  if (!list.length) return 'task:watch got an empty list: name at least one task id';
  if (list.length > MAX_WATCHED) return `task:watch takes at most ${MAX_WATCHED} ids at once`;
  const out: { id: string; queue: string }[] = [];
  for (const [i, item] of list.entries()) {
    let id: unknown = item;
    let queue: unknown = defaultQueue;
    if (item && typeof item === 'object' && !Array.isArray(item)) {
      const o = item as Record<string, unknown>;
      id = o._id ?? o.id;
      queue = o.queue ?? defaultQueue;
    }
    if (typeof id === 'number' && Number.isSafeInteger(id)) id = String(id);
    if (typeof id !== 'string' || !id || id.length > 200 || id.includes(':')) {
      const allowed = 'a string of 1 to 200 characters without ":", as task:added returned it';
      return `task:watch item ${i}: a task id must be ${allowed}`;
    }
    if (typeof queue !== 'string' || !QUEUE_NAME.test(queue)) {
      return `task:watch item ${i}: queue must be a queue name of ${QUEUE_NAME_RULE}`;
    }
    out.push({ id, queue });
  }
  return out;
}
