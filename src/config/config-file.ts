import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { canonicalTz, cronProblem, DEFAULT_TZ } from '../schedules/cron.ts';
import { templateProblem } from '../schedules/templates.ts';
import { readTickersFile, tickersProblem } from '../schedules/tickers.ts';
import { PRIORITY_MAX, PRIORITY_MIN } from '../tasks/priority.ts';
import { MAX_TIMEOUT, moduleNameProblem } from '../tasks/validate.ts';

const priority = z.number().int().min(PRIORITY_MIN).max(PRIORITY_MAX);
// Same range as a task's timeout (tasks/validate.ts).
const timeout = z.number().int().min(1).max(MAX_TIMEOUT);

/**
 * A schedule as written in the file: a cron pattern in a time zone that adds one task per ticker,
 * and optionally a summary task that runs once all of them completed (see schedules/).
 */
const scheduleSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, "_", "." or "-" (1-64 characters)'),
  cron: z.string().min(1),
  /** IANA zone. @defaultValue UTC */
  tz: z.string().min(1).optional(),
  module: z.string().min(1),
  /** The task's params, with placeholders (see schedules/templates.ts). @defaultValue [] */
  params: z.array(z.unknown()).optional(),
  tickers: z.array(z.string().min(1)).optional(),
  /** One ticker per line, `#` comments; relative to the config file's folder. */
  tickersFile: z.string().min(1).optional(),
  /** @defaultValue the configured default priority */
  priority: priority.optional(),
  /** ms. @defaultValue the configured default timeout */
  timeout: timeout.optional(),
  summary: z
    .strictObject({
      module: z.string().min(1),
      params: z.array(z.unknown()).optional(),
      /** @defaultValue the schedule's */
      priority: priority.optional(),
      /** @defaultValue the schedule's */
      timeout: timeout.optional(),
    })
    .optional(),
});

const fileSchema = z.strictObject({
  defaults: z
    .strictObject({
      priority: priority.optional(),
      // Same ranges as the TASKMASTER_* variables in config.ts.
      timeout: timeout.optional(),
      attempts: z.number().int().min(1).max(1000).optional(),
      backoffMs: z.number().int().min(0).max(86_400_000).optional(),
      maxBatch: z.number().int().min(1).max(1_000_000).optional(),
      maxPayloadBytes: z
        .number()
        .int()
        .min(1024)
        .max(512 * 1024 * 1024)
        .optional(),
      keepCompleted: z.number().int().min(0).max(10_000_000).optional(),
      keepFailed: z.number().int().min(0).max(10_000_000).optional(),
    })
    .optional(),
  schedules: z.array(scheduleSchema).optional(),
});

/** A schedule checked and resolved: its zone named canonically, its tickers read, its templates in place. */
export interface ScheduleConfig {
  name: string;
  cron: string;
  tz: string;
  module: string;
  params: unknown[];
  tickers: string[];
  /** Absolute path of the file the tickers were read from, when they came from one. */
  tickersFile?: string;
  priority?: number;
  timeout?: number;
  summary?: { module: string; params: unknown[]; priority?: number; timeout?: number };
}

export type ConfigFile = Omit<z.infer<typeof fileSchema>, 'schedules'> & { schedules?: ScheduleConfig[] };

/**
 * Parses the optional JSON config file; a problem names the file and the setting's path (for a
 * schedule, its name and the field). `dir` is where a schedule's `tickersFile` is looked for
 * (default: the config file's folder).
 */
export function parseConfigFile(text: string, path: string, dir = dirname(resolve(path))): ConfigFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`TASKMASTER_CONFIG: ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`TASKMASTER_CONFIG: ${path}: ${where(json, issue.path)}: ${issue.message}`);
  }
  const { schedules, ...rest } = parsed.data;
  if (!schedules) return rest;
  const names = new Map<string, number>();
  const resolved = schedules.map((s, i) => {
    const fail = (field: string, message: string): never => {
      throw new ConfigError(
        `TASKMASTER_CONFIG: ${path}: ${where(json, ['schedules', i, ...field.split('.')])}: ${message}`,
      );
    };
    const other = names.get(s.name);
    if (other !== undefined) fail('name', `is also the name of schedules[${other}]; names must be unique`);
    names.set(s.name, i);
    return resolveSchedule(s, dir, fail);
  });
  return { ...rest, schedules: resolved };
}

/**
 * Where a problem is: its path in the file, and for a field of a named schedule, that name
 * (`schedules.0.tz: schedule "close"`).
 */
function where(json: unknown, path: readonly PropertyKey[]): string {
  if (!path.length) return '(top level)';
  const at = path.map(String).join('.');
  if (path[0] === 'schedules' && typeof path[1] === 'number' && path.length > 2 && path[2] !== 'name') {
    const name = (json as { schedules: { name?: unknown }[] }).schedules[path[1]]?.name;
    if (typeof name === 'string') return `${at}: schedule ${JSON.stringify(name)}`;
  }
  return at;
}

type RawSchedule = z.infer<typeof scheduleSchema>;

function resolveSchedule(s: RawSchedule, dir: string, fail: (field: string, message: string) => never): ScheduleConfig {
  const zone = canonicalTz(s.tz ?? DEFAULT_TZ);
  if ('problem' in zone) return fail('tz', zone.problem);
  const cron = cronProblem(s.cron, zone.tz);
  if (cron) fail('cron', cron);
  const moduleProblem = moduleNameProblem(s.module);
  if (moduleProblem) fail('module', moduleProblem);
  const params = s.params ?? [];
  const paramsProblem = templateProblem(params, true);
  if (paramsProblem) fail('params', paramsProblem.replace(/^params: /, ''));

  const out: ScheduleConfig = { name: s.name, cron: s.cron.trim(), tz: zone.tz, module: s.module, params, tickers: [] };
  if ((s.tickers === undefined) === (s.tickersFile === undefined)) {
    fail(
      'tickers',
      'give either "tickers" (an array) or "tickersFile" (a file with one ticker per line), not both or neither',
    );
  }
  if (s.tickers) {
    const problem = tickersProblem(s.tickers, (i) => `tickers[${i}]`);
    if (problem) fail('tickers', problem);
    out.tickers = s.tickers;
  } else {
    const file = resolve(dir, s.tickersFile!);
    let read: ReturnType<typeof readTickersFile>;
    try {
      read = readTickersFile(file);
    } catch (err) {
      return fail('tickersFile', `cannot read ${file}: ${(err as Error).message}`);
    }
    const problem = tickersProblem(read.tickers, (i) => `line ${read.lines[i]}`);
    if (problem) fail('tickersFile', `${file}: ${problem}`);
    out.tickers = read.tickers;
    out.tickersFile = file;
  }
  if (s.priority !== undefined) out.priority = s.priority;
  if (s.timeout !== undefined) out.timeout = s.timeout;
  if (s.summary) {
    const summaryModule = moduleNameProblem(s.summary.module);
    if (summaryModule) fail('summary.module', summaryModule);
    const summaryParams = s.summary.params ?? [];
    const problem = templateProblem(summaryParams, false, 'summary.params');
    if (problem) fail(problem.slice(0, problem.indexOf(':')), problem.slice(problem.indexOf(':') + 2));
    out.summary = { module: s.summary.module, params: summaryParams };
    if (s.summary.priority !== undefined) out.summary.priority = s.summary.priority;
    if (s.summary.timeout !== undefined) out.summary.timeout = s.summary.timeout;
  }
  return out;
}
