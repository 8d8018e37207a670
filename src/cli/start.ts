import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import type { Running } from '../service.ts';
import type { Env } from './context.ts';

type Service = 'start' | 'startMaster' | 'startWorkers';
type Start = (config: Config, log: Logger) => Promise<Running>;

/**
 * Each service's root, loaded when it runs: --help and bad arguments answer without loading
 * BullMQ, and `workers` without the master's MongoDB client, Socket.IO and HTTP server.
 */
const SERVICES: Record<Service, () => Promise<Start>> = {
  start: async () => (await import('../app.ts')).start,
  startMaster: async () => (await import('../app.ts')).startMaster,
  startWorkers: async () => (await import('../workers/start-workers.ts')).startWorkers,
};

async function serve(env: Env, service: Service): Promise<void> {
  const [startService, { runUntilSignal }, { loadConfig }, { createLogger }] = await Promise.all([
    SERVICES[service](),
    import('../service.ts'),
    import('../config/config.ts'),
    import('../logger.ts'),
  ]);
  const config = loadConfig(env);
  const log = createLogger({ level: config.logLevel });
  const running = await startService(config, log);
  await runUntilSignal(running, log);
}

/** `start`, `master` and `workers`: long-running services that stop gracefully on SIGINT/SIGTERM. */
export function registerStart(program: Command, env: Env): void {
  program
    .command('start')
    .summary('run the master and the workers on this machine')
    .description(
      'Run the master and the workers on this machine until SIGINT/SIGTERM. Without REDIS_URL, when\n' +
        'nothing answers on 127.0.0.1:6379 and redis-server is on PATH, a private Redis is started with\n' +
        'its data under TASKMASTER_DATA_DIR/redis (default ./.taskmaster/redis).',
    )
    .action(() => serve(env, 'start'));
  program
    .command('master')
    .summary('run only the master')
    .description(
      'Run the master until SIGINT/SIGTERM. One HTTP port (TASKMASTER_PORT, default 3232) serves the ' +
        'Socket.IO protocol of the 2015/2016 taskmaster for feeders and remote runners (socket.io-client ' +
        '1.x to 4.x) and the JSON API (/api/...). The master also runs the gate worker and reconciler for ' +
        'dependencies and the archiver; `taskmaster workers` runs the tasks.',
    )
    .action(() => serve(env, 'startMaster'));
  program
    .command('workers')
    .summary('run only the workers')
    .description(
      'Run workers that take tasks from the queue and run modules from the tasks folder, until SIGINT/SIGTERM.',
    )
    .action(() => serve(env, 'startWorkers'));
}
