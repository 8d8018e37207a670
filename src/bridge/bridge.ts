import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { Finishing } from '../queue/finishing.ts';
import { Components } from '../components.ts';
import { listenForAnnouncements } from '../tasks/announcements.ts';
import { Releasers } from '../releasers.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { BridgeAuth } from './auth.ts';
import { FeederHandlers } from './feeder-handlers.ts';
import { Presence, type Peer } from './presence.ts';
import { connectionHandler, refuser } from './peer-events.ts';
import { RunnerHandlers } from './runner-handlers.ts';
import { RunnerLeases } from './runner-leases.ts';
import { RunnerSlots } from './runner-slots.ts';
import { Watchers, type ArchivedTask } from './watchers.ts';

export interface BridgeOptions {
  config: Config;
  /** Shared connection for commands; the bridge duplicates it where it needs blocking reads or pub/sub. */
  connection: Redis;
  client: TaskClient;
  /**
   * The process's shared components (see components.ts), which their builder closes.
   * @defaultValue components of the bridge's own on `connection`, closed with it
   */
  components?: Components;
  log: Logger;
  /**
   * An HTTP server to attach to (the master's, shared with the status page). Its owner listens
   * and closes it. @defaultValue a new server listening on config.port and config.host
   */
  httpServer?: HttpServer;
  /** Lock length of a job a runner holds; renewed at half that while its socket is connected. @defaultValue 10000 */
  lockDurationMs?: number;
  /** How often the bridge checks for jobs whose lock expired (a crashed master's). @defaultValue 5000 */
  stalledIntervalMs?: number;
  /** How often connected clients are re-published in the registry. @defaultValue 5000 */
  presenceEveryMs?: number;
  /** A task started this many times in all fails for good rather than go out again. @defaultValue 20 */
  maxStarts?: number;
  /**
   * How long a runner that dropped the tasks it held waits before its new connections get work,
   * doubling per drop up to `maxDropBackoffMs` (see RunnerBackoff). @defaultValue 1000
   */
  dropBackoffMs?: number;
  /** @defaultValue 30000 */
  maxDropBackoffMs?: number;
  /** Finds a task that finished and left Redis (the archive), for `task:watch`. */
  archived?: (id: string, queue: string) => Promise<ArchivedTask | undefined>;
  /** How long a queue's event stream is still read once none of its tasks is watched. @defaultValue 10000 */
  watchReaderIdleMs?: number;
}

export interface Bridge {
  readonly httpServer: HttpServer;
  readonly io: Server;
  /** The port listened on (the real one when config.port is 0). */
  readonly port: number;
  /** This bridge's id in the registry (the `bridge` field of its clients' entries). */
  readonly id: string;
  /** Connected clients, for the status page. */
  peers(): Peer[];
  /** The queues whose event streams this bridge reads now, for watched tasks. */
  readingEvents(): string[];
  /** Disconnects every client, gives the jobs runners held back to the queue, and stops. */
  close(): Promise<void>;
}

/** Bytes of Socket.IO framing and JSON re-escaping allowed on top of the payload limit. */
const TRANSPORT_HEADROOM = 64 * 1024;

/**
 * The Socket.IO bridge: the 2015 taskmaster protocol for feeders and remote runners, on one
 * HTTP port, for socket.io-client 1.x and 2.x (Engine.IO 3, `allowEIO3`) and current clients.
 */
export async function startBridge(opts: BridgeOptions): Promise<Bridge> {
  const { config, connection, client } = opts;
  const log = opts.log.child({ component: 'bridge' });
  // The bridge does not own the connection: whoever does decides what a release does while Redis is away.
  const releasers = new Releasers(log);
  return releasers.guard(async () => {
    let components = opts.components;
    if (!components) {
      const own = (components = new Components({ config, connection, log }));
      releasers.add(() => own.close());
    }
    const { gates, outcomes, cancellations, registry, keys, instanceId: id } = components;
    const slots = new RunnerSlots();
    const presence = new Presence(registry, id, slots, log, opts.presenceEveryMs);
    presence.start();
    releasers.add(() => presence.close());

    const emit = (peer: Peer, event: string, payload: unknown) => {
      if (peer.connected) peer.socket.emit(event, payload);
    };
    const watchers = new Watchers({
      config,
      connection,
      queues: components.queues,
      log,
      send: (peer, e) => emit(peer, e.event, e.payload),
      archived: opts.archived,
      readerIdleMs: opts.watchReaderIdleMs,
    });
    releasers.add(() => watchers.close());
    const leases = new RunnerLeases({
      config,
      connection,
      components,
      slots,
      finishing: new Finishing({ connection, outcomes, log }),
      cancellations,
      presence,
      log,
      send: (peer, event, task) => emit(peer, event, JSON.stringify(task)),
      lockDurationMs: opts.lockDurationMs,
      stalledIntervalMs: opts.stalledIntervalMs,
      maxStarts: opts.maxStarts,
      dropBackoffMs: opts.dropBackoffMs,
      maxDropBackoffMs: opts.maxDropBackoffMs,
    });
    releasers.add(() => leases.close());
    releasers.add(
      listenForAnnouncements({
        connection,
        cancellations,
        gates,
        openingChannel: keys.openingChannel,
        held: () => leases.heldIds(),
        cancel: (jobId) =>
          void leases.cancel(jobId).catch((err) => log.warn({ err, jobId }, 'could not cancel a task a runner holds')),
        log,
      }),
    );

    // Keep the transport's limit above ours: Socket.IO drops a larger message and closes the
    // connection without a word, whereas our limit is answered with task:add:failed. A JSON
    // string payload is escaped once more inside the packet, hence twice the limit.
    const maxHttpBufferSize = 2 * config.limits.maxPayloadBytes + TRANSPORT_HEADROOM;
    const ownServer = !opts.httpServer;
    const httpServer = opts.httpServer ?? createServer();
    httpServer.on('error', (err) => log.error({ err }, 'http server error'));
    let closing = false;
    const io = new Server(httpServer, {
      allowEIO3: true,
      maxHttpBufferSize,
      serveClient: false,
      // While closing, new handshakes get an HTTP error, which clients retry (a refusal by
      // middleware would stop a 4.x client from reconnecting to the master that replaces this one).
      allowRequest: (_req, cb) => cb(closing ? 'the master is shutting down' : null, !closing),
    });
    io.engine.on('connection_error', (err: { code: number; message: string; req?: { url?: string } }) =>
      log.warn({ code: err.code, reason: err.message, url: err.req?.url }, 'socket.io connection error'),
    );

    const peers = new Set<Peer>();
    const releasing = new Set<Promise<unknown>>();
    const auth = new BridgeAuth(config);
    io.use(refuser(auth, log));
    io.on(
      'connection',
      connectionHandler({
        bridgeId: id,
        config,
        log,
        peers,
        presence,
        leases,
        slots,
        watchers,
        feeders: new FeederHandlers({ client, presence, log, emit }),
        runners: new RunnerHandlers({ leases, log, defaultQueue: config.queue }),
        track: (p) => {
          releasing.add(p);
          void p.finally(() => releasing.delete(p));
        },
      }),
    );
    releasers.add(async () => {
      closing = true;
      // Connections are closed at the transport, without a Socket.IO disconnect packet, so that
      // clients reconnect (to this master restarted, or to another behind the same address).
      if (ownServer) {
        const closed = new Promise<void>((resolve) => void io.close(() => resolve()));
        httpServer.closeAllConnections();
        await closed;
      } else {
        io.engine.close();
      }
      // Disconnect handlers give held jobs back; wait for them before the leases close.
      await Promise.allSettled([...releasing]);
    });

    if (ownServer) {
      await new Promise<void>((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(config.port, config.host, () => {
          httpServer.off('error', reject);
          resolve();
        });
      });
    }
    const address = httpServer.address() as AddressInfo | null;
    const port = address?.port ?? config.port;
    if (!auth.enabled && !['127.0.0.1', '::1', 'localhost'].includes(config.host)) {
      log.warn(
        { host: config.host, port },
        'TASKMASTER_TOKEN is not set: anyone who can reach this port may add and take tasks',
      );
    }
    // A shared server is listened on by its owner, who logs the port.
    log.info(
      { ...(ownServer ? { port, host: config.host } : {}), auth: auth.enabled, maxHttpBufferSize },
      'socket.io bridge ready',
    );
    const close = () => releasers.release();
    return { httpServer, io, port, id, peers: () => [...peers], readingEvents: () => watchers.reading(), close };
  });
}
