import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { abandonRedis, createRedis } from '../src/queue/connection.ts';
import { OutageLog } from '../src/queue/outage-log.ts';
import { TaskClient } from '../src/tasks/task-client.ts';
import { FIXTURE_TASKS, waitFor } from './support/harness.ts';
import { TestRedisServer } from './support/redis-server.ts';

// Redis going away under a running `taskmaster start`: each test runs the command in a child
// process against a redis-server of its own, which it stops and starts again.

const BIN = fileURLToPath(new URL('../bin/taskmaster.js', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface LogLine {
  level: number;
  pid: number;
  msg: string;
  [k: string]: unknown;
}

/** `taskmaster start` in a child process, with its stderr read as pino JSON lines. */
class Started {
  readonly child: ChildProcess;
  stderr = '';
  readonly exited: Promise<number | null>;
  readonly prefix = `tmtest-${randomBytes(5).toString('hex')}`;

  constructor(readonly redisUrl: string) {
    this.child = spawn(process.execPath, [BIN, 'start'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        REDIS_URL: redisUrl,
        TASKMASTER_PREFIX: this.prefix,
        TASKMASTER_TASKS_DIR: FIXTURE_TASKS,
        TASKMASTER_PORT: '0',
        TASKMASTER_HOST: '127.0.0.1',
        TASKMASTER_WORKERS: '1',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stderr!.on('data', (d) => (this.stderr += d));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  /** The pino lines so far. */
  lines(): LogLine[] {
    return this.raw().flatMap((l) => (l.startsWith('{') ? [JSON.parse(l) as LogLine] : []));
  }

  /** Lines of stderr that are not pino's (a stack trace, ioredis's complaints). */
  foreign(): string[] {
    return this.raw().filter((l) => !l.startsWith('{'));
  }

  private raw(): string[] {
    // The last line may be partly written yet.
    return this.stderr
      .split('\n')
      .slice(0, -1)
      .filter((l) => l.trim());
  }

  with(msg: string | RegExp): LogLine[] {
    return this.lines().filter((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)));
  }

  /** Process ids that logged `msg`. */
  pidsWith(msg: string): Set<number> {
    return new Set(this.with(msg).map((l) => l.pid));
  }

  async started(): Promise<void> {
    await waitFor(
      () => this.with('master started').length > 0 && this.with('workers started').length > 0,
      'taskmaster start to be up',
      60_000,
    );
  }

  /** A client of this instance's queue, closed by `close`. */
  client(): { client: TaskClient; close: () => Promise<void> } {
    const env = { REDIS_URL: this.redisUrl, TASKMASTER_PREFIX: this.prefix, TASKMASTER_TASKS_DIR: FIXTURE_TASKS };
    const config = loadConfig(env);
    const connection = createRedis(this.redisUrl, { name: `${this.prefix}:test` });
    const client = new TaskClient(config, connection);
    return { client, close: async () => (await client.close(), await connection.quit(), undefined) };
  }

  /** Adds a task and waits for it to complete: the workers are up and reach Redis. */
  async runsATask(): Promise<void> {
    const { client, close } = this.client();
    try {
      const [added] = await client.add({ module: 'step', params: [{ name: randomBytes(3).toString('hex') }] });
      const done = async () => (await client.queue().getJobState(added!.id)) === 'completed';
      await waitFor(done, 'a task to complete', 60_000);
    } finally {
      await close();
    }
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** Resolves with the exit code, or rejects when the process has not exited within `ms`. */
function exitWithin(s: Started, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    s.exited.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      const what = `taskmaster did not exit within ${ms} ms of SIGTERM:\n${s.stderr.slice(-3000)}`;
      timer = setTimeout(() => reject(new Error(what)), ms);
    }),
  ]);
}

const UNREACHABLE = 'Redis is unreachable; retrying until it is back';
const STILL = 'Redis is still unreachable; retrying';
const BACK = 'Redis is reachable again';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function ownRedis(): Promise<TestRedisServer> {
  const server = await TestRedisServer.start();
  cleanups.push(() => server.destroy());
  return server;
}

function start(redisUrl: string): Started {
  const s = new Started(redisUrl);
  cleanups.push(() => s.kill());
  return s;
}

describe('a stop while Redis is down', () => {
  it('ends once the run in flight ends, and names the run it could not hand back', async () => {
    const redis = await ownRedis();
    const s = start(redis.url);
    await s.started();

    // A run that ends when the test says so (a file appears), in the worker process.
    const dir = mkdtempSync(join(tmpdir(), 'taskmaster-outage-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const release = join(dir, 'release');
    const { client, close } = s.client();
    const [added] = await client.add({ module: 'wait-file', params: [{ path: release }] });
    await waitFor(async () => (await client.queue().getJobState(added!.id)) === 'active', 'the run to start', 60_000);
    await close();

    await redis.stop();
    s.child.kill('SIGTERM');
    await waitFor(
      () => s.with('stopping: no new jobs, waiting for runs in flight').some((l) => l.running === 1),
      'the worker process to wait for its run',
      30_000,
    );
    writeFileSync(release, '');

    // The hang this guards against is the grace period (30 s) and then a master that never
    // closes: the limit only turns a hang into a failure with the process's log.
    expect(await exitWithin(s, 120_000)).toBe(0);
    const told = s.with(/^Redis is unreachable: stopping without/);
    expect(told.find((l) => l.component === 'worker-process')).toMatchObject({ notHandedBack: [added!.id] });
    // One root in the process (the workers' primary shares the master's connection): said once.
    expect(told.filter((l) => l.component === 'master' || l.component === 'workers')).toHaveLength(1);
    expect(s.stderr).toContain('"msg":"stopped"');
  });
});

/**
 * Stands in for a Redis that refuses connections while counting them: each connection attempt
 * is reset at once (as ECONNRESET), so the test can wait for a number of reconnect attempts.
 */
async function refusingServer(port: number): Promise<{ attempts: () => number; close: () => Promise<void> }> {
  let attempts = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    attempts++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.resetAndDestroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    attempts: () => attempts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('an outage in the log', () => {
  it('is one warning per process when it starts and one line when Redis is back: no stack, no flood', async () => {
    const redis = await ownRedis();
    const s = start(redis.url);
    await s.started();
    await s.runsATask();

    await redis.stop();
    // Kept away for many reconnect attempts, counted where they arrive (first refused, then reset).
    const refusing = await refusingServer(redis.port);
    await waitFor(() => refusing.attempts() >= 60, '60 reconnect attempts', 60_000);
    await refusing.close();
    await redis.start();
    await s.runsATask();

    expect(s.foreign()).toEqual([]);
    expect(s.stderr).not.toContain('Unhandled error event');
    expect(s.lines().filter((l) => l.level >= 50)).toEqual([]);
    expect(s.lines().filter((l) => JSON.stringify(l).includes('"stack"'))).toEqual([]);
    // The primary (master and pool) and the worker process: one story each.
    await waitFor(() => s.pidsWith(BACK).size >= 2, 'both processes to log that Redis is back', 60_000);
    const lines = s.lines();
    expect(s.pidsWith(UNREACHABLE).size).toBe(2);
    for (const pid of s.pidsWith(UNREACHABLE)) {
      const mine = lines.filter((l) => l.pid === pid && l.component === 'redis');
      expect(mine.filter((l) => l.msg === UNREACHABLE)).toHaveLength(1);
      expect(mine.filter((l) => l.msg === BACK)).toHaveLength(1);
      // Only the periodic reminder may come in between (every 30 s).
      expect(mine.filter((l) => ![UNREACHABLE, STILL, BACK].includes(l.msg))).toEqual([]);
    }

    s.child.kill('SIGTERM');
    expect(await exitWithin(s, 120_000)).toBe(0);
  });
});

describe('abandonRedis', () => {
  it('fails at once the commands waiting on a connection and its duplicates between reconnect attempts', async () => {
    // ioredis 5 leaves a connection that is disconnected between two attempts 'reconnecting',
    // with its queued commands pending for good: what made a stop wait forever. closeNow in
    // connection.ts works around it; another major version is to be looked at again.
    const ioredis = JSON.parse(readFileSync(new URL('../node_modules/ioredis/package.json', import.meta.url), 'utf8'));
    expect(ioredis.version).toMatch(/^5\./);
    const redis = await ownRedis();
    const connection = createRedis(redis.url, { name: 'abandon' });
    const duplicate = connection.duplicate();
    cleanups.push(() => connection.disconnect());
    await Promise.all([connection.ping(), duplicate.ping()]);
    await redis.stop();
    const reconnecting = () => connection.status === 'reconnecting' && duplicate.status === 'reconnecting';
    await waitFor(reconnecting, 'both to be reconnecting');
    const answer = (p: Promise<unknown>) =>
      p.then(
        () => 'answered',
        (e: Error) => e.message,
      );
    const pending = [answer(connection.get('k')), answer(duplicate.get('k'))];

    abandonRedis(connection);
    const closed = expect.stringMatching(/Connection is closed/);
    expect(await Promise.all(pending)).toEqual([closed, closed]);
    expect([connection.status, duplicate.status]).toEqual(['end', 'end']);
    // A duplicate made afterwards (BullMQ makes some while closing) does not wait either.
    const late = connection.duplicate();
    expect(await answer(late.get('k'))).toMatch(/Connection is closed/);
  });
});

describe('OutageLog', () => {
  it('tells an outage once: when it starts, and when every connection that failed is back', () => {
    const lines: { level: number; msg: string }[] = [];
    const sink = { write: (l: string) => void lines.push(JSON.parse(l)) };
    const log = pino({ level: 'info', base: null, timestamp: false }, sink);
    const outages = new OutageLog().logTo(log);
    const a = {};
    const b = {};
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    let told = 0;
    outages.whenUnreachable(() => told++);
    for (let i = 0; i < 50; i++) outages.failed(i % 2 ? a : b, refused);
    expect(lines).toMatchObject([{ level: 40, msg: UNREACHABLE, component: 'redis', code: 'ECONNREFUSED' }]);
    expect([outages.unreachable, told]).toEqual([true, 1]);
    outages.ready(a);
    expect(outages.unreachable).toBe(true);
    outages.ready(b);
    expect(lines).toMatchObject([
      { level: 40, msg: UNREACHABLE },
      { level: 30, msg: BACK },
    ]);
    expect(outages.unreachable).toBe(false);
  });

  it('repeats the warning at its interval while no connection is back, and stops when one is', async () => {
    const lines: { msg: string; downForMs?: number }[] = [];
    const sink = { write: (l: string) => void lines.push(JSON.parse(l)) };
    const outages = new OutageLog({ repeatMs: 50 }).logTo(pino({ level: 'info' }, sink));
    const a = {};
    outages.failed(a, Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    await waitFor(() => lines.filter((l) => l.msg === STILL).length >= 2, 'two reminders');
    outages.ready(a);
    const seen = lines.length;
    expect(lines[seen - 1]!.msg).toBe(BACK);
    // A failure after the recovery is a new outage, told anew.
    outages.failed(a, Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    expect(lines.slice(seen).map((l) => l.msg)).toEqual([UNREACHABLE]);
    outages.ready(a);
  });
});
