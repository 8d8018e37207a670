import type { FastifyInstance } from 'fastify';
import { historyRoutes } from '../archive/api.ts';
import { actionRoutes } from '../dashboard/actions-routes.ts';
import { bullBoardRoutes } from '../dashboard/bull-board.ts';
import { overviewRoutes } from '../dashboard/overview-routes.ts';
import { scheduleRoutes } from '../schedules/schedules-routes.ts';
import { dashboardRoutes } from '../dashboard/routes.ts';
import { HttpAuth, authPlugin } from './auth.ts';
import type { RouteContext } from './context.ts';
import { createHttpApp } from './server.ts';

/** One concept's routes: registered in a scope of their own, behind the auth hook. */
export type RoutePlugin = (app: FastifyInstance, ctx: RouteContext) => Promise<void>;

/** Every route plugin of the master, in one list. */
export const MASTER_ROUTES: readonly RoutePlugin[] = [
  historyRoutes,
  overviewRoutes,
  actionRoutes,
  bullBoardRoutes,
  dashboardRoutes,
  scheduleRoutes,
];

/**
 * The master's HTTP app: auth (token, login form and cookie) for everything, then each route
 * plugin. Socket.IO attaches to `app.server` before it listens.
 */
export async function buildMasterHttp(
  ctx: RouteContext,
  plugins: readonly RoutePlugin[] = MASTER_ROUTES,
): Promise<FastifyInstance> {
  const app = createHttpApp({ log: ctx.log });
  await app.register(authPlugin, { auth: new HttpAuth(ctx.config) });
  for (const plugin of plugins) await app.register(async (scope) => plugin(scope, ctx));
  return app;
}
