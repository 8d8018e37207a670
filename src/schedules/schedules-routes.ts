import type { FastifyInstance } from 'fastify';
import type { RouteContext } from '../http/context.ts';
import { queryOf } from '../archive/api.ts';
import { InvalidQueryError } from '../archive/query.ts';
import { refuseOtherMethods } from '../http/server.ts';
import { FiringRecords } from './firing-records.ts';
import { scheduleStatus } from './schedule-status.ts';
import { schedulesQueue } from './schedules.ts';

/**
 * `GET /api/schedules`: `{schedules: [...]}`, each schedule as `taskmaster schedules --json`
 * shows it (its next three runs in its zone and in UTC, its last firing and how many of its
 * tasks are done).
 */
export async function scheduleRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const queue = schedulesQueue(ctx.connection, ctx.config.prefix, ctx.log);
  app.addHook('onClose', () => queue.close());
  const { keys, store } = ctx.components;
  const records = new FiringRecords(ctx.connection, keys);
  app.get('/api/schedules', async (req) => {
    for (const name of Object.keys(queryOf(req))) throw new InvalidQueryError(name, 'unknown parameter; allowed: none');
    return {
      schedules: await scheduleStatus({ queue, records, store, configured: ctx.config.schedules }),
    };
  });
  refuseOtherMethods(app, '/api/schedules', ['GET']);
}
