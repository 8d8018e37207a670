import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { start } from '../src/app.ts';
import { io as ioClient } from 'socket.io-client';
import { loadConfig } from '../src/config/config.ts';
import { RedisUnavailableError } from '../src/errors.ts';
import { createLogger } from '../src/logger.ts';
import { createRedis } from '../src/queue/connection.ts';
import { ensureLocalRedis } from '../src/queue/local-redis.ts';
import { toBullPriority } from '../src/tasks/priority.ts';
import { TaskClient } from '../src/tasks/task-client.ts';
import { FIXTURE_TASKS, useHarness, waitFor, type Harness } from './support/harness.ts';

const BIN = fileURLToPath(new URL('../bin/taskmaster.js', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function cliEnv(h: Harness | undefined, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    REDIS_URL: inject('redisUrl'),
    TASKMASTER_PREFIX: h?.prefix ?? 'tmtest-cli-none',
    TASKMASTER_TASKS_DIR: FIXTURE_TASKS,
    TASKMASTER_BACKOFF_MS: '50',
    TASKMASTER_PORT: '0',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

function spawnCli(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Commands still running; a test that times out leaves none behind. */
const liveCommands = new Set<ChildProcess>();
afterEach(() => {
  for (const child of liveCommands) child.kill('SIGKILL');
  liveCommands.clear();
});

/** Runs the CLI to its end (the test's timeout is the limit); `ms` is for reports only. */
function run(args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  const started = Date.now();
  const child = spawnCli(args, env);
  liveCommands.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => {
    child.on('close', (code) => {
      liveCommands.delete(child);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** The stderr of a failed command: one or more `taskmaster: …` lines and nothing else (no stack). */
function errorLines(r: Result): string[] {
  const lines = r.stderr.trimEnd().split('\n');
  for (const line of lines) expect(line).toMatch(/^taskmaster: /);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  return lines;
}

function tmpDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'taskmaster-cli-'));
  return dir;
}

describe('taskmaster --help', () => {
  it('works for the program and every command', async () => {
    const cases: [string[], string][] = [
      [['--help'], 'Usage: taskmaster [options] [command]'],
      [['add', '--help'], 'Usage: taskmaster add [options] [module] [params...]'],
      [['status', '--help'], 'Usage: taskmaster status [options]'],
      [['start', '--help'], 'Usage: taskmaster start [options]'],
      [['master', '--help'], 'Usage: taskmaster master [options]'],
      [['workers', '--help'], 'Usage: taskmaster workers [options]'],
      [['cancel', '--help'], 'Usage: taskmaster cancel [options] <id>'],
      [['help', 'add'], 'Usage: taskmaster add'],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args, cliEnv(undefined))));
    results.forEach((r, i) => {
      expect(r.code, `${cases[i]![0].join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(cases[i]![1]);
    });
    expect(results[0]!.stdout).toMatch(/add .*\n(.|\n)*status/);
  });
});

describe('taskmaster add', () => {
  const h = useHarness();
  let queue: Queue;
  beforeEach(() => {
    queue = new Queue(h.config.queue, { connection: h.connection('assert'), prefix: h.prefix });
    h.defer(() => queue.close());
  });

  it('adds a task with JSON params, priority, timeout and --after dependencies', async () => {
    const r = await run(
      [
        'add',
        'record',
        '{"n":1}',
        '2',
        '"x"',
        '--priority',
        '80',
        '--timeout',
        '5000',
        '--after',
        'record {"n":0}',
        '--after',
        'other [1, 2]',
        '--after',
        'bare',
      ],
      cliEnv(h),
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(/^t[0-9A-Za-z]{14}$/);
    const job = (await queue.getJob(id))!;
    expect(job.name).toBe('record');
    expect(job.data.$taskmaster).toMatchObject({
      params: [{ n: 1 }, 2, 'x'],
      timeout: 5000,
      dependencies: [
        { module: 'record', params: [{ n: 0 }] },
        { module: 'other', params: [1, 2] },
        { module: 'bare', params: [] },
      ],
    });
    expect(job.opts.priority).toBe(toBullPriority(80));
    expect(await job.getState()).toBe('waiting-children');

    const plain = await run(['add', 'record', '--json'], cliEnv(h));
    expect(plain.code).toBe(0);
    const added = JSON.parse(plain.stdout);
    expect(added).toMatchObject({
      duplicate: false,
      queue: 'tasks',
      task: { module: 'record', params: [], priority: 50 },
    });
    const plainJob = (await queue.getJob(added.id))!;
    expect(plainJob.opts.priority).toBe(toBullPriority(50));
    expect(await plainJob.getState()).toBe('prioritized');
  });

  it('says so when the task is already queued', async () => {
    const first = await run(['add', 'record', '{"ticker":"AAPL"}'], cliEnv(h));
    const again = await run(['add', 'record', '{"ticker":"AAPL"}'], cliEnv(h));
    const json = await run(['add', 'record', '{"ticker":"AAPL"}', '--json'], cliEnv(h));
    const id = first.stdout.trim();
    expect(again.code).toBe(0);
    expect(again.stdout.trim()).toBe(`${id} (already queued)`);
    expect(JSON.parse(json.stdout)).toMatchObject({ id, duplicate: true });
    expect(await queue.count()).toBe(1);
  });

  it('adds a .json file (a task or an array) and an .ndjson file (blank lines skipped)', async () => {
    const dir = tmpDir();
    h.defer(() => rmSync(dir, { recursive: true, force: true }));
    const json = join(dir, 'batch.json');
    writeFileSync(
      json,
      JSON.stringify([
        { module: 'record', params: [{ n: 1 }] },
        { module: 'record', params: [{ n: 2 }], priority: 90 },
        { module: 'modern', params: { value: 3 } },
      ]),
    );
    const one = join(dir, 'one.json');
    writeFileSync(one, JSON.stringify({ module: 'record', params: [{ n: 1 }] }));
    const nd = join(dir, 'batch.ndjson');
    writeFileSync(
      nd,
      [
        '{"module":"record","params":[{"n":10}]}',
        '',
        '{"module":"record","params":[{"n":11}],"dependencies":[{"module":"record","params":[{"n":10}]}]}',
        '  ',
        '',
      ].join('\n'),
    );

    const r1 = await run(['add', '--file', json], cliEnv(h));
    expect(r1.code).toBe(0);
    expect(r1.stdout).toMatch(/^added 3 tasks \(0 duplicates\) in [\d.]+ s\n$/);
    expect(r1.stderr).toContain('added 3/3');
    const r2 = await run(['add', '--file', one], cliEnv(h));
    expect(r2.stdout).toMatch(/^added 1 tasks \(1 duplicates\)/);
    const r3 = await run(['add', '--file', nd, '--json'], cliEnv(h));
    expect(r3.code).toBe(0);
    expect(JSON.parse(r3.stdout)).toMatchObject({ added: 2, duplicates: 0 });

    const jobs = await queue.getJobs(['prioritized', 'waiting-children']);
    const byParams = new Map(jobs.map((j) => [JSON.stringify(j.data.$taskmaster.params), j]));
    expect(jobs).toHaveLength(5);
    expect(byParams.get('[{"n":2}]')!.opts.priority).toBe(toBullPriority(90));
    expect(byParams.get('[{"value":3}]')!.name).toBe('modern');
    // The dependency inside the file became a flow child of its dependent.
    expect(await byParams.get('[{"n":11}]')!.getState()).toBe('waiting-children');
  });

  it('refuses a whole file with a bad line or index, naming each, and adds nothing', async () => {
    const dir = tmpDir();
    h.defer(() => rmSync(dir, { recursive: true, force: true }));
    const nd = join(dir, 'bad.ndjson');
    writeFileSync(
      nd,
      [
        '{"module":"record","params":[1]}',
        '',
        '{"module":"record","priority":"high"}',
        '{"module":"record","params":[2]}',
        '{not json',
        '{"module":"../x"}',
      ].join('\n'),
    );
    const r = await run(['add', '--file', nd], cliEnv(h));
    expect(r.code).toBe(1);
    const lines = errorLines(r);
    expect(lines).toEqual([
      expect.stringMatching(/^taskmaster: bad\.ndjson: line 3: priority: must be an integer/),
      expect.stringMatching(/^taskmaster: bad\.ndjson: line 5: not valid JSON/),
      expect.stringMatching(/^taskmaster: bad\.ndjson: line 6: module: "\.\.\/x" is not allowed/),
      'taskmaster: bad.ndjson: nothing was added',
    ]);

    const json = join(dir, 'bad.json');
    writeFileSync(json, JSON.stringify([{ module: 'record' }, { module: 'record', timeout: 0 }]));
    const rj = await run(['add', '--file', json], cliEnv(h));
    expect(rj.code).toBe(1);
    expect(errorLines(rj)[0]).toMatch(/^taskmaster: bad\.json: task\[1\]: timeout: must be a whole number/);

    const ext = await run(['add', '--file', join(dir, 'tasks.csv')], cliEnv(h));
    expect(ext.code).toBe(2);
    expect(errorLines(ext)).toHaveLength(1);

    expect(await queue.getJobCounts()).toMatchObject({ prioritized: 0, waiting: 0, 'waiting-children': 0 });
    // Only the meta key the assertion Queue itself writes; no job, no claim.
    expect((await h.redis.keys(`${h.prefix}:*`)).filter((k) => !k.endsWith(':tasks:meta'))).toEqual([]);
  });

  it('adds 100,000 tasks from an .ndjson file in chunks, and status counts them', { timeout: 600_000 }, async () => {
    const dir = tmpDir();
    h.defer(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, '100k.ndjson');
    const lines: string[] = [];
    for (let i = 0; i < 100_000; i++)
      lines.push(JSON.stringify({ module: 'record', params: [{ i }], priority: i % 7 }));
    writeFileSync(file, lines.join('\n') + '\n');

    const r = await run(['add', '--file', file], cliEnv(h));
    expect(r.stderr).toContain('added 100000/100000');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^added 100000 tasks \(0 duplicates\) in [\d.]+ s\n$/);
    console.log(`add --file with 100,000 tasks: ${r.stdout.trim()} (process wall time ${(r.ms / 1000).toFixed(1)} s)`);
    expect(await queue.getJobCountByTypes('prioritized')).toBe(100_000);

    const s = await run(['status', '--json'], cliEnv(h));
    expect(s.code).toBe(0);
    const status = JSON.parse(s.stdout);
    expect(status.counts.prioritized).toBe(100_000);
    expect(status.modules.record.prioritized).toBe(100_000);
    console.log(`status --json over 100,000 jobs: ${(s.ms / 1000).toFixed(1)} s`);
  });

  it('answers an invalid task with one line per problem naming the field, exit 1', async () => {
    const r = await run(['add', '../escape', '--after', '/abs'], cliEnv(h));
    expect(r.code).toBe(1);
    const lines = errorLines(r);
    expect(lines).toEqual([
      expect.stringMatching(/^taskmaster: task\[0\]\.module: "\.\.\/escape" is not allowed/),
      expect.stringMatching(/^taskmaster: task\[0\]\.dependencies\[0\]\.module: "\/abs" is not allowed/),
    ]);
  });
});

describe('taskmaster status', () => {
  const h = useHarness();

  it('reports counts per state and per module, as a table and as JSON', async () => {
    const client = h.client();
    const native = new Queue(h.config.queue, { connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => native.close());
    // One completed and one failed job first, then the worker goes away.
    await client.add([
      { module: 'record', params: [{ n: 'done' }] },
      { module: 'fail', params: [1] },
    ]);
    const worker = h.worker();
    await waitFor(async () => {
      const c = await native.getJobCounts('completed', 'failed');
      return c.completed === 1 && c.failed === 1;
    }, 'one completed and one failed job');
    await worker.close();
    await client.add([
      { module: 'record', params: [{ n: 1 }] },
      { module: 'record', params: [{ n: 2 }] },
    ]);
    await client.add({ module: 'modern', params: [{ value: 1 }], dependencies: [{ module: 'never', params: [] }] });
    await native.add('record', { n: 'later' }, { delay: 600_000 });
    await native.add('native', { plain: true });

    const json = await run(['status', '--json'], cliEnv(h));
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    const status = JSON.parse(json.stdout);
    expect(status).toMatchObject({
      queue: 'tasks',
      prefix: h.prefix,
      paused: false,
      counts: { waiting: 1, prioritized: 2, delayed: 1, 'waiting-children': 1, active: 0, completed: 1, failed: 1 },
    });
    expect(status.modules.record).toEqual({
      waiting: 0,
      prioritized: 2,
      delayed: 1,
      'waiting-children': 0,
      active: 0,
      completed: 1,
      failed: 0,
    });
    expect(status.modules.fail).toMatchObject({ failed: 1 });
    expect(status.modules.modern).toMatchObject({ 'waiting-children': 1 });
    expect(status.modules.native).toMatchObject({ waiting: 1 });

    const text = await run(['status'], cliEnv(h));
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`queue tasks (prefix ${h.prefix}): 7 job(s) in Redis`);
    expect(text.stdout).toMatch(/^prioritized\s+2$/m);
    expect(text.stdout).toMatch(
      /^module\s+waiting\s+prioritized\s+delayed\s+waiting-children\s+active\s+completed\s+failed$/m,
    );
    expect(text.stdout).toMatch(/^record\s+0\s+2\s+1\s+0\s+0\s+1\s+0$/m);
    expect(text.stdout).toMatch(/^native\s+1\s+0\s+0\s+0\s+0\s+0\s+0$/m);
  });
});

describe('bad arguments and an unreachable Redis', () => {
  it('answers a bad argument with one line and exit code 2', async () => {
    const cases: [string[], RegExp][] = [
      [['add', 'record', '--bogus'], /unknown option '--bogus'/],
      [['add'], /missing <module>/],
      [['add', 'record', '--priority', 'high'], /--priority must be an integer/],
      [['add', 'record', '--priority', '5000000'], /--priority must be an integer from -1000000 to 1000000/],
      [['add', 'record', '--timeout', '0'], /--timeout must be a whole number of milliseconds/],
      [['add', 'record', 'AAPL'], /parameter 1 \(AAPL\) is not valid JSON; .*'"AAPL"'/],
      [['add', 'record', '--after', 'x {bad'], /parameters after "x" must be JSON/],
      [['add', 'record', '--file', 'x.json'], /give either <module> or --file/],
      [['status', '--queue', 'a:b'], /--queue/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args, cliEnv(undefined))));
    results.forEach((r, i) => {
      const what = cases[i]![0].join(' ');
      expect(r.code, `${what}: ${r.stderr}`).toBe(2);
      const lines = errorLines(r);
      expect(lines, what).toHaveLength(1);
      expect(lines[0], what).toMatch(cases[i]![1]);
      expect(r.stdout, what).toBe('');
    });
  });

  it('answers an unreachable Redis with one line and exit code 1, without waiting for it', async () => {
    const env = cliEnv(undefined, { REDIS_URL: 'redis://127.0.0.1:1' });
    const results = await Promise.all([run(['add', 'record', '1'], env), run(['status'], env), run(['workers'], env)]);
    for (const r of results) {
      expect(r.code, r.stderr).toBe(1);
      const lines = errorLines(r);
      expect(lines).toHaveLength(1);
      // Exiting at all is the point: a command that waited for Redis would run until the test times out.
      expect(lines[0]).toMatch(/^taskmaster: cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
    }
  });

  it('names a bad setting', async () => {
    const r = await run(['status'], cliEnv(undefined, { TASKMASTER_PREFIX: 'a b' }));
    expect(r.code).toBe(1);
    expect(errorLines(r)).toEqual([expect.stringMatching(/^taskmaster: TASKMASTER_PREFIX must be/)]);
  });
});

describe('taskmaster start', () => {
  const h = useHarness();

  it('runs master and workers, completes a task added with the CLI, and exits 0 on SIGTERM', async () => {
    const child = spawnCli(['start'], cliEnv(h, { TASKMASTER_WORKERS: '1' }));
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    h.defer(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    await waitFor(
      () => stderr.includes('"msg":"workers started"') && stderr.includes('"msg":"master started"'),
      'start-up log lines',
      60_000,
    );

    const add = await run(['add', 'record', '{"n":42}'], cliEnv(h));
    expect(add.code).toBe(0);
    const queue = new Queue(h.config.queue, { connection: h.connection('assert'), prefix: h.prefix });
    h.defer(() => queue.close());
    const job = (await queue.getJob(add.stdout.trim()))!;
    await waitFor(async () => (await job.getState()) === 'completed', 'the task to complete', 60_000);
    const done = (await queue.getJob(job.id!))!;
    expect(done.returnvalue).toEqual({ params: { n: 42 } });

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).toContain('"msg":"shutting down"');
    expect(stderr).not.toMatch(/"level":50/);
  });
});

describe('local redis for start', () => {
  const log = createLogger({ level: 'silent', pretty: false });
  let dataDir: string;
  beforeEach(() => {
    dataDir = tmpDir();
  });
  afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

  const unset = () =>
    loadConfig({
      TASKMASTER_DATA_DIR: dataDir,
      TASKMASTER_TASKS_DIR: FIXTURE_TASKS,
      TASKMASTER_PORT: '0',
      LOG_LEVEL: 'silent',
    });

  it('starts a private redis-server on a free port when 6379 is taken, append-only under the data dir', async () => {
    const local = await ensureLocalRedis(unset(), {
      log,
      redisAnswers: async () => false,
      portFree: async () => false,
    });
    expect(local).toBeDefined();
    try {
      expect(local!.port).not.toBe(6379);
      expect(local!.url).toBe(`redis://127.0.0.1:${local!.port}`);
      expect(local!.dir).toBe(join(dataDir, 'redis'));
      const redis = createRedis(local!.url, { name: 'local-test', failFast: true });
      await redis.set('k', 'v');
      expect(await redis.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
      expect(await redis.config('GET', 'dir')).toEqual(['dir', join(dataDir, 'redis')]);
      await redis.quit();
    } finally {
      await local!.stop();
    }
    expect(() => process.kill(local!.pid, 0)).toThrow();
    expect(readdirSync(local!.dir).some((f) => f.startsWith('appendonly'))).toBe(true);
  });

  it('uses what answers on 6379, or REDIS_URL, without starting anything', async () => {
    expect(await ensureLocalRedis(unset(), { log, redisAnswers: async () => true })).toBeUndefined();
    const explicit = loadConfig({ REDIS_URL: inject('redisUrl'), TASKMASTER_DATA_DIR: dataDir });
    const probe = async () => {
      throw new Error('must not probe when REDIS_URL is set');
    };
    expect(await ensureLocalRedis(explicit, { log, redisAnswers: probe })).toBeUndefined();
    expect(existsSync(join(dataDir, 'redis'))).toBe(false);
  });

  it('says exactly how to get Redis when there is none and no redis-server', async () => {
    const attempt = ensureLocalRedis(unset(), { log, redisAnswers: async () => false, hasRedisServer: () => false });
    await expect(attempt).rejects.toBeInstanceOf(RedisUnavailableError);
    await expect(attempt).rejects.toThrow(/REDIS_URL.*apt-get install redis-server.*docker compose up -d redis/);
  });

  it('start() runs master and workers on the private Redis and stops it on close', async () => {
    const config = unset();
    const running = await start(config, log, { redisAnswers: async () => false, portFree: async () => false });
    let stopped = false;
    try {
      expect(running.redisUrl).not.toBe(config.redisUrl);
      const connection = createRedis(running.redisUrl, { name: 'local-client' });
      const client = new TaskClient(config, connection);
      try {
        const [added] = await client.add({ module: 'record', params: [{ n: 'private' }] });
        const queue = client.queue();
        await waitFor(
          async () => (await queue.getJobState(added!.id)) === 'completed',
          'the task to complete on the private Redis',
          120_000,
        );
        // One root in the process: the workers' primary uses the master's connection, not one of its own.
        const names = [...String(await connection.client('LIST')).matchAll(/ name=(\S*)/g)].map((m) => m[1]);
        expect(names).toContain('taskmaster:master');
        expect(names.filter((n) => n === 'taskmaster:workers')).toEqual([]);
        // The master's port speaks the legacy protocol: a feeder adds, a worker runs it.
        const feeder = ioClient(`http://127.0.0.1:${running.port}`, { transports: ['websocket'] });
        try {
          const answer = (await feeder
            .timeout(5000)
            .emitWithAck('task:add', { module: 'record', params: [{ n: 'socket' }] })) as {
            ok: boolean;
            tasks: { _id: string }[];
          };
          expect(answer.ok).toBe(true);
          await waitFor(
            async () => (await queue.getJobState(answer.tasks[0]!._id)) === 'completed',
            'the task added over Socket.IO to complete',
            120_000,
          );
        } finally {
          feeder.close();
        }
      } finally {
        await client.close();
        await connection.quit();
      }
      await running.close();
      stopped = true;
      const probe = createRedis(running.redisUrl, { name: 'probe', failFast: true });
      await expect(probe.ping()).rejects.toThrow();
      probe.disconnect();
    } finally {
      if (!stopped) await running.close();
    }
  });
});

describe('taskmaster cancel', () => {
  const h = useHarness();

  it('removes a waiting task, stops a running one under `taskmaster workers`, and refuses an unknown id', async () => {
    const queue = new Queue(h.config.queue, { connection: h.connection('assert'), prefix: h.prefix });
    h.defer(() => queue.close());

    const waiting = await run(['add', 'sleep', '{"ms":30000}'], cliEnv(h));
    const waitingId = waiting.stdout.trim();
    const removed = await run(['cancel', waitingId], cliEnv(h));
    expect(removed.code).toBe(0);
    expect(removed.stdout).toContain(`${waitingId}: removed`);
    expect(await queue.getJob(waitingId)).toBeUndefined();

    const child = spawnCli(['workers'], cliEnv(h, { TASKMASTER_WORKERS: '1' }));
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    h.defer(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const running = await run(['add', 'sleep', '{"ms":60000}'], cliEnv(h));
    const runningId = running.stdout.trim();
    await waitFor(async () => (await queue.getJobState(runningId)) === 'active', 'the task to start', 60_000);
    const cancelled = await run(['cancel', runningId, '--json'], cliEnv(h));
    expect(cancelled.code).toBe(0);
    expect(JSON.parse(cancelled.stdout)).toEqual({ id: runningId, state: 'cancelling' });
    await waitFor(
      async () => (await queue.getJobState(runningId)) === 'failed',
      'the task to end as cancelled',
      60_000,
    );
    const job = (await queue.getJob(runningId))!;
    expect(job.failedReason).toBe('cancelled');
    expect(job.attemptsMade).toBe(1);

    const unknown = await run(['cancel', 'tnosuchtask'], cliEnv(h));
    expect(unknown.code).toBe(1);
    expect(errorLines(unknown)[0]).toContain('no task with id tnosuchtask');

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
