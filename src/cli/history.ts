import type { Command } from 'commander';
import { History, type TaskView } from '../archive/history.ts';
import { parseHistoryQuery, TASK_STATUSES } from '../archive/query.ts';
import { createLogger } from '../logger.ts';
import { out, withClient, type Env, type OneShot } from './context.ts';

/** Runs `fn` with a History over Redis and, when MONGO_URL is set, the archive. */
async function withHistory<T>(env: Env, fn: (history: History, ctx: OneShot) => Promise<T>): Promise<T> {
  return withClient(env, async (ctx) => {
    // Imported only with an archive: it brings MongoDB's client.
    const { mongoUrl } = ctx.config;
    const store = mongoUrl
      ? new (await import('../archive/store.ts')).ArchiveStore(
          mongoUrl,
          createLogger({ level: 'silent', pretty: false }),
          {
            serverSelectionTimeoutMS: 3000,
          },
        )
      : undefined;
    try {
      return await fn(new History(ctx.client, ctx.components.queues, store), ctx);
    } finally {
      await store?.close();
    }
  });
}

function when(v: TaskView): string {
  const d = v.finished ?? v.started ?? v.created;
  return new Date(d).toISOString().replace('.000Z', 'Z');
}

export function formatHistory(tasks: TaskView[], archive: boolean): string {
  const rows = [['id', 'module', 'status', 'when', 'ms', 'attempts', 'where']];
  for (const t of tasks)
    rows.push([
      t.jobId,
      t.module,
      t.status,
      when(t),
      t.duration === undefined ? '' : String(t.duration),
      String(t.attempts),
      t.source,
    ]);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const lines = rows.map((r) =>
    r
      .map((cell, c) => cell.padEnd(widths[c]!))
      .join('  ')
      .trimEnd(),
  );
  if (!archive) lines.push('(no archive: MONGO_URL is not set, so only tasks still in Redis are shown)');
  return lines.join('\n');
}

/** `taskmaster history` and `taskmaster retry`. */
export function registerHistory(program: Command, env: Env): void {
  program
    .command('history')
    .summary('finished and live tasks, from Redis and the archive')
    .description(
      'Tasks newest first, from Redis (waiting, running, and the finished ones still kept there) and,\n' +
        'when MONGO_URL is set, the MongoDB archive. Times: ISO (2026-11-28, 2026-11-28T10:00Z), unix ms,\n' +
        'or back from now (90s, 15m, 6h, 7d).',
    )
    .argument('[module]', 'only tasks of this module')
    .option('--status <list>', `only these statuses, comma-separated: ${TASK_STATUSES.join(', ')}`)
    .option('--since <time>', 'finished (or started, or added) at or after this time')
    .option('--until <time>', 'at or before this time')
    .option('--limit <n>', 'at most this many (1-1000)', '100')
    .option('--queue <name>', 'queue (default: TASKMASTER_QUEUE)')
    .option('--json', 'print the tasks as JSON')
    .action(
      async (
        module: string | undefined,
        opts: { status?: string; since?: string; until?: string; limit: string; queue?: string; json?: boolean },
      ) => {
        await withHistory(env, async (history, { config }) => {
          const query = parseHistoryQuery(
            { module, status: opts.status, since: opts.since, until: opts.until, limit: opts.limit, queue: opts.queue },
            config.queue,
          );
          const tasks = await history.search(query);
          out(opts.json ? JSON.stringify(tasks) : formatHistory(tasks, history.archived));
        });
      },
    );

  program
    .command('retry')
    .description(
      'queue a finished task (completed, failed or cancelled; in Redis or only in the archive) again, as a new task',
    )
    .argument('<id>', 'job id, as `add` or `history` printed it')
    .option('--queue <name>', 'queue (default: TASKMASTER_QUEUE)')
    .option('--json', 'print the answer as JSON')
    .action(async (id: string, opts: { queue?: string; json?: boolean }) => {
      await withHistory(env, async (history, { config }) => {
        const { queue } = parseHistoryQuery({ queue: opts.queue }, config.queue);
        const { from, added } = await history.retry(id, queue);
        if (opts.json) return out(JSON.stringify({ retried: from._id, task: added }));
        out(
          `${added.id}${added.duplicate ? ' (already queued)' : ''}: ${from.module} queued again from ${id} (${from.status}, ${from.source})`,
        );
      });
    });
}
