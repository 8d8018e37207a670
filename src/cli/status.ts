import type { Queue } from 'bullmq';
import { InvalidArgumentError, type Command } from 'commander';
import type { Redis } from 'ioredis';
import type { Env } from './context.ts';
import type { ArchiveLag } from '../archive/archiver.ts';
import { FinishedJobs } from '../archive/finished-jobs.ts';
import { keysFor, QUEUE_NAME, QUEUE_NAME_RULE } from '../queue/keys.ts';

/** The states reported, in the order shown, with the Redis structure BullMQ keeps each in. */
export const STATES = [
  ['waiting', 'wait', 'list'],
  ['prioritized', 'prioritized', 'zset'],
  ['delayed', 'delayed', 'zset'],
  ['waiting-children', 'waiting-children', 'zset'],
  ['active', 'active', 'list'],
  ['completed', 'completed', 'zset'],
  ['failed', 'failed', 'zset'],
] as const;

export type State = (typeof STATES)[number][0];
export type Counts = Record<State, number>;

export interface QueueStatus {
  queue: string;
  prefix: string;
  paused: boolean;
  counts: Counts;
  /** Per module (job name): how many jobs are in each state. */
  modules: Record<string, Counts>;
  /** With an archive (MONGO_URL set): finished jobs waiting to be archived. */
  archive?: ArchiveLag;
}

/** Ids and names are read this many at a time, so 100,000 jobs cost ~100 round trips per state. */
const PAGE = 1000;

function zero(): Counts {
  return Object.fromEntries(STATES.map(([s]) => [s, 0])) as Counts;
}

/** Counts the jobs of one state per module by paging through its ids and pipelining HGET name. */
async function countModules(
  redis: Redis,
  queue: Queue,
  suffix: string,
  kind: 'list' | 'zset',
  state: State,
  modules: Record<string, Counts>,
) {
  const key = queue.toKey(suffix);
  for (let start = 0; ; start += PAGE) {
    const ids =
      kind === 'list'
        ? await redis.lrange(key, start, start + PAGE - 1)
        : await redis.zrange(key, start, start + PAGE - 1);
    if (!ids.length) return;
    const pipeline = redis.pipeline();
    for (const id of ids) pipeline.hget(queue.toKey(id), 'name');
    const names = (await pipeline.exec()) ?? [];
    for (const [err, name] of names) {
      // A job removed between the two reads has no name any more: it is no longer in this state.
      if (err || typeof name !== 'string') continue;
      (modules[name] ??= zero())[state]++;
    }
    if (ids.length < PAGE) return;
  }
}

export async function queueStatus(redis: Redis, queue: Queue, prefix: string, archived = false): Promise<QueueStatus> {
  const raw = await queue.getJobCounts(...STATES.map(([s]) => s));
  const counts = zero();
  for (const [s] of STATES) counts[s] = raw[s] ?? 0;
  const modules: Record<string, Counts> = {};
  for (const [state, suffix, kind] of STATES) {
    if (counts[state]) await countModules(redis, queue, suffix, kind, state, modules);
  }
  const sorted = Object.fromEntries(Object.entries(modules).sort(([a], [b]) => a.localeCompare(b)));
  const status: QueueStatus = { queue: queue.name, prefix, paused: await queue.isPaused(), counts, modules: sorted };
  if (archived) {
    // Imported here: the archiver brings MongoDB's client, which a status without an archive does not need.
    const { archiveLag } = await import('../archive/archiver.ts');
    status.archive = await archiveLag([new FinishedJobs(redis, prefix, queue)], redis, keysFor(prefix), true);
  }
  return status;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '))
    .join('\n');
}

/** Jobs whose document MongoDB refused even reduced (see archive/archiver.ts), when there are any. */
const setAside = (lag: ArchiveLag) =>
  lag.setAside
    ? `; ${lag.setAside} set aside, kept in Redis: MongoDB refused their document (see the master's log)`
    : '';

export function formatStatus(s: QueueStatus): string {
  const total = Object.values(s.counts).reduce((a, b) => a + b, 0);
  const head = `queue ${s.queue} (prefix ${s.prefix})${s.paused ? ' — paused' : ''}: ${total} job(s) in Redis`;
  const states = table([['state', 'jobs'], ...STATES.map(([st]) => [st, String(s.counts[st])])]);
  const names = Object.keys(s.modules);
  const lag = s.archive
    ? `\n\narchive: ${s.archive.pending} finished job(s) waiting to be archived${s.archive.oldestAgeMs !== undefined ? `, oldest finished ${Math.round(s.archive.oldestAgeMs / 1000)} s ago` : ''}${setAside(s.archive)}`
    : '';
  if (!names.length) return `${head}\n\n${states}${lag}`;
  const modules = table([
    ['module', ...STATES.map(([st]) => st)],
    ...names.map((n) => [n, ...STATES.map(([st]) => String(s.modules[n]![st]))]),
  ]);
  return `${head}\n\n${states}\n\n${modules}${lag}`;
}

export function registerStatus(program: Command, env: Env): void {
  program
    .command('status')
    .summary('job counts per state and per module')
    .description(
      "Counts of the queue's jobs per state (waiting, prioritized, delayed, waiting-children, active,\n" +
        'and the completed and failed jobs still kept in Redis), and the same per module.',
    )
    .option('--queue <name>', 'queue to report on (default: TASKMASTER_QUEUE)', (v: string) => {
      if (!QUEUE_NAME.test(v)) throw new InvalidArgumentError(QUEUE_NAME_RULE);
      return v;
    })
    .option('--json', 'print the counts as JSON')
    .action(async (opts: { queue?: string; json?: boolean }) => {
      const { withClient, out } = await import('./context.ts');
      await withClient(env, async ({ config, redis, components }) => {
        const status = await queueStatus(
          redis,
          components.queues.get(opts.queue ?? config.queue),
          config.prefix,
          Boolean(config.mongoUrl),
        );
        out(opts.json ? JSON.stringify(status) : formatStatus(status));
      });
    });
}
