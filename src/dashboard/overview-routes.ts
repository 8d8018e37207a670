import type { FastifyInstance } from 'fastify';
import { queryOf } from '../archive/api.ts';
import { InvalidQueryError, parseHistoryQuery } from '../archive/query.ts';
import { HttpAuth } from '../http/auth.ts';
import type { RouteContext } from '../http/context.ts';
import { refuseOtherMethods } from '../http/server.ts';
import { readMetrics } from './metrics.ts';
import { OverviewReader } from './overview.ts';

/** The longest span of `GET /api/metrics`. */
export const METRICS_HOURS_MAX = 168;

/**
 * - `GET /api/overview`: queues with their counts, the archive's lag, runners, feeders, worker
 *   processes, alerts, and whether auth is on (the body of the live `overview` event);
 * - `GET /api/metrics?queue=&hours=`: completed and failed tasks per minute over the last hours
 *   (1 to 168, default 6).
 */
export async function overviewRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const reader = new OverviewReader(ctx, new HttpAuth(ctx.config).required);
  app.get('/api/overview', async (req) => {
    for (const name of Object.keys(queryOf(req))) throw new InvalidQueryError(name, 'unknown parameter; allowed: none');
    return reader.read();
  });
  refuseOtherMethods(app, '/api/overview', ['GET']);

  app.get('/api/metrics', async (req) => {
    const { hours, ...rest } = queryOf(req);
    for (const name of Object.keys(rest)) {
      if (name !== 'queue') throw new InvalidQueryError(name, 'unknown parameter; allowed: queue, hours');
    }
    const { queue } = parseHistoryQuery({ queue: rest.queue }, ctx.config.queue);
    let span = 6;
    if (hours !== undefined && hours !== '') {
      if (Array.isArray(hours)) throw new InvalidQueryError('hours', 'given more than once');
      if (!/^\d{1,3}$/.test(hours) || Number(hours) < 1 || Number(hours) > METRICS_HOURS_MAX) {
        throw new InvalidQueryError(
          'hours',
          `must be an integer from 1 to ${METRICS_HOURS_MAX}, got ${JSON.stringify(hours)}`,
        );
      }
      span = Number(hours);
    }
    return readMetrics(ctx, queue, span);
  });
  refuseOtherMethods(app, '/api/metrics', ['GET']);
}
