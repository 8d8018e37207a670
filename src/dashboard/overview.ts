import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ArchiveLag } from '../archive/archiver.ts';
import type { RouteContext } from '../http/context.ts';
import type { ConsumerInfo } from '../workers/registry.ts';
import { alertsOf, type Alert } from './alerts.ts';

/** Jobs per state, as BullMQ counts them. */
export interface StateCounts {
  waiting: number;
  active: number;
  delayed: number;
  prioritized: number;
  'waiting-children': number;
  completed: number;
  failed: number;
}

export interface QueueOverview {
  name: string;
  paused: boolean;
  counts: StateCounts;
  /** When the oldest of the next tasks in line was added (ms), and how long ago; absent when none waits. */
  oldestWaitingSince?: number;
  oldestWaitingAgeMs?: number;
}

export interface RunnerView {
  id: string;
  name?: string;
  address: string;
  /** The Socket.IO generation it speaks: `socket.io-client 1.x/2.x` or `socket.io-client 3+`. */
  version: string;
  queues: string[];
  modules: string[];
  slots: number;
  /** Ids of the tasks it holds now. */
  held: string[];
  since: number;
  lastSeen?: number;
  /** The master it is connected to. */
  bridge?: string;
}

export interface FeederView {
  id: string;
  name?: string;
  address: string;
  version: string;
  /** Tasks it added (new ones, not duplicates) on this connection. */
  added: number;
  since: number;
  lastSeen?: number;
  bridge?: string;
}

export interface WorkerProcessView {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  modules: string[];
  concurrency: number;
  /** Ids of the tasks it runs now. */
  running: string[];
  since: number;
  lastSeen?: number;
}

/** What the status page shows at a glance; `GET /api/overview` and the `overview` event of `/status`. */
export interface Overview {
  at: number;
  queues: QueueOverview[];
  archive: ArchiveLag;
  runners: RunnerView[];
  feeders: FeederView[];
  workerProcesses: WorkerProcessView[];
  alerts: Alert[];
  auth: { required: boolean };
}

/** Registry entries of bridge clients carry these beside ConsumerInfo (see bridge/presence.ts). */
type Entry = ConsumerInfo & { address?: string; protocol?: number; added?: number; bridge?: string };

/** Tasks next in line whose add times are read for the oldest waiting one. */
const NEXT_IN_LINE = 100;

/** What runners and feeders show alike: who, from where, with which client, since when. */
function bridgeClient(e: Entry) {
  return {
    id: e.id,
    name: e.name,
    address: e.address ?? e.host,
    version: e.protocol === 3 ? 'socket.io-client 1.x/2.x' : 'socket.io-client 3+',
    since: e.startedAt,
    lastSeen: e.seenAt,
    bridge: e.bridge,
  };
}

/**
 * The next tasks in line — the end of the wait list, the head of the prioritized set — with
 * their modules and add times: the oldest waiting, and modules the alerts check for a consumer.
 * A task far back in a long prioritized set is not among them; the queue's head is what stalls.
 */
export async function nextInLine(
  redis: Redis,
  queue: Queue,
): Promise<{ modules: Map<string, number>; oldest?: number }> {
  const [wait, prioritized] = await Promise.all([
    redis.lrange(queue.keys.wait!, -NEXT_IN_LINE, -1),
    redis.zrange(queue.keys.prioritized!, 0, NEXT_IN_LINE - 1),
  ]);
  const ids = [...wait, ...prioritized];
  const modules = new Map<string, number>();
  if (!ids.length) return { modules };
  const pipe = redis.pipeline();
  for (const id of ids) pipe.hmget(queue.toKey(id), 'name', 'timestamp');
  const rows = ((await pipe.exec()) ?? []).map(([, r]) => r as [string | null, string | null]);
  let oldest: number | undefined;
  for (const [name, ts] of rows) {
    if (name) modules.set(name, (modules.get(name) ?? 0) + 1);
    if (ts && (oldest === undefined || Number(ts) < oldest)) oldest = Number(ts);
  }
  return { modules, oldest };
}

/**
 * Builds the overview from Redis alone (BullMQ's counts, the registry, the archive's lag), so
 * every master shows the whole system.
 */
export class OverviewReader {
  constructor(
    private readonly ctx: RouteContext,
    private readonly authRequired: boolean,
  ) {}

  async read(): Promise<Overview> {
    const { ctx } = this;
    const now = Date.now();
    const [names, live, archive] = await Promise.all([ctx.queues(), ctx.registry.live(), ctx.lag()]);
    const heads = new Map<string, Map<string, number>>();
    const queues = await Promise.all(
      names.map(async (name): Promise<QueueOverview> => {
        const queue = ctx.components.queues.get(name);
        const [c, paused, line] = await Promise.all([
          queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed'),
          queue.isPaused(),
          nextInLine(ctx.connection, queue),
        ]);
        heads.set(name, line.modules);
        const counts: StateCounts = {
          waiting: c.waiting ?? 0,
          active: c.active ?? 0,
          delayed: c.delayed ?? 0,
          prioritized: c.prioritized ?? 0,
          'waiting-children': c['waiting-children'] ?? 0,
          completed: c.completed ?? 0,
          failed: c.failed ?? 0,
        };
        const age =
          line.oldest === undefined ? {} : { oldestWaitingSince: line.oldest, oldestWaitingAgeMs: now - line.oldest };
        return { name, paused, counts, ...age };
      }),
    );
    const entries = live as Entry[];
    const runners = entries
      .filter((e) => e.kind === 'runner')
      .map((e) => ({
        ...bridgeClient(e),
        queues: e.queues,
        modules: e.modules,
        slots: e.concurrency,
        held: e.running ?? [],
      }));
    const feeders = entries
      .filter((e) => e.kind === 'feeder')
      .map((e) => ({ ...bridgeClient(e), added: e.added ?? 0 }));
    const workerProcesses = entries
      .filter((e) => e.kind === 'worker')
      .map((e) => ({
        id: e.id,
        host: e.host,
        pid: e.pid,
        queues: e.queues,
        modules: e.modules,
        concurrency: e.concurrency,
        running: e.running ?? [],
        since: e.startedAt,
        lastSeen: e.seenAt,
      }));
    const alerts = await alertsOf(ctx, { queues, heads, consumers: entries, now });
    const sort = <T extends { id: string }>(list: T[]) => list.sort((a, b) => (a.id < b.id ? -1 : 1));
    return {
      at: now,
      queues,
      archive,
      runners: sort(runners),
      feeders: sort(feeders),
      workerProcesses: sort(workerProcesses),
      alerts,
      auth: { required: this.authRequired },
    };
  }
}

/**
 * The overview without what changes by itself as time passes (ages, last-seen times), so
 * that the live page is sent an overview only when something happened.
 */
export function changeKey(o: Overview): string {
  const timely = new Set(['at', 'lastSeen', 'oldestWaitingAgeMs', 'oldestAgeMs']);
  return JSON.stringify(o, function (this: unknown, key: string, value: unknown) {
    if (timely.has(key)) return undefined;
    return key === 'value' && (this as Partial<Alert>).kind === 'waiting-age' ? undefined : value;
  });
}
