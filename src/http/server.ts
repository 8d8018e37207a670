import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Logger } from 'pino';
import { AuthError, RoleError } from '../bridge/auth.ts';
import { InvalidQueryError } from '../archive/query.ts';
import { TaskmasterError } from '../errors.ts';

/** A path asked for with a method it does not answer. */
export class MethodNotAllowedError extends TaskmasterError {
  override readonly code = 'METHOD_NOT_ALLOWED';
}

/** A named thing (task, queue, module) that does not exist. */
export class NotFoundError extends TaskmasterError {
  override readonly code: string = 'NOT_FOUND';
}

/** An action that does not apply to the thing's current state (retrying a waiting task, ...). */
export class ConflictError extends TaskmasterError {
  override readonly code: string = 'CONFLICT';
}

/** Status codes of the errors the routes throw on purpose; anything else is a 500 (503 for MongoDB). */
export function statusOf(err: unknown): number {
  if (err instanceof InvalidQueryError) return 400;
  if (err instanceof AuthError) return 401;
  if (err instanceof RoleError) return 403;
  if (err instanceof NotFoundError || (err as { code?: string }).code === 'TASK_NOT_FOUND') return 404;
  if (err instanceof MethodNotAllowedError) return 405;
  if (err instanceof ConflictError || (err as { code?: string }).code === 'NOT_RETRIABLE') return 409;
  if ((err as { code?: string }).code === 'TASK_INVALID') return 400;
  const own = (err as FastifyError).statusCode;
  if (typeof own === 'number' && own >= 400 && own < 500) return own;
  return (err as { name?: string }).name?.startsWith('Mongo') ? 503 : 500;
}

/** The JSON body of an error answer: `{error, code}`, and the parameter a 400 is about. */
export function errorBody(err: unknown): Record<string, unknown> {
  const e = err as Error & { code?: string; param?: string };
  return { error: e.message, code: e.code, ...(e.param ? { param: e.param, parameter: e.param } : {}) };
}

/** Every method a route may be asked with, for the 405 answers. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/**
 * Answers the methods of `url` that are not in `allowed` with 405 (Fastify alone would say 404,
 * which hides that the path exists).
 */
export function refuseOtherMethods(app: FastifyInstance, url: string, allowed: readonly string[]): void {
  const open = new Set(allowed.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])));
  const others = METHODS.filter((m) => !open.has(m));
  app.route({
    method: others,
    url,
    handler: async () => {
      throw new MethodNotAllowedError(`use ${allowed.join(' or ')} here`);
    },
  });
}

/**
 * The master's one HTTP server: Fastify on a Node server that Socket.IO attaches to as well (it
 * answers `/socket.io/` itself and hands every other request on). Errors thrown on purpose get
 * their status and `{error, code}`; what no route takes is a JSON 404.
 */
export function createHttpApp(opts: { log: Logger; bodyLimit?: number }): FastifyInstance {
  const log = opts.log.child({ component: 'http' });
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    serverFactory: (handler) => createServer(handler),
  });
  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    const status = statusOf(err);
    if (status >= 500) log.error({ err, path: req.url }, 'request failed');
    return reply.status(status).send(errorBody(err));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send({ error: `no such path: ${req.url.split('?')[0]}`, code: 'NOT_FOUND' }),
  );
  return app;
}

/** Listens; resolves with the port in use (the real one when `port` is 0). */
export async function listen(app: FastifyInstance, port: number, host: string): Promise<number> {
  await app.listen({ port, host });
  return (app.server.address() as AddressInfo).port;
}

/** Stops listening and drops open connections (clients reconnect to whichever master answers). */
export async function closeHttpApp(app: FastifyInstance): Promise<void> {
  await app.close();
}
