import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { AuthError, BridgeAuth } from '../bridge/auth.ts';
import type { Config } from '../config/config.ts';
import { sendJson, type Route } from '../http/server.ts';
import type { ArchiveLag } from './archiver.ts';
import { NotRetriableError, TaskNotFoundError, type History } from './history.ts';
import { InvalidQueryError, parseHistoryQuery } from './query.ts';

const TASK_PATH = /^\/api\/tasks\/([^/]+)(\/retry)?$/;
const JOB_ID = /^[^:\s]{1,200}$/;

/**
 * The history API, on the master's HTTP port:
 * - `GET /api/history?module=&status=&since=&until=&limit=&queue=`: tasks, newest first, live
 *   and archived;
 * - `GET /api/tasks/:id[?queue=]`: one task, wherever it is;
 * - `POST /api/tasks/:id/retry[?queue=]`: queue a finished task again;
 * - `GET /api/archive`: the archive's lag.
 * With a token configured, a feeder's token is needed (`Authorization: Bearer …` or `?token=`).
 * Bad parameters are answered 400 naming the parameter.
 */
export function historyRoutes(opts: { config: Config; history: History; lag: () => Promise<ArchiveLag>; log: Logger }): Route {
  const auth = new BridgeAuth(opts.config);
  const log = opts.log.child({ component: 'api' });
  return async (req, res, url) => {
    if (!url.pathname.startsWith('/api/')) return false;
    try {
      const params = Object.fromEntries(url.searchParams);
      const token = bearer(req) ?? params.token;
      delete params.token;
      if (!auth.check(token).roles.has('feeder')) throw new AuthError('this token may not read or add tasks: use the main or the feeder token');

      if (url.pathname === '/api/history') {
        only(req, 'GET');
        const query = parseHistoryQuery(multi(url), opts.config.queue);
        const tasks = await opts.history.search(query);
        return reply(res, 200, { archive: opts.history.archived, count: tasks.length, tasks });
      }
      if (url.pathname === '/api/archive') {
        only(req, 'GET');
        return reply(res, 200, await opts.lag());
      }
      const m = TASK_PATH.exec(url.pathname);
      if (m) {
        const id = decodeURIComponent(m[1]!);
        if (!JOB_ID.test(id)) throw new InvalidQueryError('id', 'must be a job id (1-200 characters, no ":" or spaces)');
        const { queue } = parseHistoryQuery({ queue: params.queue }, opts.config.queue);
        for (const name of Object.keys(params)) if (name !== 'queue') throw new InvalidQueryError(name, 'unknown parameter; allowed: queue');
        if (m[2]) {
          only(req, 'POST');
          const { from, added } = await opts.history.retry(id, queue);
          return reply(res, 201, { retried: from._id, task: added });
        }
        only(req, 'GET');
        const task = await opts.history.get(id, queue);
        if (!task) throw new TaskNotFoundError(`no task with id ${id} in queue ${queue}`);
        return reply(res, 200, task);
      }
      return reply(res, 404, { error: `no such path: ${url.pathname}`, code: 'NOT_FOUND' });
    } catch (err) {
      const status = statusOf(err);
      if (status === 500) log.error({ err, path: url.pathname }, 'history API failed');
      const e = err as Error & { code?: string; param?: string };
      return reply(res, status, { error: e.message, code: e.code, ...(e.param ? { param: e.param } : {}) });
    }
  };
}

class MethodError extends Error {
  readonly code = 'METHOD_NOT_ALLOWED';
}

function only(req: IncomingMessage, method: string): void {
  if (req.method !== method && !(method === 'GET' && req.method === 'HEAD')) throw new MethodError(`use ${method} here`);
}

function statusOf(err: unknown): number {
  if (err instanceof InvalidQueryError) return 400;
  if (err instanceof AuthError) return 401;
  if (err instanceof TaskNotFoundError) return 404;
  if (err instanceof MethodError) return 405;
  if (err instanceof NotRetriableError) return 409;
  if ((err as { code?: string }).code === 'TASK_INVALID') return 400;
  return (err as { name?: string }).name?.startsWith('Mongo') ? 503 : 500;
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  return h?.startsWith('Bearer ') ? h.slice(7) : undefined;
}

/** Query parameters, with `status` allowed more than once. */
function multi(url: URL): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const key of new Set(url.searchParams.keys())) {
    if (key === 'token') continue;
    const all = url.searchParams.getAll(key);
    out[key] = all.length > 1 ? all : all[0]!;
  }
  return out;
}

function reply(res: ServerResponse, status: number, body: unknown): true {
  sendJson(res, status, body);
  return true;
}
