import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RouteContext } from '../http/context.ts';
import { refuseOtherMethods } from '../http/server.ts';
import { TaskNotFoundError } from './history.ts';
import { InvalidQueryError, JOB_ID, parseHistoryQuery, parseTaskSearch } from './query.ts';
import { taskDetail } from '../dashboard/task-detail.ts';

type Query = Record<string, string | string[] | undefined>;

/** The query parameters, without the token (checked by auth). */
export function queryOf(req: FastifyRequest): Query {
  const { token, ...rest } = (req.query ?? {}) as Query;
  void token;
  return rest;
}

/** A task id from the path, checked. */
export function taskIdOf(req: FastifyRequest): string {
  const id = (req.params as { id: string }).id;
  if (!JOB_ID.test(id)) throw new InvalidQueryError('id', 'must be a job id (1-200 characters, no ":" or spaces)');
  return id;
}

/** The `queue` parameter, the only one the routes of one task take. */
export function queueOnly(req: FastifyRequest, defaultQueue: string): string {
  const params = queryOf(req);
  for (const name of Object.keys(params))
    if (name !== 'queue') throw new InvalidQueryError(name, 'unknown parameter; allowed: queue');
  return parseHistoryQuery({ queue: params.queue }, defaultQueue).queue;
}

/**
 * The history API, on the master's HTTP port:
 * - `GET /api/history?module=&status=&since=&until=&limit=&queue=`: tasks, newest first, live
 *   and archived;
 * - `GET /api/tasks?id=&module=&status=&since=&until=&text=&error=&queue=&page=&pageSize=`: the
 *   same search, paged, with text in params or errors;
 * - `GET /api/tasks/:id[?queue=]`: one task, wherever it is, with what it waits for and what
 *   waits for it;
 * - `POST /api/tasks/:id/retry[?queue=]`: queue a finished task again (also one only archived);
 * - `GET /api/archive`: the archive's lag.
 * Bad parameters are answered 400 naming the parameter.
 */
export async function historyRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const { config, history } = ctx;
  app.get('/api/history', async (req) => {
    const query = parseHistoryQuery(queryOf(req), config.queue);
    const tasks = await history.search(query);
    return { archive: history.archived, count: tasks.length, tasks };
  });
  refuseOtherMethods(app, '/api/history', ['GET']);

  app.get('/api/tasks', async (req) => history.searchPage(parseTaskSearch(queryOf(req), config.queue)));
  refuseOtherMethods(app, '/api/tasks', ['GET']);

  app.get('/api/archive', async (req) => {
    for (const name of Object.keys(queryOf(req))) throw new InvalidQueryError(name, 'unknown parameter; allowed: none');
    return ctx.lag();
  });
  refuseOtherMethods(app, '/api/archive', ['GET']);

  app.get('/api/tasks/:id', async (req) => {
    const id = taskIdOf(req);
    const queue = queueOnly(req, config.queue);
    const task = await taskDetail(ctx, id, queue);
    if (!task) throw new TaskNotFoundError(`no task with id ${id} in queue ${queue}`);
    return task;
  });
  refuseOtherMethods(app, '/api/tasks/:id', ['GET']);

  app.post('/api/tasks/:id/retry', async (req, reply) => {
    const id = taskIdOf(req);
    const { from, added } = await history.retry(id, queueOnly(req, config.queue));
    return reply.status(201).send({ retried: from._id, task: added });
  });
  refuseOtherMethods(app, '/api/tasks/:id/retry', ['POST']);
}
