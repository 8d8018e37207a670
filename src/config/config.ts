import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { ConfigError } from '../errors.ts';
import { hashTagOf, QUEUE_NAME, QUEUE_NAME_RULE } from '../queue/keys.ts';
import { CLUSTER_SCHEMES, CLUSTER_URL_FORM, isClusterUrl, parseClusterUrl } from '../queue/redis-url.ts';
import { PRIORITY_MAX, PRIORITY_MIN } from '../tasks/priority.ts';
import { parseConfigFile, type ConfigFile, type ScheduleConfig } from './config-file.ts';

/** How many times a task runs before it fails for good, and how long between tries. */
export interface RetryPolicy {
  /** @defaultValue 3 */
  attempts: number;
  /** Exponential back-off base in ms. @defaultValue 1000 */
  backoffMs: number;
}

/** Limits applied to every batch, whatever the edge it came in by. */
export interface Limits {
  /** Tasks in one batch. @defaultValue 10000 */
  maxBatch: number;
  /** Bytes of one batch as JSON. @defaultValue 16 MiB */
  maxPayloadBytes: number;
}

/** Thresholds of the status page's alerts. */
export interface AlertThresholds {
  /** Share of finished runs that failed over `failureWindowMs`, from 0 to 1. @defaultValue 0.25 */
  failureRate: number;
  /** @defaultValue 15 minutes */
  failureWindowMs: number;
  /** Age of the oldest waiting task. @defaultValue 10 minutes */
  waitingAgeMs: number;
}

/** The resolved configuration: built once at start, frozen, passed to every component. */
export interface Config {
  /** One server, or a Redis Cluster URL (see queue/redis-url.ts). @defaultValue redis://127.0.0.1:6379 */
  redisUrl: string;
  /** Whether REDIS_URL was given (if not, `start` may run a private redis-server). */
  redisUrlExplicit: boolean;
  /** Unset: no archive. */
  mongoUrl?: string;
  /** @defaultValue 3232 */
  port: number;
  /** Interface to listen on. @defaultValue 0.0.0.0 (all), as the 2015 master did */
  host: string;
  token?: string;
  feederToken?: string;
  runnerToken?: string;
  /** Absolute path. @defaultValue ./tasks */
  tasksDir: string;
  /** @defaultValue tasks */
  queue: string;
  /** @defaultValue taskmaster */
  prefix: string;
  /** @defaultValue number of CPU cores */
  workers: number;
  /** @defaultValue 1 */
  concurrency: number;
  /** @defaultValue info */
  logLevel: string;
  /** Task defaults applied when a task does not say. */
  defaults: { priority: number; timeout: number };
  retry: RetryPolicy;
  limits: Limits;
  /** Finished jobs kept in Redis (the most recent, by count), after archiving when there is an archive. */
  keep: { completed: number; failed: number };
  /** Jobs per archive write. @defaultValue 500 */
  archiveBatch: number;
  /**
   * How long (ms) an identity's record (completed, failed for good) stays in Redis after its task
   * finished; undefined keeps records forever. @defaultValue 7 days
   */
  identityRetentionMs?: number;
  /**
   * How long after a task completed an identical task is still answered as a duplicate of it
   * (so re-sending a batch after a reconnect runs nothing twice); undefined: for as long as the
   * identity's record is kept. @defaultValue 15 minutes
   */
  dedupWindowMs?: number;
  /** When the status page raises an alert. */
  alerts: AlertThresholds;
  /** Folder for a private redis-server's data. @defaultValue ./.taskmaster/redis */
  dataDir: string;
  schedules: readonly ScheduleConfig[];
  /** Path of the config file that was read, if any. */
  configFile?: string;
}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function bad(name: string, allowed: string, got: string): never {
  throw new ConfigError(`${name} must be ${allowed}, got ${JSON.stringify(got)}`);
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    bad(name, `an integer from ${min} to ${max}`, raw);
  }
  return n;
}

function fraction(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!/^\d*\.?\d+$/.test(raw.trim()) || n > 1) bad(name, 'a number from 0 to 1 (e.g. 0.25)', raw);
  return n;
}

const UNITS: Record<string, number> = { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 };

/** A duration such as `500ms`, `90s`, `15m`, `6h` or `7d`, in ms; `forever` gives undefined. */
function duration(env: Env, name: string, fallbackMs: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallbackMs;
  if (raw.trim() === 'forever') return undefined;
  const m = /^(\d{1,9})(ms|s|m|h|d)$/.exec(raw.trim());
  const ms = m ? Number(m[1]) * UNITS[m[2]!]! : NaN;
  if (!m || ms < 1 || !Number.isSafeInteger(ms)) {
    bad(name, 'a duration: a whole number with a unit ms, s, m, h or d (e.g. 7d), or "forever"', raw);
  }
  return ms;
}

function url(env: Env, name: string, schemes: string[]): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    bad(name, `a URL starting with ${schemes.join(' or ')}`, redactUrl(raw));
  }
  if (!schemes.includes(parsed.protocol.replace(/:$/, '') + '://')) {
    bad(name, `a URL starting with ${schemes.join(' or ')}`, redactUrl(raw));
  }
  return raw;
}

/**
 * REDIS_URL: one server, or Redis Cluster's nodes. BullMQ's scripts take all of a queue's keys at
 * once and a cluster runs a script only on keys of one slot, so a cluster needs a hash-tagged prefix.
 */
function redisUrl(env: Env, prefix: string): string | undefined {
  const raw = str(env, 'REDIS_URL');
  if (raw === undefined || !isClusterUrl(raw)) {
    return url(env, 'REDIS_URL', ['redis://', 'rediss://', ...CLUSTER_SCHEMES]);
  }
  try {
    parseClusterUrl(raw);
  } catch (err) {
    bad('REDIS_URL', `a cluster URL ${CLUSTER_URL_FORM}: ${(err as Error).message}`, redactUrl(raw));
  }
  if (!hashTagOf(prefix)) {
    throw new ConfigError(
      `TASKMASTER_PREFIX must hold a hash tag such as {taskmaster} on Redis Cluster (REDIS_URL is a cluster URL), ` +
        `got ${JSON.stringify(prefix)}: BullMQ runs scripts over all of a queue's keys at once, which Redis Cluster ` +
        'allows only for keys in one slot, and a {tag} in the prefix puts every key in the slot of the tag',
    );
  }
  return raw;
}

function str(env: Env, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : raw;
}

/** Hides the password of a connection URL, for logs and error messages. */
export function redactUrl(raw: string): string {
  const at = raw.lastIndexOf('@');
  if (at < 0) return raw;
  // Credentials run from after the scheme to the last "@" (as the WHATWG URL parser reads them)
  // and may hold "/", "@" or ":" when they were not percent-encoded; the scheme may be missing.
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:(?:\/\/)?/.exec(raw)?.[0] ?? '';
  const userinfo = raw.slice(scheme.length, at);
  const colon = userinfo.indexOf(':');
  return `${scheme}${colon < 0 ? '' : userinfo.slice(0, colon + 1)}***${raw.slice(at)}`;
}

/**
 * Reads the environment (and the optional config file it names) once, checks every value
 * and returns a frozen object. A bad value throws a ConfigError naming the setting.
 */
export function loadConfig(env: Env = process.env, cwd = process.cwd()): Config {
  const configPath = str(env, 'TASKMASTER_CONFIG');
  let file: ConfigFile = {};
  if (configPath) {
    let text: string;
    try {
      text = readFileSync(resolve(cwd, configPath), 'utf8');
    } catch (err) {
      throw new ConfigError(`TASKMASTER_CONFIG: cannot read ${configPath}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    // A schedule's tickersFile is relative to the config file's folder.
    file = parseConfigFile(text, configPath, dirname(resolve(cwd, configPath)));
  }
  const fd = file.defaults ?? {};

  const queue = str(env, 'TASKMASTER_QUEUE') ?? 'tasks';
  if (!QUEUE_NAME.test(queue)) bad('TASKMASTER_QUEUE', QUEUE_NAME_RULE, queue);
  const prefix = str(env, 'TASKMASTER_PREFIX') ?? 'taskmaster';
  if (!/^[A-Za-z0-9_{}.-]{1,64}$/.test(prefix)) {
    bad('TASKMASTER_PREFIX', 'letters, digits, "_", ".", "-", "{" or "}" (1-64 characters)', prefix);
  }
  const logLevel = (str(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) bad('LOG_LEVEL', `one of ${LOG_LEVELS.join(', ')}`, logLevel);

  const redis = redisUrl(env, prefix);
  const config: Config = {
    redisUrl: redis ?? 'redis://127.0.0.1:6379',
    redisUrlExplicit: redis !== undefined,
    mongoUrl: url(env, 'MONGO_URL', ['mongodb://', 'mongodb+srv://']),
    port: int(env, 'TASKMASTER_PORT', 3232, 0, 65535),
    host: str(env, 'TASKMASTER_HOST') ?? '0.0.0.0',
    token: str(env, 'TASKMASTER_TOKEN'),
    feederToken: str(env, 'TASKMASTER_FEEDER_TOKEN'),
    runnerToken: str(env, 'TASKMASTER_RUNNER_TOKEN'),
    tasksDir: resolve(cwd, str(env, 'TASKMASTER_TASKS_DIR') ?? './tasks'),
    queue,
    prefix,
    workers: int(env, 'TASKMASTER_WORKERS', availableParallelism(), 0, 1024),
    concurrency: int(env, 'TASKMASTER_CONCURRENCY', 1, 1, 10000),
    logLevel,
    defaults: {
      priority: int(env, 'TASKMASTER_DEFAULT_PRIORITY', fd.priority ?? 50, PRIORITY_MIN, PRIORITY_MAX),
      timeout: int(env, 'TASKMASTER_DEFAULT_TIMEOUT', fd.timeout ?? 300_000, 1, 2_147_483_647),
    },
    retry: {
      attempts: int(env, 'TASKMASTER_ATTEMPTS', fd.attempts ?? 3, 1, 1000),
      backoffMs: int(env, 'TASKMASTER_BACKOFF_MS', fd.backoffMs ?? 1000, 0, 86_400_000),
    },
    limits: {
      maxBatch: int(env, 'TASKMASTER_MAX_BATCH', fd.maxBatch ?? 10_000, 1, 1_000_000),
      maxPayloadBytes: int(
        env,
        'TASKMASTER_MAX_PAYLOAD_BYTES',
        fd.maxPayloadBytes ?? 16 * 1024 * 1024,
        1024,
        512 * 1024 * 1024,
      ),
    },
    keep: {
      completed: int(env, 'TASKMASTER_KEEP_COMPLETED', fd.keepCompleted ?? 10_000, 0, 10_000_000),
      failed: int(env, 'TASKMASTER_KEEP_FAILED', fd.keepFailed ?? 50_000, 0, 10_000_000),
    },
    archiveBatch: int(env, 'TASKMASTER_ARCHIVE_BATCH', 500, 1, 10_000),
    identityRetentionMs: duration(env, 'TASKMASTER_IDENTITY_RETENTION', 7 * 86_400_000),
    dedupWindowMs: duration(env, 'TASKMASTER_DEDUP_WINDOW', 15 * 60_000),
    alerts: {
      failureRate: fraction(env, 'TASKMASTER_ALERT_FAILURE_RATE', 0.25),
      failureWindowMs: duration(env, 'TASKMASTER_ALERT_FAILURE_WINDOW', 15 * 60_000) ?? Number.MAX_SAFE_INTEGER,
      waitingAgeMs: duration(env, 'TASKMASTER_ALERT_WAITING_AGE', 10 * 60_000) ?? Number.MAX_SAFE_INTEGER,
    },
    dataDir: resolve(cwd, str(env, 'TASKMASTER_DATA_DIR') ?? './.taskmaster'),
    schedules: Object.freeze(file.schedules ?? []),
    configFile: configPath,
  };
  return deepFreeze(config);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
