import { TaskmasterError } from '../errors.ts';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../queue/keys.ts';

/** A history query parameter that is not allowed; the HTTP API answers it with 400. */
export class InvalidQueryError extends TaskmasterError {
  override readonly code = 'INVALID_QUERY';
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(`${param}: ${message}`);
  }
}

/** Every state a task can be in: live ones in Redis, finished ones in Redis or the archive. */
export const TASK_STATUSES = [
  'waiting',
  'prioritized',
  'delayed',
  'waiting-children',
  'active',
  'completed',
  'failed',
  'cancelled',
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
export const FINISHED_STATUSES = ['completed', 'failed', 'cancelled'] as const;

export interface HistoryQuery {
  queue: string;
  module?: string;
  statuses?: TaskStatus[];
  since?: Date;
  until?: Date;
  limit: number;
}

const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,199}$/;
export const HISTORY_LIMIT_MAX = 1000;
const KNOWN = ['queue', 'module', 'status', 'since', 'until', 'limit'];

/**
 * A time: ISO 8601 (`2026-11-28`, `2026-11-28T10:00:00Z`), unix milliseconds, or a duration
 * back from now (`90s`, `15m`, `6h`, `7d`).
 */
export function parseTime(param: string, text: string, now = Date.now()): Date {
  const ago = /^(\d{1,9})(s|m|h|d)$/.exec(text);
  if (ago) return new Date(now - Number(ago[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[ago[2] as 's']);
  if (/^\d{10,13}$/.test(text)) return new Date(Number(text));
  if (/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(text)) {
    const d = new Date(text);
    if (!Number.isNaN(d.getTime())) return d;
  }
  throw new InvalidQueryError(
    param,
    'must be an ISO date or time (2026-11-28, 2026-11-28T10:00:00Z), unix milliseconds, ' +
      `or a duration back from now (90s, 15m, 6h, 7d); got ${JSON.stringify(text)}`,
  );
}

/**
 * Validates a history query from strings (HTTP query parameters, CLI options). Every problem is
 * an InvalidQueryError naming the parameter and what is allowed.
 */
export function parseHistoryQuery(
  input: Record<string, string | string[] | undefined>,
  defaultQueue: string,
): HistoryQuery {
  for (const name of Object.keys(input)) {
    if (!KNOWN.includes(name)) throw new InvalidQueryError(name, `unknown parameter; allowed: ${KNOWN.join(', ')}`);
  }
  const one = (name: string): string | undefined => {
    const v = input[name];
    if (Array.isArray(v)) {
      if (name !== 'status') throw new InvalidQueryError(name, 'given more than once');
      return v.join(',');
    }
    return v === undefined || v === '' ? undefined : v;
  };
  const q: HistoryQuery = { queue: one('queue') ?? defaultQueue, limit: 100 };
  if (!QUEUE_NAME.test(q.queue)) throw new InvalidQueryError('queue', `must be ${QUEUE_NAME_RULE}`);
  const module = one('module');
  if (module !== undefined) {
    if (!MODULE_NAME.test(module) || module.includes('..'))
      throw new InvalidQueryError(
        'module',
        `must be a module name (letters, digits, "_", ".", "-", "/"; at most 200), got ${JSON.stringify(module)}`,
      );
    q.module = module;
  }
  const status = one('status');
  if (status !== undefined) {
    const list = status.split(',').map((s) => s.trim());
    for (const s of list) {
      if (!(TASK_STATUSES as readonly string[]).includes(s))
        throw new InvalidQueryError(
          'status',
          `must be one or more of ${TASK_STATUSES.join(', ')} (comma-separated), got ${JSON.stringify(s)}`,
        );
    }
    q.statuses = [...new Set(list)] as TaskStatus[];
  }
  const since = one('since');
  if (since !== undefined) q.since = parseTime('since', since);
  const until = one('until');
  if (until !== undefined) q.until = parseTime('until', until);
  if (q.since && q.until && q.since > q.until) throw new InvalidQueryError('since', 'must not be after until');
  const limit = one('limit');
  if (limit !== undefined) {
    if (!/^\d{1,5}$/.test(limit) || Number(limit) < 1 || Number(limit) > HISTORY_LIMIT_MAX)
      throw new InvalidQueryError(
        'limit',
        `must be an integer from 1 to ${HISTORY_LIMIT_MAX}, got ${JSON.stringify(limit)}`,
      );
    q.limit = Number(limit);
  }
  return q;
}

/** A search of the status page: a history query, paged, with an id and text in params or errors. */
export interface TaskSearch extends Omit<HistoryQuery, 'limit'> {
  id?: string;
  /** Case-insensitive text in the task's params (as JSON). */
  text?: string;
  /** Case-insensitive text in the failure reason or its stack. */
  error?: string;
  /** From 1. */
  page: number;
  pageSize: number;
}

export const PAGE_SIZE_MAX = 200;
/** How far into the newest matching tasks paging reaches. */
export const SEARCH_DEPTH_MAX = 10_000;
const SEARCH_KNOWN = ['queue', 'module', 'status', 'since', 'until', 'id', 'text', 'error', 'page', 'pageSize'];
export const JOB_ID = /^[^:\s]{1,200}$/;

function integer(
  param: string,
  text: string | string[] | undefined,
  min: number,
  max: number,
  fallback: number,
): number {
  if (text === undefined || text === '') return fallback;
  if (Array.isArray(text)) throw new InvalidQueryError(param, 'given more than once');
  if (!/^\d{1,6}$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new InvalidQueryError(param, `must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function searchText(param: string, text: string | string[] | undefined): string | undefined {
  if (text === undefined || text === '') return undefined;
  if (Array.isArray(text)) throw new InvalidQueryError(param, 'given more than once');
  if (text.length > 200) throw new InvalidQueryError(param, `must be at most 200 characters, got ${text.length}`);
  return text;
}

/** Validates a task search (`GET /api/tasks`); every problem names its parameter. */
export function parseTaskSearch(
  input: Record<string, string | string[] | undefined>,
  defaultQueue: string,
): TaskSearch {
  for (const name of Object.keys(input)) {
    if (!SEARCH_KNOWN.includes(name))
      throw new InvalidQueryError(name, `unknown parameter; allowed: ${SEARCH_KNOWN.join(', ')}`);
  }
  const { id, text, error, page, pageSize, ...history } = input;
  const { limit, ...q } = parseHistoryQuery(history, defaultQueue);
  void limit;
  const out: TaskSearch = {
    ...q,
    page: integer('page', page, 1, 100_000, 1),
    pageSize: integer('pageSize', pageSize, 1, PAGE_SIZE_MAX, 50),
  };
  const oneId = searchText('id', id);
  if (oneId !== undefined) {
    if (!JOB_ID.test(oneId)) throw new InvalidQueryError('id', 'must be a job id (1-200 characters, no ":" or spaces)');
    out.id = oneId;
  }
  const t = searchText('text', text);
  if (t !== undefined) out.text = t;
  const e = searchText('error', error);
  if (e !== undefined) out.error = e;
  if (out.page * out.pageSize > SEARCH_DEPTH_MAX) {
    throw new InvalidQueryError(
      'page',
      `reaches past the newest ${SEARCH_DEPTH_MAX} matching tasks: narrow the search`,
    );
  }
  return out;
}
