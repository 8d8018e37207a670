import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { ScheduleConfig } from '../config/config-file.ts';
import { InvalidTaskError } from '../errors.ts';
import { keysFor, type Keys } from '../queue/keys.ts';
import { dependencyKey } from '../tasks/identity.ts';
import type { Task } from '../tasks/task.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { validateTasks, type ValidateOptions } from '../tasks/validate.ts';
import { FiringRecords, type FiringRecord } from './firing-records.ts';
import { expandTemplate, mentionsTicker, type TemplateVars } from './templates.ts';

/** One firing of a schedule. */
export interface Firing {
  /** Its identity, and the scope of its tasks, so that firings never dedupe against each other. */
  id: string;
  /** ms: the time it was scheduled for, or when a run by hand was asked for. */
  at: number;
  manual: boolean;
}

/** The firing a job scheduler produced for `at` (its scheduled time). */
export function scheduledFiring(name: string, at: number): Firing {
  return { id: `schedule:${name}@${new Date(at).toISOString()}`, at, manual: false };
}

/** A firing by hand (`taskmaster schedules run`), with an identity of its own. */
export function manualFiring(name: string, at = Date.now()): Firing {
  return { id: `schedule:${name}@manual:${new Date(at).toISOString()}`, at, manual: true };
}

/**
 * The tasks of a firing: one per ticker (params from the template, see templates.ts), then the
 * summary, which depends on every one of them. All carry the firing's id as their scope. The
 * whole firing is one batch, so it must fit in `limits.maxBatch`.
 */
export function firingTasks(schedule: ScheduleConfig, firing: Firing, opts: ValidateOptions): Task[] {
  const count = schedule.tickers.length + (schedule.summary ? 1 : 0);
  if (count > opts.limits.maxBatch) {
    const message =
      `a firing is ${count} tasks (its tickers${schedule.summary ? ' and the summary' : ''}), ` +
      `more than one batch may hold (TASKMASTER_MAX_BATCH ${opts.limits.maxBatch})`;
    throw new InvalidTaskError([{ index: -1, field: 'tickers', message }]);
  }
  const vars: TemplateVars = {
    schedule: schedule.name,
    scheduledAt: new Date(firing.at).toISOString(),
    tickers: schedule.tickers,
  };
  const appendTicker = !mentionsTicker(schedule.params);
  const tasks = validateTasks(
    schedule.tickers.map((ticker) => {
      const params = expandTemplate(schedule.params, { ...vars, ticker }) as unknown[];
      return {
        module: schedule.module,
        params: appendTicker ? [...params, ticker] : params,
        priority: schedule.priority,
        timeout: schedule.timeout,
        scope: firing.id,
      };
    }),
    opts,
  );
  if (!schedule.summary) return tasks;
  const { summary } = schedule;
  // Validated without its dependencies: a summary may wait on more tasks than a feeder's task may name.
  const [last] = validateTasks(
    {
      module: summary.module,
      params: expandTemplate(summary.params, vars),
      priority: summary.priority ?? schedule.priority,
      timeout: summary.timeout ?? schedule.timeout,
      scope: firing.id,
    },
    opts,
  );
  last!.dependencies = tasks.map((t) => ({ module: t.module, params: t.params, scope: firing.id }));
  return [...tasks, last!];
}

export interface FireContext {
  client: TaskClient;
  /** @defaultValue the keys of the client's prefix */
  keys?: Keys;
  redis: Redis;
  log: Logger;
}

/** What a firing did: its record, or that it had been added already. */
export type FireResult = { already: false; record: FiringRecord } | { already: true; firing: string };

/**
 * Adds a firing's tasks as one atomic batch and records it. A firing seen again (another master,
 * a retried firing job, a restart mid-firing) adds nothing twice: its tasks have the same
 * identities (they are duplicates while live or recently completed), and once recorded it is
 * not added again at all.
 */
export async function fireSchedule(ctx: FireContext, schedule: ScheduleConfig, firing: Firing): Promise<FireResult> {
  const records = new FiringRecords(ctx.redis, ctx.keys ?? keysFor(ctx.client.config.prefix));
  if (await records.fired(schedule.name, firing.id)) return { already: true, firing: firing.id };
  const tasks = firingTasks(schedule, firing, ctx.client.config);
  const added = await ctx.client.addTasks(tasks);
  const fresh = added.filter((a) => !a.duplicate).length;
  const record: FiringRecord = {
    firing: firing.id,
    scheduledAt: new Date(firing.at).toISOString(),
    firedAt: new Date().toISOString(),
    manual: firing.manual,
    tickers: schedule.tickers.length,
    tasks: tasks.length,
    added: fresh,
    duplicates: tasks.length - fresh,
  };
  if (schedule.summary) record.summaryId = added.at(-1)!.id;
  await records.added(
    schedule.name,
    record,
    tasks.map((t) => dependencyKey(t.module, t.params, t.scope)),
  );
  ctx.log.info({ schedule: schedule.name, firing: firing.id, tasks: tasks.length, added: fresh }, 'schedule fired');
  return { already: false, record };
}
