import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue, type Job } from 'bullmq';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { startMaster, type Master } from '../src/app.ts';
import type { ScheduleConfig } from '../src/config/config-file.ts';
import { loadConfig, type Config } from '../src/config/config.ts';
import { ConfigError } from '../src/errors.ts';
import { SCHEDULE_QUEUE } from '../src/queue/keys.ts';
import { nextRuns } from '../src/schedules/cron.ts';
import { FiringRecords } from '../src/schedules/firing-records.ts';
import { fireSchedule, firingTasks, manualFiring, scheduledFiring } from '../src/schedules/firing.ts';
import { ENVELOPE_KEY, type Envelope } from '../src/tasks/task.ts';
import { TaskClient } from '../src/tasks/task-client.ts';
import { FIXTURE_TASKS, useHarness, waitFor, type Harness } from './support/harness.ts';

type Step = { at: 'start' | 'end'; name: string; t: number };
const g = globalThis as { __tmSteps?: Step[]; __tmHolds?: Record<string, (v?: unknown) => void> };

beforeEach(() => {
  g.__tmSteps = [];
  g.__tmHolds = {};
});
afterEach(() => Object.values(g.__tmHolds ?? {}).forEach((done) => done()));

/** Writes `schedules` to a config file of the test and loads the configuration a master would. */
function useSchedules(h: Harness) {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'taskmaster-schedules-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const env = (extra: Record<string, string>) => ({
    REDIS_URL: inject('redisUrl'),
    TASKMASTER_PREFIX: h.prefix,
    TASKMASTER_TASKS_DIR: FIXTURE_TASKS,
    TASKMASTER_BACKOFF_MS: '50',
    TASKMASTER_PORT: '0',
    TASKMASTER_HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...extra,
  });
  return {
    /** A configuration with these schedules in its config file (none: no config file at all). */
    config(schedules?: unknown[], extra: Record<string, string> = {}): Config {
      if (!schedules) return loadConfig(env(extra));
      const file = join(dir, `tm-${Math.random().toString(36).slice(2)}.json`);
      writeFileSync(file, JSON.stringify({ schedules }));
      return loadConfig(env({ TASKMASTER_CONFIG: file, ...extra }));
    },
    async master(config: Config): Promise<Master> {
      const m = await startMaster(config, h.log);
      h.defer(() => m.close());
      return m;
    },
    /** The internal schedules queue, to look at the job schedulers and firing jobs. */
    queue(): Queue {
      const q = new Queue(SCHEDULE_QUEUE, { connection: h.connection('schedules'), prefix: h.prefix });
      h.defer(() => q.close());
      return q;
    },
    records(): FiringRecords {
      return new FiringRecords(h.redis, h.client().keys);
    },
  };
}

/** Task jobs of one firing (its scope), in any state. */
async function jobsOf(client: TaskClient, firing: string): Promise<Job[]> {
  const jobs = await client
    .queue()
    .getJobs(['waiting', 'prioritized', 'waiting-children', 'active', 'completed', 'failed', 'delayed']);
  return jobs.filter((j) => (j.data as Record<string, Envelope>)[ENVELOPE_KEY]?.scope === firing);
}

/** Scheduled times (ms) of the firings recorded for a schedule, in order. */
async function firedTimes(h: Harness, name: string): Promise<number[]> {
  const ids = await h.redis.zrange(h.client().keys.scheduleFired(name), 0, -1);
  return ids.map((id) => Date.parse(id.slice(id.indexOf('@') + 1))).sort((a, b) => a - b);
}

const CLOSE = {
  name: 'close',
  cron: '30 16 * * 1-5',
  tz: 'America/New_York',
  module: 'record',
  params: [{ ticker: '{{ticker}}' }],
  tickers: ['AAPL', 'MSFT', 'NVDA'],
  summary: { module: 'record', params: [{ summary: '{{schedule}}', tickers: '{{tickers}}' }] },
};

describe('a schedule firing on its own', () => {
  const h = useHarness();
  const s = useSchedules(h);

  it('a 6-field every-2-seconds schedule fires: a task per ticker, and a summary run after all of them', async () => {
    const config = s.config([
      {
        name: 'tick',
        cron: '*/2 * * * * *',
        module: 'hold',
        params: [{ name: '{{ticker}}@{{scheduledAt}}' }],
        tickers: ['AAA', 'BBB', 'CCC'],
        summary: { module: 'step', params: [{ name: 'summary@{{scheduledAt}}', of: '{{tickers}}' }] },
      },
    ]);
    const master = await s.master(config);
    h.worker({ concurrency: 8 });
    await waitFor(async () => (await firedTimes(h, 'tick')).length > 0, 'the schedule to fire', 30_000);
    // No further firing while the first one is looked at.
    await master.close();
    const at = (await firedTimes(h, 'tick'))[0]!;
    expect(at % 2000).toBe(0);
    const scheduledAt = new Date(at).toISOString();
    const firing = `schedule:tick@${scheduledAt}`;

    const jobs = await jobsOf(h.client(), firing);
    expect(jobs.map((j) => j.name).sort()).toEqual(['hold', 'hold', 'hold', 'step']);
    const summary = jobs.find((j) => j.name === 'step')!;
    const env = (j: Job) => (j.data as Record<string, Envelope>)[ENVELOPE_KEY]!;
    expect(env(summary).params).toEqual([{ name: `summary@${scheduledAt}`, of: ['AAA', 'BBB', 'CCC'] }]);
    expect(env(summary).dependencies).toHaveLength(3);
    const holds = ['AAA', 'BBB', 'CCC'].map((t) => `${t}@${scheduledAt}`);
    expect(jobs.filter((j) => j.name === 'hold').map((j) => env(j).params[0])).toEqual(
      expect.arrayContaining(holds.map((name) => ({ name }))),
    );

    // The tickers run at once; the summary waits for every one of them.
    await waitFor(() => holds.every((n) => g.__tmHolds![n]), 'the three ticker tasks to run');
    g.__tmHolds![holds[0]!]!();
    g.__tmHolds![holds[1]!]!();
    await waitFor(
      async () => (await jobsOf(h.client(), firing)).filter((j) => j.finishedOn).length === 2,
      'two tickers done',
    );
    expect(await h.client().queue().getJobState(summary.id!)).toBe('waiting-children');
    g.__tmHolds![holds[2]!]!();
    await waitFor(
      () => g.__tmSteps!.some((st) => st.name === `summary@${scheduledAt}` && st.at === 'end'),
      'the summary to run',
    );
    const steps = g.__tmSteps!.filter((st) => st.name.endsWith(`@${scheduledAt}`));
    const summaryStart = steps.findIndex((st) => st.name.startsWith('summary') && st.at === 'start');
    expect(
      steps
        .slice(0, summaryStart)
        .filter((st) => st.at === 'end')
        .map((st) => st.name)
        .sort(),
    ).toEqual(holds);

    await waitFor(async () => (await jobsOf(h.client(), firing)).every((j) => j.finishedOn), 'the firing to finish');
    expect((await jobsOf(h.client(), firing)).map((j) => j.returnvalue !== undefined && !j.failedReason)).toEqual([
      true,
      true,
      true,
      true,
    ]);
  });

  it('fires 5,000 tickers as one batch: 5,000 tasks and a summary waiting on all of them', async () => {
    const tickers = Array.from({ length: 5000 }, (_, i) => `T${i}`);
    const config = s.config([{ ...CLOSE, tickers }]);
    const schedule = config.schedules[0]!;
    const client = new TaskClient(config, h.connection('counting'));
    h.defer(() => client.close());
    let batches = 0;
    const addTasks = client.addTasks.bind(client);
    client.addTasks = (tasks) => {
      batches++;
      return addTasks(tasks);
    };
    const result = await fireSchedule({ client, redis: h.redis, log: h.log }, schedule, manualFiring('close'));
    expect(batches).toBe(1);
    expect(result.already).toBe(false);
    if (result.already) return;
    expect(result.record).toMatchObject({ tickers: 5000, tasks: 5001, added: 5001, duplicates: 0 });
    const summary = await client.queue().getJob(result.record.summaryId!);
    expect(await summary!.getState()).toBe('waiting-children');
    expect((await summary!.getDependenciesCount()).unprocessed).toBe(5000);
    // 5,001 jobs written and read back: slow on a busy machine.
  }, 120_000);
});

describe('job schedulers from the config file', () => {
  const h = useHarness();
  const s = useSchedules(h);

  const pending = async (q: Queue, name: string) => {
    const scheduler = await q.getJobScheduler(name);
    const job = scheduler?.next === undefined ? undefined : await q.getJob(`repeat:${name}:${scheduler.next}`);
    return { scheduler, job };
  };

  it('are upserted once, whether two masters start together or a master restarts', async () => {
    const config = s.config([CLOSE]);
    const [a, b] = await Promise.all([s.master(config), s.master(config)]);
    const q = s.queue();
    const schedulers = await q.getJobSchedulers(0, -1);
    expect(schedulers.map((x) => [x.key, x.pattern, x.tz])).toEqual([['close', '30 16 * * 1-5', 'America/New_York']]);
    expect(schedulers[0]!.template?.data).toEqual(config.schedules[0]);
    const first = await pending(q, 'close');
    expect(first.scheduler!.next).toBe(Date.parse(nextRuns(CLOSE.cron, CLOSE.tz, new Date(), 1)[0]!.utc));
    expect(await first.job!.getState()).toBe('delayed');
    expect(await q.getDelayedCount()).toBe(1);

    await Promise.all([a.close(), b.close()]);
    await s.master(config);
    const again = await pending(q, 'close');
    // Left as it was: the same pending firing, not made again.
    expect(again.job!.id).toBe(first.job!.id);
    expect(again.job!.timestamp).toBe(first.job!.timestamp);
    expect(await q.getDelayedCount()).toBe(1);
    expect(await q.getJobSchedulersCount()).toBe(1);
  });

  it('a changed schedule is replaced; one no longer in the config file is removed with its records', async () => {
    const open = { ...CLOSE, name: 'open', cron: '30 9 * * 1-5' };
    const m1 = await s.master(s.config([CLOSE, open]));
    await m1.close();
    const client = h.client();
    const openConfig = s.config([open]).schedules[0]!;
    await fireSchedule({ client, redis: h.redis, log: h.log }, openConfig, manualFiring('open'));
    expect(await s.records().last('open', client.store)).toBeDefined();

    const changed = { ...CLOSE, cron: '0 16 * * 1-5', tickers: ['AAPL'] };
    const m2 = await s.master(s.config([changed]));
    const q = s.queue();
    const schedulers = await q.getJobSchedulers(0, -1);
    expect(schedulers.map((x) => [x.key, x.pattern])).toEqual([['close', '0 16 * * 1-5']]);
    expect((schedulers[0]!.template!.data as ScheduleConfig).tickers).toEqual(['AAPL']);
    expect((await pending(q, 'close')).scheduler!.next).toBe(
      Date.parse(nextRuns('0 16 * * 1-5', CLOSE.tz, new Date(), 1)[0]!.utc),
    );
    // Only the changed schedule's pending firing is left; the removed one's went with it.
    expect((await q.getDelayed()).map((j) => j.repeatJobKey)).toEqual(['close']);
    expect(await s.records().last('open', client.store)).toBeUndefined();
    expect(await h.redis.exists(client.keys.scheduleFired('open'))).toBe(0);
    await m2.close();

    // A master without a config file cannot tell what the schedules are: it leaves them.
    await s.master(s.config());
    expect((await q.getJobSchedulers(0, -1)).map((x) => x.key)).toEqual(['close']);
  });

  it('a firing the master would refuse stops start-up, naming the schedule and the field', async () => {
    const tooMany = s.config([CLOSE], { TASKMASTER_MAX_BATCH: '3' });
    await expect(startMaster(tooMany, h.log)).rejects.toThrow(
      new RegExp(
        '^schedule "close": tickers: a firing is 4 tasks \\(its tickers and the summary\\), ' +
          'more than one batch may hold \\(TASKMASTER_MAX_BATCH 3\\)$',
      ),
    );
    const poisoned = s.config([{ ...CLOSE, params: [JSON.parse('{"__proto__": {"x": 1}, "t": "{{ticker}}"}')] }]);
    const err = await startMaster(poisoned, h.log).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe('schedule "close": params[0].__proto__: the key "__proto__" is not allowed');
    expect(await s.queue().getJobSchedulersCount()).toBe(0);
  });
});

describe('a firing seen twice', () => {
  const h = useHarness();
  const s = useSchedules(h);

  it('adds nothing twice: from two masters at once, again later, or after a crash before recording', async () => {
    const schedule = s.config([CLOSE]).schedules[0]!;
    const client = h.client();
    const ctx = { client, redis: h.redis, log: h.log };
    const at = Date.parse('2026-12-04T21:30:00.000Z');
    const firing = scheduledFiring('close', at);

    const [x, y] = await Promise.all([fireSchedule(ctx, schedule, firing), fireSchedule(ctx, schedule, firing)]);
    const added = [x, y].map((r) => (r.already ? 0 : r.record.added));
    expect(added.reduce((a, b) => a + b, 0)).toBe(4);
    expect(await jobsOf(client, firing.id)).toHaveLength(4);
    expect(await fireSchedule(ctx, schedule, firing)).toEqual({
      already: true,
      firing: 'schedule:close@2026-12-04T21:30:00.000Z',
    });

    // Once its tasks completed (the dedup window aside), the firing is still not added again.
    h.worker({ concurrency: 4 });
    await waitFor(async () => (await s.records().last('close', client.store))?.done === 4, 'the firing to be done');
    expect(await fireSchedule(ctx, schedule, firing)).toMatchObject({ already: true });
    expect(await jobsOf(client, firing.id)).toHaveLength(4);

    // The next firing is its own.
    const next = scheduledFiring('close', at + 86_400_000);
    expect(await fireSchedule(ctx, schedule, next)).toMatchObject({
      already: false,
      record: { added: 4, duplicates: 0 },
    });

    // A process that added a firing and died before recording it: the retry adds nothing.
    const third = scheduledFiring('close', at + 2 * 86_400_000);
    await client.addTasks(firingTasks(schedule, third, client.config));
    const retried = await fireSchedule(ctx, schedule, third);
    expect(retried).toMatchObject({ already: false, record: { tasks: 4, added: 0, duplicates: 4 } });
    expect(await jobsOf(client, third.id)).toHaveLength(4);
  });
});

describe('missed firings', () => {
  const h = useHarness();
  const s = useSchedules(h);

  it('a firing due while no master ran happens once when one is back; the others are skipped', async () => {
    const config = s.config([{ name: 'tick', cron: '*/2 * * * * *', module: 'record', tickers: ['A'] }]);
    const first = await s.master(config);
    await waitFor(async () => (await firedTimes(h, 'tick')).length > 0, 'the schedule to fire', 30_000);
    await first.close();
    const q = s.queue();
    const missed = (await q.getJobScheduler('tick'))!.next!;
    // Down long enough for two more runs to pass.
    await waitFor(() => Date.now() > missed + 4100, 'two more runs to pass', 10_000);
    const back = Date.now();
    await s.master(config);
    await waitFor(
      async () => (await firedTimes(h, 'tick')).some((t) => t > missed),
      'a run after the master is back',
      30_000,
    );
    const times = await firedTimes(h, 'tick');
    expect(times).toContain(missed);
    // Nothing between the missed run and the restart: the runs after it are counted from when it fired.
    expect(times.filter((t) => t > missed && t <= back)).toEqual([]);
  });
});

describe('GET /api/schedules', () => {
  const h = useHarness();
  const s = useSchedules(h);

  it('lists each schedule with its next three runs in its zone and in UTC, and its last firing', async () => {
    const config = s.config([CLOSE]);
    const master = await s.master(config);
    await fireSchedule({ client: h.client(), redis: h.redis, log: h.log }, config.schedules[0]!, manualFiring('close'));
    const res = await fetch(`http://127.0.0.1:${master.port}/api/schedules`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { schedules: Record<string, unknown>[] };
    expect(body.schedules).toHaveLength(1);
    const [close] = body.schedules;
    expect(close).toMatchObject({
      name: 'close',
      cron: CLOSE.cron,
      tz: CLOSE.tz,
      module: 'record',
      tickers: 3,
      summary: 'record',
      registered: true,
    });
    const next = close!.next as { utc: string; local: string }[];
    expect(next).toHaveLength(3);
    for (const run of next) {
      expect(run.local).toMatch(/T16:30:00\.000-0[45]:00$/);
      expect(Date.parse(run.local)).toBe(Date.parse(run.utc));
    }
    expect(close!.last).toMatchObject({ manual: true, tasks: 4, added: 4, done: 0, summary: 'pending' });
  });
});
