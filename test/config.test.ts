import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { ConfigError } from '../src/errors.ts';

/** Runs loadConfig expecting a ConfigError and returns it. */
function configError(env: Record<string, string>, cwd = '/srv/app'): ConfigError {
  let thrown: unknown;
  try {
    loadConfig(env, cwd);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected loadConfig to throw').toBeInstanceOf(ConfigError);
  expect((thrown as ConfigError).code).toBe('CONFIG_INVALID');
  return thrown as ConfigError;
}

describe('loadConfig: defaults', () => {
  it('resolves every setting from an empty environment, without reading process.env', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c).toEqual({
      redisUrl: 'redis://127.0.0.1:6379',
      redisUrlExplicit: false,
      mongoUrl: undefined,
      port: 3232,
      host: '0.0.0.0',
      token: undefined,
      feederToken: undefined,
      runnerToken: undefined,
      tasksDir: resolve('/srv/app', 'tasks'),
      queue: 'tasks',
      prefix: 'taskmaster',
      workers: availableParallelism(),
      concurrency: 1,
      logLevel: 'info',
      defaults: { priority: 50, timeout: 300_000 },
      retry: { attempts: 3, backoffMs: 1000 },
      limits: { maxBatch: 10_000, maxPayloadBytes: 16 * 1024 * 1024 },
      keep: { completed: 10_000, failed: 50_000 },
      identityRetentionMs: 7 * 86_400_000,
      dedupWindowMs: 15 * 60_000,
      alerts: { failureRate: 0.25, failureWindowMs: 15 * 60_000, waitingAgeMs: 10 * 60_000 },
      archiveBatch: 500,
      dataDir: resolve('/srv/app', '.taskmaster'),
      schedules: [],
      configFile: undefined,
    });
  });

  it('treats empty variables as unset', () => {
    const c = loadConfig(
      { REDIS_URL: '', TASKMASTER_PORT: '', LOG_LEVEL: '', TASKMASTER_QUEUE: '', MONGO_URL: '' },
      '/srv/app',
    );
    expect(c).toMatchObject({
      redisUrl: 'redis://127.0.0.1:6379',
      redisUrlExplicit: false,
      port: 3232,
      logLevel: 'info',
      queue: 'tasks',
    });
    expect(c.mongoUrl).toBeUndefined();
  });

  it('takes good values from the environment', () => {
    const c = loadConfig(
      {
        REDIS_URL: 'rediss://:pw@redis.example:6380/2',
        MONGO_URL: 'mongodb+srv://u:p@cluster0.example.net/tm',
        TASKMASTER_PORT: '0',
        TASKMASTER_TOKEN: 't0ken',
        TASKMASTER_TASKS_DIR: 'jobs',
        TASKMASTER_QUEUE: 'gpu.jobs-1',
        TASKMASTER_PREFIX: '{taskmaster}',
        TASKMASTER_WORKERS: '0',
        TASKMASTER_CONCURRENCY: '8',
        LOG_LEVEL: 'DEBUG',
        TASKMASTER_DEFAULT_PRIORITY: '-5',
        TASKMASTER_DEFAULT_TIMEOUT: '2147483647',
      },
      '/srv/app',
    );
    expect(c).toMatchObject({
      redisUrl: 'rediss://:pw@redis.example:6380/2',
      redisUrlExplicit: true,
      mongoUrl: 'mongodb+srv://u:p@cluster0.example.net/tm',
      port: 0,
      token: 't0ken',
      tasksDir: '/srv/app/jobs',
      queue: 'gpu.jobs-1',
      prefix: '{taskmaster}',
      workers: 0,
      concurrency: 8,
      logLevel: 'debug',
      defaults: { priority: -5, timeout: 2_147_483_647 },
    });
  });
});

/** [variable, bad value, fragment of what is allowed] */
const BAD_ENV: [string, string, RegExp][] = [
  ['REDIS_URL', 'http://127.0.0.1:6379', /a URL starting with redis:\/\/ or rediss:\/\//],
  ['REDIS_URL', 'localhost:6379', /a URL starting with redis:\/\/ or rediss:\/\//],
  ['REDIS_URL', 'not a url', /a URL starting with redis:\/\//],
  ['REDIS_URL', 'redis://localhost:port', /a URL starting with redis:\/\//],
  ['REDIS_URL', 'mongodb://localhost', /a URL starting with redis:\/\//],
  ['MONGO_URL', 'http://localhost:27017', /a URL starting with mongodb:\/\/ or mongodb\+srv:\/\//],
  ['MONGO_URL', 'mongo://localhost/tm', /a URL starting with mongodb:\/\//],
  ['MONGO_URL', 'localhost:27017', /a URL starting with mongodb:\/\//],
  ['MONGO_URL', 'not a url', /a URL starting with mongodb:\/\//],
  ['TASKMASTER_PORT', 'abc', /an integer from 0 to 65535/],
  ['TASKMASTER_PORT', '70000', /an integer from 0 to 65535/],
  ['TASKMASTER_PORT', '-1', /an integer from 0 to 65535/],
  ['TASKMASTER_PORT', '80.5', /an integer from 0 to 65535/],
  ['TASKMASTER_PORT', '1e3', /an integer from 0 to 65535/],
  ['TASKMASTER_PORT', '0x50', /an integer from 0 to 65535/],
  ['TASKMASTER_PORT', '3232abc', /an integer from 0 to 65535/],
  ['TASKMASTER_WORKERS', '-1', /an integer from 0 to 1024/],
  ['TASKMASTER_WORKERS', 'all', /an integer from 0 to 1024/],
  ['TASKMASTER_WORKERS', '100000', /an integer from 0 to 1024/],
  ['TASKMASTER_CONCURRENCY', '0', /an integer from 1 to 10000/],
  ['TASKMASTER_CONCURRENCY', '1.5', /an integer from 1 to 10000/],
  ['TASKMASTER_QUEUE', 'a:b', /letters, digits, "_", "\." or "-" \(1-64 characters\)/],
  ['TASKMASTER_QUEUE', 'my tasks', /letters, digits/],
  ['TASKMASTER_QUEUE', 'q'.repeat(65), /1-64 characters/],
  ['TASKMASTER_PREFIX', 'task master', /letters, digits, "_", "\.", "-", "\{" or "\}" \(1-64 characters\)/],
  ['TASKMASTER_PREFIX', 'tm:prod', /letters, digits/],
  ['LOG_LEVEL', 'bogus', /one of fatal, error, warn, info, debug, trace, silent/],
  ['LOG_LEVEL', 'verbose', /one of fatal, error, warn, info, debug, trace, silent/],
  ['TASKMASTER_DEFAULT_PRIORITY', '2000000', /an integer from -1000000 to 1000000/],
  ['TASKMASTER_DEFAULT_PRIORITY', 'high', /an integer from -1000000 to 1000000/],
  ['TASKMASTER_DEFAULT_TIMEOUT', '0', /an integer from 1 to 2147483647/],
  ['TASKMASTER_DEFAULT_TIMEOUT', '2147483648', /an integer from 1 to 2147483647/],
  ['TASKMASTER_ATTEMPTS', '0', /an integer from 1 to 1000/],
  ['TASKMASTER_BACKOFF_MS', '-5', /an integer from 0 to 86400000/],
  ['TASKMASTER_MAX_BATCH', '0', /an integer from 1 to 1000000/],
  ['TASKMASTER_MAX_PAYLOAD_BYTES', '10', /an integer from 1024 to/],
  ['TASKMASTER_KEEP_COMPLETED', '-1', /an integer from 0 to 10000000/],
  ['TASKMASTER_KEEP_FAILED', 'lots', /an integer from 0 to 10000000/],
  ['TASKMASTER_ARCHIVE_BATCH', '0', /an integer from 1 to 10000/],
  ['TASKMASTER_ARCHIVE_BATCH', 'all', /an integer from 1 to 10000/],
  ['TASKMASTER_DEDUP_WINDOW', '15', /a duration: a whole number with a unit/],
  ['TASKMASTER_DEDUP_WINDOW', 'always', /or "forever"/],
  ['TASKMASTER_ALERT_FAILURE_RATE', '1.5', /a number from 0 to 1/],
  ['TASKMASTER_ALERT_FAILURE_RATE', '-0.1', /a number from 0 to 1/],
  ['TASKMASTER_ALERT_FAILURE_RATE', '25%', /a number from 0 to 1/],
  ['TASKMASTER_ALERT_WAITING_AGE', '10 minutes', /a duration/],
];

describe('loadConfig: bad environment values', () => {
  it.each(BAD_ENV)('%s=%s names the variable and what is allowed', (name, value, allowed) => {
    const err = configError({ [name]: value });
    expect(err.message.startsWith(`${name} must be `)).toBe(true);
    expect(err.message).toMatch(allowed);
    // The value is echoed so the user sees what was read (these carry no password).
    expect(err.message).toContain(JSON.stringify(value));
  });
});

/** [variable, value, secret fragments that must not appear in the message] */
const SECRET_URLS: [string, string, string[]][] = [
  ['REDIS_URL', 'http://default:hunter2secret@redis.internal:6379', ['hunter2secret']],
  ['REDIS_URL', 'redis://default:hunter2secret@redis.internal:notaport', ['hunter2secret']],
  ['REDIS_URL', 'http://:hunter2secret@redis.internal:6379', ['hunter2secret']],
  // Generated passwords (base64) often contain "/", "+" and "=".
  ['REDIS_URL', 'redis://default:hunter2/Xy+z9==@redis.internal:6379', ['hunter2', 'Xy+z9']],
  // An unencoded "@" in the password: the URL parser takes the last "@".
  ['REDIS_URL', 'http://default:hunter2@s3cret@redis.internal:6379', ['hunter2', 's3cret']],
  // Scheme forgotten, as copied from a provider's console.
  ['REDIS_URL', 'default:hunter2secret@redis.internal:6379', ['hunter2secret']],
  ['MONGO_URL', 'http://admin:hunter2secret@mongo.internal/tm', ['hunter2secret']],
  ['MONGO_URL', 'mongodb://admin:hunter2/Xy+z9==@mongo.internal:port/tm', ['hunter2', 'Xy+z9']],
];

describe('loadConfig: credentials stay out of error messages', () => {
  it.each(SECRET_URLS)('%s=%s', (name, value, secrets) => {
    const err = configError({ [name]: value });
    expect(err.message.startsWith(`${name} must be `)).toBe(true);
    for (const secret of secrets) expect(err.message).not.toContain(secret);
    expect(err.message).toContain('***');
  });
});

describe('loadConfig: frozen result', () => {
  it('is frozen at every depth', () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskmaster-config-'));
    try {
      writeFileSync(
        join(dir, 'tm.json'),
        JSON.stringify({
          schedules: [
            {
              name: 'daily',
              cron: '0 6 * * *',
              module: 'analyse',
              params: [{ deep: { x: 1 } }],
              tickers: ['A'],
              summary: { module: 'sum' },
            },
          ],
        }),
      );
      const c = loadConfig({ TASKMASTER_CONFIG: 'tm.json' }, dir);
      const s = c.schedules[0]!;
      for (const obj of [
        c,
        c.defaults,
        c.retry,
        c.limits,
        c.keep,
        c.schedules,
        s,
        s.params,
        s.params![0],
        s.tickers,
        s.summary,
      ]) {
        expect(Object.isFrozen(obj)).toBe(true);
      }
      expect(() => {
        (c as { port: number }).port = 1;
      }).toThrow(TypeError);
      expect(() => {
        (c.defaults as { priority: number }).priority = 1;
      }).toThrow(TypeError);
      expect(() => {
        (c.schedules as unknown[]).push({});
      }).toThrow(TypeError);
      expect(() => {
        ((s.params![0] as { deep: { x: number } }).deep as { x: number }).x = 2;
      }).toThrow(TypeError);
      expect(c.port).toBe(3232);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('loadConfig: config file', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'taskmaster-config-'));
    mkdirSync(join(dir, 'conf'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function write(text: string, name = 'conf/tm.json'): string {
    writeFileSync(join(dir, name), text);
    return name;
  }

  it('applies defaults and schedules from the file; the environment wins over it', () => {
    const schedule = {
      name: 'close.us',
      cron: '30 16 * * 1-5',
      tz: 'America/New_York',
      module: 'analyse',
      params: [{ depth: 2 }],
      tickers: ['AAPL', 'MSFT'],
      priority: 80,
      summary: { module: 'summarise', params: [] },
    };
    const path = write(
      JSON.stringify({
        defaults: {
          priority: 70,
          timeout: 60_000,
          attempts: 5,
          backoffMs: 10,
          maxBatch: 20,
          maxPayloadBytes: 2048,
          keepCompleted: 1,
          keepFailed: 2,
        },
        schedules: [schedule],
      }),
    );
    const c = loadConfig({ TASKMASTER_CONFIG: path }, dir);
    expect(c.configFile).toBe(path);
    expect(c.defaults).toEqual({ priority: 70, timeout: 60_000 });
    expect(c.retry).toEqual({ attempts: 5, backoffMs: 10 });
    expect(c.limits).toEqual({ maxBatch: 20, maxPayloadBytes: 2048 });
    expect(c.keep).toEqual({ completed: 1, failed: 2 });
    expect(c.schedules).toEqual([schedule]);

    const overridden = loadConfig(
      { TASKMASTER_CONFIG: path, TASKMASTER_DEFAULT_PRIORITY: '10', TASKMASTER_ATTEMPTS: '1' },
      dir,
    );
    expect(overridden.defaults).toEqual({ priority: 10, timeout: 60_000 });
    expect(overridden.retry.attempts).toBe(1);
  });

  it('keeps built-in defaults for what the file leaves out', () => {
    const path = write('{"defaults": {"timeout": 1000}}');
    const c = loadConfig({ TASKMASTER_CONFIG: path }, dir);
    expect(c.defaults).toEqual({ priority: 50, timeout: 1000 });
    expect(c.retry).toEqual({ attempts: 3, backoffMs: 1000 });
    expect(c.schedules).toEqual([]);
    expect(loadConfig({ TASKMASTER_CONFIG: write('{}') }, dir).defaults).toEqual({ priority: 50, timeout: 300_000 });
  });

  it('reads the file relative to the working directory, or by absolute path', () => {
    write('{"defaults": {"priority": 61}}');
    expect(loadConfig({ TASKMASTER_CONFIG: 'conf/tm.json' }, dir).defaults.priority).toBe(61);
    expect(loadConfig({ TASKMASTER_CONFIG: join(dir, 'conf/tm.json') }, '/').defaults.priority).toBe(61);
  });

  it('a missing file names the variable and the file', () => {
    const err = configError({ TASKMASTER_CONFIG: 'conf/missing.json' }, dir);
    expect(err.message).toMatch(/^TASKMASTER_CONFIG: cannot read conf\/missing\.json: .*ENOENT/);
    expect(err.cause).toBeInstanceOf(Error);
  });

  /** [what, file text, path named in the message, fragment of the message] */
  const BAD_FILES: [string, string, string, RegExp][] = [
    ['invalid JSON', '{"defaults": {"priority": 70,}}', '', /is not valid JSON/],
    ['an empty file', '', '', /is not valid JSON/],
    ['a JSON array', '[]', '(top level)', /expected object/],
    ['an unknown top-level key', '{"schedule": []}', '(top level)', /Unrecognized key: "schedule"/],
    ['an unknown key in defaults', '{"defaults": {"priorty": 70}}', 'defaults', /Unrecognized key: "priorty"/],
    ['a string priority', '{"defaults": {"priority": "high"}}', 'defaults.priority', /expected number/],
    ['a float priority', '{"defaults": {"priority": 50.5}}', 'defaults.priority', /expected int/],
    ['an out-of-range priority', '{"defaults": {"priority": 1000001}}', 'defaults.priority', /1000000/],
    ['a zero timeout', '{"defaults": {"timeout": 0}}', 'defaults.timeout', /expected number to be (>0|>=1)/],
    // A task timeout is at most 2^31-1 ms (TASKMASTER_DEFAULT_TIMEOUT and tasks are held to it).
    ['a timeout above 2^31-1', '{"defaults": {"timeout": 2147483648}}', 'defaults.timeout', /2147483647/],
    ['a tiny payload limit', '{"defaults": {"maxPayloadBytes": 10}}', 'defaults.maxPayloadBytes', /1024/],
    ['zero attempts', '{"defaults": {"attempts": 0}}', 'defaults.attempts', />=1/],
    ['schedules not an array', '{"schedules": {"daily": {}}}', 'schedules', /expected array/],
    [
      'a schedule without module',
      '{"schedules": [{"name": "a", "cron": "* * * * *", "module": "m"}, {"name": "b", "cron": "* * * * *"}]}',
      'schedules.1.module',
      /expected string/,
    ],
    [
      'a schedule name with a space',
      '{"schedules": [{"name": "daily run", "cron": "0 6 * * *", "module": "m"}]}',
      'schedules.0.name',
      /letters, digits, "_", "\." or "-" \(1-64 characters\)/,
    ],
    [
      'a schedule with an unknown key',
      '{"schedules": [{"name": "a", "crontab": "0 6 * * *", "cron": "0 6 * * *", "module": "m"}]}',
      'schedules.0',
      /Unrecognized key: "crontab"/,
    ],
    [
      'a schedule with an empty cron',
      '{"schedules": [{"name": "a", "cron": "", "module": "m"}]}',
      'schedules.0.cron',
      />=1 characters/,
    ],
    [
      'a schedule with a float priority',
      '{"schedules": [{"name": "a", "cron": "0 6 * * *", "module": "m", "priority": 1.5}]}',
      'schedules.0.priority',
      /expected int/,
    ],
    [
      'a schedule with params not an array',
      '{"schedules": [{"name": "a", "cron": "0 6 * * *", "module": "m", "params": {"x": 1}}]}',
      'schedules.0.params',
      /expected array/,
    ],
    [
      'a schedule with an empty ticker',
      '{"schedules": [{"name": "a", "cron": "0 6 * * *", "module": "m", "tickers": ["A", ""]}]}',
      'schedules.0.tickers.1',
      />=1 characters/,
    ],
    [
      'a summary with an unknown key',
      '{"schedules": [{"name": "a", "cron": "0 6 * * *", "module": "m", "summary": {"module": "s", "x": 1}}]}',
      'schedules.0.summary',
      /Unrecognized key: "x"/,
    ],
  ];

  it.each(BAD_FILES)('%s names the file and the path', (_what, text, where, fragment) => {
    const path = write(text);
    const err = configError({ TASKMASTER_CONFIG: path }, dir);
    expect(err.message.startsWith(`TASKMASTER_CONFIG: ${path}`)).toBe(true);
    if (where) expect(err.message).toContain(`${path}: ${where}: `);
    expect(err.message).toMatch(fragment);
  });
});
