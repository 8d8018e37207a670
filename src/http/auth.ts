import { createHmac, timingSafeEqual } from 'node:crypto';
import cookie from '@fastify/cookie';
import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { AuthError, BridgeAuth, RoleError } from '../bridge/auth.ts';
import type { Config } from '../config/config.ts';
import { loginPage } from './login-page.ts';
import { errorBody, statusOf } from './server.ts';

/**
 * What a route needs: `public` nothing; `read` the main or the feeder token (the page, every GET
 * of the API, retrying tasks, which a feeder may add anyway); `admin` the main token (cancel,
 * remove, pause, resume, bull-board). Without a main token, `admin` is `read`.
 */
export type Access = 'public' | 'read' | 'admin';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** @defaultValue 'read' ('admin' under /queues) */
    access?: Access;
  }
}

/** The cookie the login form sets. */
export const AUTH_COOKIE = 'taskmaster_token';

/** What a request, or a status page socket, may do. */
export type Level = 'read' | 'admin';

type Tokens = Pick<Config, 'token' | 'feederToken' | 'runnerToken'>;

/** The cookie holds a value derived from the token, so that a leaked cookie does not give away the token itself. */
function cookieValue(token: string): string {
  return createHmac('sha256', token).update('taskmaster status page cookie v1').digest('base64url');
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Who may use the page, the API and bull-board: the main token (TASKMASTER_TOKEN) everything,
 * the feeder token reading and retrying. A token comes as `Authorization: Bearer …`, as `?token=`
 * (scripts, as the history API always allowed), or as the login form's cookie.
 */
export class HttpAuth {
  private readonly bridge: BridgeAuth;

  constructor(private readonly tokens: Tokens) {
    this.bridge = new BridgeAuth(tokens);
  }

  /** Whether the page and the API ask for a token at all. */
  get required(): boolean {
    return Boolean(this.tokens.token || this.tokens.feederToken);
  }

  /** The level a presented token (or none) gives; throws AuthError when it gives none. */
  levelOfToken(token: string | undefined, howToSend = HTTP_HOW): Level {
    if (!token && this.required) throw new AuthError(`authentication required: ${howToSend}`);
    const grant = this.bridge.check(token);
    if (!grant.roles.has('feeder')) {
      throw new AuthError('this token may not use the status page or its API: use the main or the feeder token');
    }
    return grant.via === 'token' || !this.tokens.token ? 'admin' : 'read';
  }

  /** The level the login cookie gives, if it holds a current token's value. */
  levelOfCookie(value: string | undefined): Level | undefined {
    if (!value) return undefined;
    const { token, feederToken } = this.tokens;
    if (token && same(value, cookieValue(token))) return 'admin';
    if (feederToken && same(value, cookieValue(feederToken))) return token ? 'read' : 'admin';
    return undefined;
  }

  /** The cookie value for a token that is valid here, or undefined. */
  cookieFor(token: string): string | undefined {
    try {
      this.levelOfToken(token);
    } catch {
      return undefined; // a wrong token: the form says so
    }
    return cookieValue(token);
  }

  /** A Socket.IO handshake: `auth.token`, else the login cookie. */
  levelOfHandshake(authToken: unknown, cookieHeader: string | undefined): Level {
    if (typeof authToken === 'string' && authToken) return this.levelOfToken(authToken);
    const level = this.levelOfCookie(readCookie(cookieHeader, AUTH_COOKIE));
    return level ?? this.levelOfToken(undefined, 'pass the token as auth.token, or log in at /login for the cookie');
  }
}

const HTTP_HOW = 'send "Authorization: Bearer <token>", or log in at /login';

/** One cookie's value from a Cookie header. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of header?.split(';') ?? []) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return undefined;
}

function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  return h?.startsWith('Bearer ') ? h.slice(7) : undefined;
}

/** Whether the request wants a page (a browser navigating) rather than JSON. */
function wantsPage(req: FastifyRequest): boolean {
  return !req.url.startsWith('/api/') && /text\/html/.test(req.headers.accept ?? '');
}

/** A POST authenticated by cookie must come from a page of this server (on top of SameSite=Strict). */
function crossSite(req: FastifyRequest): boolean {
  const origin = req.headers.origin;
  if (!origin || origin === 'null') return origin === 'null';
  try {
    return new URL(origin).host !== req.headers.host;
  } catch {
    return true; // an Origin that is not a URL is not this server
  }
}

function levelOf(auth: HttpAuth, req: FastifyRequest): Level {
  const query = req.query as Record<string, unknown> | undefined;
  const presented = bearer(req) ?? (typeof query?.token === 'string' ? query.token : undefined);
  if (presented) return auth.levelOfToken(presented);
  const fromCookie = auth.levelOfCookie(req.cookies[AUTH_COOKIE]);
  if (fromCookie) {
    if (req.method === 'POST' && crossSite(req))
      throw new RoleError('a cookie is accepted only from this server’s own pages');
    return fromCookie;
  }
  if (req.cookies[AUTH_COOKIE] && auth.required)
    throw new AuthError('the login has expired or the token changed: log in again');
  return auth.levelOfToken(undefined);
}

/**
 * Auth for every route: an onRequest hook that checks the route's `access`, the login form
 * (`GET /login`, `POST /login` with the form field `token`) and `POST /logout`. A request
 * refused gets 401 `{error, code}` — or, when a browser asks for a page, the login form.
 */
export const authPlugin = fp<{ auth: HttpAuth }>(async (app: FastifyInstance, { auth }) => {
  await app.register(cookie);
  await app.register(formbody);

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const access = req.routeOptions.config?.access ?? (req.url.startsWith('/queues') ? 'admin' : 'read');
    if (access === 'public') return;
    try {
      const level = levelOf(auth, req);
      if (access === 'admin' && level !== 'admin') {
        throw new RoleError('this needs the main token (TASKMASTER_TOKEN); the feeder token may only read and retry');
      }
    } catch (err) {
      if (err instanceof AuthError && wantsPage(req)) {
        return reply
          .status(401)
          .type('text/html; charset=utf-8')
          .send(loginPage({ next: req.url, message: err.message }));
      }
      // Answered here: a scope's own error handler (bull-board's) must not turn a refusal into a 500.
      return reply.status(statusOf(err)).send(errorBody(err));
    }
  });

  const cookieOptions = { path: '/', httpOnly: true, sameSite: 'strict' as const };
  app.get('/login', { config: { access: 'public' } }, async (req, reply) => {
    const next = safeNext((req.query as { next?: unknown }).next);
    return reply.type('text/html; charset=utf-8').send(loginPage({ next, required: auth.required }));
  });
  app.post('/login', { config: { access: 'public' } }, async (req, reply) => {
    const body = (req.body ?? {}) as { token?: unknown; next?: unknown };
    const next = safeNext(body.next);
    const value = typeof body.token === 'string' && body.token ? auth.cookieFor(body.token) : undefined;
    if (!value) {
      return reply
        .status(401)
        .type('text/html; charset=utf-8')
        .send(loginPage({ next, message: 'token: not valid for this master', required: auth.required }));
    }
    return reply.setCookie(AUTH_COOKIE, value, cookieOptions).redirect(next, 303);
  });
  app.post('/logout', { config: { access: 'public' } }, async (_req, reply) =>
    reply.clearCookie(AUTH_COOKIE, cookieOptions).redirect('/login', 303),
  );
});

/** Where to go after logging in: a path on this server only (no open redirect). */
function safeNext(next: unknown): string {
  return typeof next === 'string' && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}
