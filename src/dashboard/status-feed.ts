import type { Server } from 'socket.io';
import type { Logger } from 'pino';
import { HttpAuth } from '../http/auth.ts';
import type { RouteContext } from '../http/context.ts';
import { changeKey, OverviewReader, type Overview } from './overview.ts';

export const STATUS_NAMESPACE = '/status';

/**
 * The live status page's feed: the Socket.IO namespace `/status` on the master's server sends
 * `overview` (the body of `GET /api/overview`) on connect and whenever it changes. The overview
 * is read about once a second while a page is connected, and sent only when something in it
 * changed besides the passing of time. A connection needs the login cookie or `auth.token`
 * (the main or the feeder token) when a token is configured; the legacy protocol's namespace
 * (`/`) is not touched.
 */
export function attachStatusFeed(io: Server, ctx: RouteContext, opts: { everyMs?: number } = {}): () => Promise<void> {
  const log: Logger = ctx.log.child({ component: 'status-feed' });
  const auth = new HttpAuth(ctx.config);
  const reader = new OverviewReader(ctx, auth.required);
  const everyMs = opts.everyMs ?? 1000;
  const nsp = io.of(STATUS_NAMESPACE);
  let last: { key: string; overview: Overview } | undefined;
  let timer: NodeJS.Timeout | undefined;
  let reading: Promise<void> | undefined;
  let closed = false;
  let failing = false;

  nsp.use((socket, next) => {
    try {
      auth.levelOfHandshake((socket.handshake.auth as { token?: unknown }).token, socket.handshake.headers.cookie);
      next();
    } catch (err) {
      next(err as Error);
    }
  });

  const poll = async () => {
    try {
      const overview = await reader.read();
      failing = false;
      const key = changeKey(overview);
      if (key === last?.key) return;
      last = { key, overview };
      nsp.emit('overview', overview);
    } catch (err) {
      // Once per failing spell (Redis away would otherwise log every second).
      if (!failing) log.warn({ err }, 'could not read the overview for the live status page');
      failing = true;
    }
  };
  const tick = () => {
    timer = undefined;
    if (closed || !nsp.sockets.size) return;
    reading = poll().finally(() => {
      reading = undefined;
      if (!closed && nsp.sockets.size) timer = setTimeout(tick, everyMs);
    });
  };

  nsp.on('connection', (socket) => {
    // A new page gets the overview at once: the last one sent if polling is on, else a fresh one.
    if (last && (timer || reading)) socket.emit('overview', last.overview);
    else {
      last = undefined;
      if (!reading) {
        clearTimeout(timer);
        tick();
      }
    }
  });

  return async () => {
    closed = true;
    clearTimeout(timer);
    await reading;
    nsp.disconnectSockets(true);
  };
}
