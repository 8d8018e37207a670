import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { Env } from './context.ts';

export function registerSchedules(program: Command, env: Env): void {
  const schedules = program
    .command('schedules')
    .summary('schedules with their next runs and last firing')
    .description(
      'Each schedule (as masters registered it in Redis, and those of TASKMASTER_CONFIG not registered yet)\n' +
        'with its next three runs in its time zone and in UTC, and its last firing: how many tasks it\n' +
        'added and how many of them are done.',
    )
    .option('--json', 'print them as JSON')
    .action(async (opts: { json?: boolean }) => {
      const { withClient, out } = await import('./context.ts');
      const { formatSchedules, scheduleStatus } = await import('../schedules/schedule-status.ts');
      await withClient(env, async (ctx) =>
        withSources(ctx, async (sources) => {
          const list = await scheduleStatus(sources);
          out(opts.json ? JSON.stringify({ schedules: list }) : formatSchedules(list));
        }),
      );
    });

  schedules
    .command('run <name>')
    .summary('fire a schedule now')
    .description(
      'Fires a schedule now, as its cron pattern would: one task per ticker and its summary, added as one\n' +
        'batch, under a firing identity of its own (so it never dedupes against a scheduled firing).\n' +
        'No master is needed to add them; workers run them.',
    )
    .option('--json', 'print the firing as JSON')
    .action(async (name: string, own: { json?: boolean }) => {
      // `schedules run x --json`: commander hands --json to `schedules`, which declares it too.
      const opts = { json: own.json ?? (schedules.opts() as { json?: boolean }).json };
      const { withClient, out } = await import('./context.ts');
      const [{ UsageError }, { findSchedules }, { fireSchedule, manualFiring }] = await Promise.all([
        import('../errors.ts'),
        import('../schedules/schedule-status.ts'),
        import('../schedules/firing.ts'),
      ]);
      await withClient(env, async (ctx) =>
        withSources(ctx, async (sources, log) => {
          const found = await findSchedules(sources);
          const entry = found.get(name);
          if (!entry) {
            const known = [...found.keys()].sort().join(', ') || 'none';
            throw new UsageError(`no schedule named ${JSON.stringify(name)} (schedules: ${known})`);
          }
          const result = await fireSchedule(
            { client: ctx.client, keys: ctx.components.keys, redis: ctx.redis, log },
            entry.schedule,
            manualFiring(name),
          );
          if (opts.json) return out(JSON.stringify(result.already ? result : result.record));
          if (result.already) return out(`${name}: ${result.firing} was fired already; nothing added`);
          const r = result.record;
          out(
            `${name}: fired as ${r.firing}: ${r.added} of ${r.tasks} task(s) added` +
              (r.duplicates ? ` (${r.duplicates} already there)` : ''),
          );
        }),
      );
    });
}

type OneShot = Parameters<Parameters<typeof import('./context.ts').withClient>[1]>[0];
type Sources = import('../schedules/schedule-status.ts').ScheduleSources;

/**
 * The schedules queue and records on the command's connection (closed afterwards), and a silent
 * logger: a command's answer is its output.
 */
async function withSources<T>(ctx: OneShot, fn: (sources: Sources, log: Logger) => Promise<T>): Promise<T> {
  const [{ schedulesQueue }, { FiringRecords }, { default: pino }] = await Promise.all([
    import('../schedules/schedules.ts'),
    import('../schedules/firing-records.ts'),
    import('pino'),
  ]);
  const log = pino({ level: 'silent' });
  const queue = schedulesQueue(ctx.redis, ctx.config.prefix, log);
  try {
    const { keys, store } = ctx.components;
    const records = new FiringRecords(ctx.redis, keys);
    return await fn({ queue, records, store, configured: ctx.config.schedules }, log);
  } finally {
    await queue.close();
  }
}
