import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, inject, it } from 'vitest';
import { startMaster } from '../src/app.ts';
import { loadConfig } from '../src/config/config.ts';
import { FiringRecords } from '../src/schedules/firing-records.ts';
import type { ScheduleStatus } from '../src/schedules/schedule-status.ts';
import { TaskWorker } from '../src/workers/task-worker.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin/taskmaster.js');
const SAMPLE = join(ROOT, 'examples/schedules/config.json');

/** The environment `npm start` would get, on this test's prefix, with the sample schedule. */
function sampleEnv(h: Harness, config = SAMPLE): Record<string, string> {
  return {
    REDIS_URL: inject('redisUrl'),
    TASKMASTER_PREFIX: h.prefix,
    TASKMASTER_CONFIG: config,
    TASKMASTER_TASKS_DIR: join(ROOT, 'tasks'),
    TASKMASTER_PORT: '0',
    TASKMASTER_HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
  };
}

/** Runs the command line to its end. */
function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { PATH: process.env.PATH, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const list = async (env: Record<string, string>): Promise<ScheduleStatus[]> => {
  const r = await cli(['schedules', '--json'], env);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { schedules: ScheduleStatus[] }).schedules;
};

describe('taskmaster schedules', () => {
  const h = useHarness();

  it('lists the sample schedule, fires it by hand, and shows how many of its tasks are done', async () => {
    const env = sampleEnv(h);
    const [before] = await list(env);
    expect(before).toMatchObject({
      name: 'us-close',
      cron: '30 16 * * 1-5',
      tz: 'America/New_York',
      module: 'tickerAnalysis',
      tickers: 8,
      summary: 'tickerSummary',
      registered: false,
    });
    expect(before!.next).toHaveLength(3);
    for (const run of before!.next) expect(run.local).toMatch(/T16:30:00\.000-0[45]:00$/);
    expect(before!.last).toBeUndefined();

    // The master and a worker as `npm start` runs them with TASKMASTER_CONFIG set.
    const config = loadConfig(env);
    const master = await startMaster(config, h.log);
    h.defer(() => master.close());
    const worker = new TaskWorker({
      config,
      connection: h.connection('worker'),
      client: h.client(),
      log: h.log,
      concurrency: 4,
    }).start();
    h.defer(() => worker.close());
    expect((await list(env))[0]).toMatchObject({ registered: true });

    const run = await cli(['schedules', 'run', 'us-close', '--json'], env);
    expect(run.code).toBe(0);
    const record = JSON.parse(run.stdout);
    expect(record).toMatchObject({ manual: true, tickers: 8, tasks: 9, added: 9, duplicates: 0 });
    expect(record.firing).toMatch(/^schedule:us-close@manual:\d{4}-\d\d-\d\dT/);

    const records = new FiringRecords(h.redis, h.client().keys);
    await waitFor(
      async () => (await records.last('us-close', h.client().store))?.summary === 'completed',
      'the summary to complete',
      30_000,
    );
    const summary = await h.client().queue().getJob(record.summaryId);
    expect(summary!.returnvalue).toMatchObject({ schedule: 'us-close', scheduledAt: record.scheduledAt, tickers: 8 });

    const text = await cli(['schedules'], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(
      'us-close: "30 16 * * 1-5" in America/New_York: tickerAnalysis for 8 tickers, then tickerSummary\n',
    );
    expect(text.stdout).toContain(
      `last firing: ${record.scheduledAt} (by hand), at ${record.firedAt}: ` +
        '9 of 9 task(s) added, 9 done, 0 failed; summary completed',
    );

    const again = await cli(['schedules', 'run', 'us-close'], env);
    expect(again.stdout).toMatch(/^us-close: fired as schedule:us-close@manual:\S+: 9 of 9 task\(s\) added\n$/);
    // Five command lines, each starting Node and loading BullMQ: slow on a busy machine.
  }, 180_000);

  it('an unknown schedule and an invalid config are one line each', async () => {
    const unknown = await cli(['schedules', 'run', 'nope'], sampleEnv(h));
    expect(unknown).toMatchObject({
      code: 2,
      stdout: '',
      stderr: 'taskmaster: no schedule named "nope" (schedules: us-close)\n',
    });

    const dir = mkdtempSync(join(tmpdir(), 'taskmaster-schedules-cli-'));
    try {
      const file = join(dir, 'tm.json');
      writeFileSync(
        file,
        JSON.stringify({
          schedules: [{ name: 'x', cron: '0 9 * * 1-5', tz: 'New_York', module: 'm', tickers: ['A'] }],
        }),
      );
      const bad = await cli(['schedules'], sampleEnv(h, file));
      expect(bad.code).toBe(1);
      expect(bad.stderr).toBe(
        `taskmaster: TASKMASTER_CONFIG: ${file}: schedules.0.tz: schedule "x": must be an IANA time zone such as ` +
          '"America/New_York", "Australia/Sydney" or "UTC", got "New_York"\n',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
