import type { Logger } from 'pino';
import type { Config } from './config/config.ts';
import { processOutageLog } from './queue/outage-log.ts';
import { ensureLocalRedis, type LocalRedisOptions } from './queue/local-redis.ts';
import { Releasers } from './releasers.ts';
import { Components, type ProcessRoot } from './components.ts';
import { TaskClient } from './tasks/task-client.ts';
import { OutcomeWatcher } from './tasks/outcome-watcher.ts';
import { IdentityRetention } from './tasks/identity-retention.ts';
import { startWorkers } from './workers/start-workers.ts';
import { connectService, type Running } from './service.ts';
import { Schedules } from './schedules/schedules.ts';
import { startBridge } from './bridge/bridge.ts';
import { closeHttpApp, listen } from './http/server.ts';
import { buildMasterHttp } from './http/routes.ts';
import { attachStatusFeed } from './dashboard/status-feed.ts';
import { ArchiveStore } from './archive/store.ts';
import { documentId } from './archive/document.ts';
import { Archiver } from './archive/archiver.ts';
import { History } from './archive/history.ts';

// The workers' root is its own module, so that `taskmaster workers` loads nothing of the master's.
export { startWorkers } from './workers/start-workers.ts';
export { runUntilSignal, type Running } from './service.ts';

/** The master: what it runs, and the port its HTTP server (Socket.IO, API) listens on. */
export interface Master extends Running {
  readonly port: number;
  /** Its connection and components, which `start` hands the workers' primary in the same process. */
  readonly root: ProcessRoot;
}

/**
 * The master: the gate worker and the reconciler that let dependents move on, the watcher that
 * records outcomes no Taskmaster code recorded (plain BullMQ workers, BullMQ's own failures), the
 * archiver (MongoDB when `config.mongoUrl` is set; otherwise it only keeps Redis trimmed), and one
 * HTTP server on `config.port` hosting the Socket.IO bridge for feeders and remote runners and the
 * history API.
 */
export async function startMaster(config: Config, rootLog: Logger): Promise<Master> {
  const log = rootLog.child({ component: 'master' });
  const releasers = new Releasers(log);
  let root!: ProcessRoot;
  const port = await releasers.guard(async () => {
    const connection = await connectService(config, 'master', releasers);
    processOutageLog().logTo(rootLog);
    // Without MongoDB at start the master still starts: the archiver retries until it answers.
    const store = config.mongoUrl ? new ArchiveStore(config.mongoUrl, log) : undefined;
    if (store) releasers.add(() => store.close());
    // Built once here and passed down; closed after everything that uses them.
    const components = new Components({ config, connection, log, identityArchive: store });
    releasers.add(() => components.close());
    root = { connection, components };
    const client = new TaskClient(config, connection, { components });
    releasers.add(() => client.close());
    const { gates, queues, keys, registry } = components;
    gates.start(connection);
    const watcher = new OutcomeWatcher({
      queue: config.queue,
      prefix: config.prefix,
      connection,
      components,
      log,
    });
    releasers.add(() => watcher.close());
    // What finished while no master watched is read before the archiver may remove it.
    await watcher.caughtUp;

    const archiver = new Archiver({
      connection,
      prefix: config.prefix,
      owner: components.instanceId,
      queues: [queues.get()],
      store,
      keep: config.keep,
      batch: config.archiveBatch,
      log: rootLog,
    }).start();
    releasers.add(() => archiver.close());
    if (config.identityRetentionMs !== undefined) {
      const oldestUnarchived = async () => {
        const lag = await archiver.lag();
        return lag.enabled && lag.oldestAgeMs !== undefined ? Date.now() - lag.oldestAgeMs : undefined;
      };
      const retention = new IdentityRetention({
        connection,
        keys,
        retentionMs: config.identityRetentionMs,
        oldestUnarchived,
        log: rootLog,
      }).start();
      releasers.add(() => retention.close());
    }

    // An invalid schedule stops start-up here, naming the schedule and the field.
    const schedules = await new Schedules({ config, connection, client, log: rootLog }).start();
    releasers.add(() => schedules.close());

    const history = new History(client, queues, store);
    const knownQueues = async () =>
      [...new Set([config.queue, ...(await registry.live()).flatMap((c) => c.queues)])].sort();
    const lag = () => archiver.lag();
    const routeContext = {
      config,
      log: rootLog,
      connection,
      client,
      components,
      history,
      store,
      lag,
      registry,
      queues: knownQueues,
    };
    const http = await buildMasterHttp(routeContext);
    const httpServer = http.server;
    httpServer.on('error', (err) => log.error({ err }, 'http server error'));
    releasers.add(() => closeHttpApp(http));
    // The bridge attaches before the port opens, so no client meets a server without Socket.IO.
    const archived = store ? async (id: string, queue: string) => store.get(documentId(queue, id)) : undefined;
    const bridge = await startBridge({ config, connection, client, components, log: rootLog, httpServer, archived });
    releasers.add(() => bridge.close());
    releasers.add(attachStatusFeed(bridge.io, routeContext));
    return listen(http, config.port, config.host);
  });
  log.info(
    { queue: config.queue, prefix: config.prefix, port, host: config.host, archive: Boolean(config.mongoUrl) },
    'master started',
  );
  return {
    port,
    root,
    close: async () => {
      log.info('master stopping');
      await releasers.release();
    },
  };
}

/**
 * `taskmaster start`: a private Redis when needed, then the master and the workers. Resolves
 * with the Redis URL in use (the private server's when one was started).
 */
export async function start(
  config: Config,
  log: Logger,
  local: Omit<LocalRedisOptions, 'log'> = {},
): Promise<Running & { redisUrl: string; port: number }> {
  const releasers = new Releasers(log);
  return releasers.guard(async () => {
    const redis = await ensureLocalRedis(config, { ...local, log });
    if (redis)
      releasers.add(() => redis.stop().then(() => log.info({ dataDir: redis.dir }, 'private redis-server stopped')));
    const resolved: Config = redis ? Object.freeze({ ...config, redisUrl: redis.url }) : config;
    const master = await startMaster(resolved, log);
    releasers.add(() => master.close());
    // One root for the process: the workers' primary uses the master's connection and components.
    const workers = await startWorkers(resolved, log, master.root);
    releasers.add(() => workers.close());
    return { redisUrl: resolved.redisUrl, port: master.port, close: () => releasers.release() };
  });
}
