import { Job } from 'bullmq';
import { loadConfig, type Config } from '../config/config.ts';
import { createLogger } from '../logger.ts';
import { createRedis } from '../queue/connection.ts';
import { TaskClient } from '../tasks/task-client.ts';
import { TaskWorker } from './task-worker.ts';

/** Environment variable through which the pool hands its resolved Config to its processes. */
export const RESOLVED_CONFIG_ENV = 'TASKMASTER_RESOLVED_CONFIG';

/**
 * Messages between the pool's primary and a worker process (over the cluster IPC channel).
 * `ready` names the process's BullMQ worker, whose id begins the lock token of every job it
 * takes (see HeldRuns); `beat` comes every BEAT_MS while the event loop turns.
 */
export type ToPrimary = { t: 'ready'; workerId: string } | { t: 'beat' } | { t: 'recycle'; jobId: string };
export type ToWorker = { t: 'shutdown'; graceMs: number };

/** How often a worker process tells the primary that its event loop is turning. */
export const BEAT_MS = 250;

/**
 * One worker process of the pool: a TaskWorker that tells the primary which BullMQ worker it
 * is and then beats while its event loop turns. Its runs are not reported one by one: when the
 * beats stop, the primary reads them from Redis (see HeldRuns), kills the process if one is
 * past its timeout, and keeps the others' locks alive meanwhile. On `shutdown` it stops taking
 * jobs, lets runs finish within the grace period, and gives back any still running so that
 * another process picks them up; then it exits 0.
 */
export async function runWorkerProcess(): Promise<void> {
  const resolved = process.env[RESOLVED_CONFIG_ENV];
  const config: Config = resolved ? Object.freeze(JSON.parse(resolved)) : loadConfig();
  const slot = process.env.TASKMASTER_WORKER_SLOT ?? '0';
  const log = createLogger({ level: config.logLevel }).child({ component: 'worker-process', slot });
  const send = (msg: ToPrimary) => process.connected && process.send?.(msg);
  const connection = createRedis(config.redisUrl, { name: `worker-${slot}` });
  const client = new TaskClient(config, connection);
  const worker = new TaskWorker({
    config,
    connection,
    client,
    log,
    // The primary's lock length: it renews these locks while this event loop is blocked.
    lockDurationMs: Number(process.env.TASKMASTER_LOCK_MS ?? 10_000),
    hooks: {
      // An aborted run still going: ask to be replaced (other runs here finish first).
      onLinger: (run) => send({ t: 'recycle', jobId: run.jobId }),
    },
  });
  // Named before the first job is taken, so the primary can find every job this process holds.
  send({ t: 'ready', workerId: worker.worker.id });
  setInterval(() => send({ t: 'beat' }), BEAT_MS).unref();
  worker.start();

  let stopping = false;
  const shutdown = async (graceMs: number) => {
    // One shutdown however many ask (the primary, and a service manager signalling the whole
    // group): only the primary decides that a second signal means "now", and it kills.
    if (stopping) return;
    stopping = true;
    log.info({ running: worker.running().length, graceMs }, 'stopping: no new jobs, waiting for runs in flight');
    const graceful = worker.close().then(() => true);
    const timedOut = new Promise<boolean>((r) => setTimeout(() => r(false), graceMs).unref());
    if (!(await Promise.race([graceful, timedOut]))) {
      // Give unfinished runs back (no attempt spent) so another process takes them now.
      const unfinished = worker.running();
      await Promise.all(
        unfinished.map((run) =>
          new Job(client.queue(run.queue), '', {}, {}, run.jobId).moveToWait(run.token).catch(() => undefined),
        ),
      );
      log.warn({ handedBack: unfinished.length }, 'grace period over: handed unfinished runs back');
    }
    await client.close().catch(() => undefined);
    connection.disconnect();
    process.exit(0);
  };
  process.on('message', (msg: ToWorker) => {
    if (msg?.t === 'shutdown') void shutdown(msg.graceMs);
  });
  // The primary coordinates shutdown; a terminal's Ctrl-C reaches the whole process group.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => void shutdown(Number(process.env.TASKMASTER_GRACE_MS ?? 30_000)));
  process.on('disconnect', () => void shutdown(0));
}
