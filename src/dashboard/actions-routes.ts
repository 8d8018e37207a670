import type { FastifyInstance, FastifyRequest } from 'fastify';
import { queryOf, queueOnly, taskIdOf } from '../archive/api.ts';
import { documentId } from '../archive/document.ts';
import { NotRetriableError } from '../archive/history.ts';
import { FINISHED_STATUSES, InvalidQueryError } from '../archive/query.ts';
import type { RouteContext } from '../http/context.ts';
import { ConflictError, NotFoundError, refuseOtherMethods } from '../http/server.ts';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../queue/keys.ts';
import { CANCELLED_REASON } from '../tasks/cancellations.ts';

/** Failed jobs of a queue read at most for one retry of a module's failures. */
const RETRY_FAILED_MAX = 10_000;
const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,199}$/;

/** A queue named in the path that the system knows (the configured one, or one a consumer serves). */
async function knownQueue(ctx: RouteContext, req: FastifyRequest): Promise<string> {
  for (const name of Object.keys(queryOf(req))) throw new InvalidQueryError(name, 'unknown parameter; allowed: none');
  const name = (req.params as { name: string }).name;
  if (!QUEUE_NAME.test(name)) throw new InvalidQueryError('name', `must be ${QUEUE_NAME_RULE}`);
  if (!(await ctx.queues()).includes(name))
    throw new NotFoundError(`no queue ${name}: known are ${(await ctx.queues()).join(', ')}`);
  return name;
}

/**
 * The status page's actions, by POST only:
 * - `/api/tasks/:id/cancel`: as `taskmaster cancel` (main token);
 * - `/api/tasks/:id/remove`: a finished task leaves Redis and the archive (main token);
 * - `/api/modules/:module/retry-failed?queue=`: every failed task of a module still in Redis is
 *   queued again as `retry` does, one by one (main or feeder token, which may add tasks anyway);
 * - `/api/queues/:name/pause`, `/api/queues/:name/resume` (main token).
 * `POST /api/tasks/:id/retry` is with the history API.
 */
export async function actionRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const { config, client, history } = ctx;
  const { queues } = ctx.components;
  const admin = { config: { access: 'admin' as const } };

  app.post('/api/tasks/:id/cancel', admin, async (req) => {
    const id = taskIdOf(req);
    const queue = queueOnly(req, config.queue);
    const result = await client.cancel(id, queue);
    if (result.state === 'not-found') throw new NotFoundError(`no task with id ${id} in queue ${queue} (in Redis)`);
    if (result.state === 'finished') throw new ConflictError(`task ${id} already ${result.was}: nothing to cancel`);
    return result;
  });
  refuseOtherMethods(app, '/api/tasks/:id/cancel', ['POST']);

  app.post('/api/tasks/:id/remove', admin, async (req) => {
    const id = taskIdOf(req);
    const queue = queueOnly(req, config.queue);
    const task = await history.get(id, queue);
    if (!task) throw new NotFoundError(`no task with id ${id} in queue ${queue}`);
    if (!(FINISHED_STATUSES as readonly string[]).includes(task.status)) {
      throw new ConflictError(`task ${id} is ${task.status}: cancel it first; only finished tasks are removed`);
    }
    const from: string[] = [];
    if (task.source === 'redis') {
      if (!(await queues.get(queue).remove(id, { removeChildren: false }))) {
        throw new ConflictError(`task ${id} is locked right now: try again`);
      }
      from.push('redis');
    }
    if (ctx.store && (await ctx.store.remove(documentId(queue, id)))) from.push('archive');
    return { removed: id, queue, from };
  });
  refuseOtherMethods(app, '/api/tasks/:id/remove', ['POST']);

  app.post('/api/modules/:module/retry-failed', async (req, reply) => {
    const module = (req.params as { module: string }).module;
    if (!MODULE_NAME.test(module) || module.includes('..')) {
      throw new InvalidQueryError(
        'module',
        `must be a module name (letters, digits, "_", ".", "-", "/"), got ${JSON.stringify(module)}`,
      );
    }
    const queue = queueOnly(req, config.queue);
    const q = queues.get(queue);
    const ids = await ctx.connection.zrevrange(q.keys.failed!, 0, RETRY_FAILED_MAX - 1);
    const pipe = ctx.connection.pipeline();
    for (const id of ids) pipe.hmget(q.toKey(id), 'name', 'failedReason');
    const rows = ((await pipe.exec()) ?? []).map(([, r]) => r as [string | null, string | null]);
    const mine = ids.filter((_, i) => rows[i]![0] === module && rows[i]![1] !== CANCELLED_REASON);
    const tasks: { from: string; id: string; duplicate: boolean }[] = [];
    const skipped: { from: string; reason: string }[] = [];
    for (const id of mine) {
      try {
        const { added } = await history.retry(id, queue);
        tasks.push({ from: id, id: added.id, duplicate: added.duplicate });
      } catch (err) {
        if (!(err instanceof NotRetriableError)) throw err;
        skipped.push({ from: id, reason: err.message });
      }
    }
    return reply.status(tasks.length ? 201 : 200).send({ queue, module, retried: tasks.length, tasks, skipped });
  });
  refuseOtherMethods(app, '/api/modules/:module/retry-failed', ['POST']);

  for (const action of ['pause', 'resume'] as const) {
    app.post(`/api/queues/:name/${action}`, admin, async (req) => {
      const name = await knownQueue(ctx, req);
      const queue = queues.get(name);
      await queue[action]();
      return { name, paused: await queue.isPaused() };
    });
    refuseOtherMethods(app, `/api/queues/:name/${action}`, ['POST']);
  }
}
