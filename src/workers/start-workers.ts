import type { Logger } from 'pino';
import { Components, type ProcessRoot } from '../components.ts';
import type { Config } from '../config/config.ts';
import { processOutageLog } from '../queue/outage-log.ts';
import { Releasers } from '../releasers.ts';
import { connectService, type Running } from '../service.ts';
import { WorkerPool } from './worker-pool.ts';

/**
 * The workers (`taskmaster workers`): a node:cluster primary with `config.workers` processes,
 * each running `config.concurrency` tasks at a time (see worker-pool.ts). The root of the
 * primary: it builds the components once and loads nothing of the master's (no MongoDB client,
 * Socket.IO or HTTP server). Given the root of a master in the same process (`taskmaster
 * start`), it uses that one's connection and components, which their builder closes.
 */
export async function startWorkers(config: Config, rootLog: Logger, root?: ProcessRoot): Promise<Running> {
  const log = rootLog.child({ component: 'workers' });
  const releasers = new Releasers(log);
  await releasers.guard(async () => {
    const { connection, components } = root ?? (await ownRoot(config, rootLog, log, releasers));
    const pool = new WorkerPool({ config, connection, components, log: rootLog });
    pool.start();
    releasers.add(() => pool.stop());
  });
  log.info(
    {
      queue: config.queue,
      prefix: config.prefix,
      tasksDir: config.tasksDir,
      processes: config.workers,
      concurrency: config.concurrency,
    },
    'workers started',
  );
  return {
    close: async () => {
      log.info('workers stopping');
      await releasers.release();
    },
  };
}

async function ownRoot(config: Config, rootLog: Logger, log: Logger, releasers: Releasers): Promise<ProcessRoot> {
  const connection = await connectService(config, 'workers', releasers);
  processOutageLog().logTo(rootLog);
  const components = new Components({ config, connection, log });
  releasers.add(() => components.close());
  return { connection, components };
}
