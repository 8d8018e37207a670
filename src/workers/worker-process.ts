import { Job } from 'bullmq';
import { loadConfig, type Config } from '../config/config.ts';
import { createLogger } from '../logger.ts';
import { createRedis } from '../queue/connection.ts';
import { TaskClient } from '../tasks/task-client.ts';
import { TaskWorker, type RunInfo } from './task-worker.ts';

/** Environment variable through which the pool hands its resolved Config to its processes. */
export const RESOLVED_CONFIG_ENV = 'TASKMASTER_RESOLVED_CONFIG';

/** Messages between the pool's primary and a worker process (over the cluster IPC channel). */
export type ToPrimary = { t: 'runs'; started: RunInfo[]; ended: string[] } | { t: 'ready' } | { t: 'recycle'; jobId: string };
export type ToWorker = { t: 'shutdown'; graceMs: number };

/**
 * One worker process of the pool: a TaskWorker that reports its runs' starts and ends to the
 * primary (which enforces hard timeouts and keeps locks alive while this process's event loop
 * is busy). On `shutdown` it stops taking jobs, lets runs finish within the grace period, and
 * gives back any still running so that another process picks them up; then it exits 0.
 */
export async function runWorkerProcess(): Promise<void> {
  const resolved = process.env[RESOLVED_CONFIG_ENV];
  const config: Config = resolved ? Object.freeze(JSON.parse(resolved)) : loadConfig();
  const slot = process.env.TASKMASTER_WORKER_SLOT ?? '0';
  const log = createLogger({ level: config.logLevel }).child({ component: 'worker-process', slot });
  const send = (msg: ToPrimary) => process.connected && process.send?.(msg);
  const connection = createRedis(config.redisUrl, { name: `worker-${slot}` });
  const client = new TaskClient(config, connection);
  const active = new Map<string, RunInfo>();
  const reports = new RunReports(send);
  const worker = new TaskWorker({
    config,
    connection,
    client,
    log,
    hooks: {
      onStart: (run) => {
        active.set(run.jobId, run);
        return reports.started(run);
      },
      onEnd: (run) => {
        active.delete(run.jobId);
        reports.ended(run.jobId);
      },
      // An aborted run still going: ask to be replaced (other runs here finish first).
      onLinger: (run) => send({ t: 'recycle', jobId: run.jobId }),
    },
  }).start();

  let stopping = false;
  const shutdown = async (graceMs: number) => {
    // One shutdown however many ask (the primary, and a service manager signalling the whole
    // group): only the primary decides that a second signal means "now", and it kills.
    if (stopping) return;
    stopping = true;
    log.info({ running: active.size, graceMs }, 'stopping: no new jobs, waiting for runs in flight');
    const graceful = worker.close().then(() => true);
    const timedOut = new Promise<boolean>((r) => setTimeout(() => r(false), graceMs).unref());
    if (!(await Promise.race([graceful, timedOut]))) {
      // Give unfinished runs back (no attempt spent) so another process takes them now.
      await Promise.all(
        [...active.values()].map((run) =>
          new Job(client.queue(run.queue), '', {}, {}, run.jobId).moveToWait(run.token).catch(() => undefined),
        ),
      );
      log.warn({ handedBack: active.size }, 'grace period over: handed unfinished runs back');
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
  send({ t: 'ready' });
}

/**
 * The starts and ends of runs in one turn of the event loop, told to the primary in one message
 * at the end of the turn rather than two messages per run: with many short runs, the channel
 * and the primary's reading of it were a large share of each run's cost. A run starts only
 * once its start has been sent: a task that then blocks this process's event loop (which would
 * keep any later message from leaving) is already known to the primary, which kills the
 * process at the run's timeout. Ends of earlier runs leave with it, so the primary never holds
 * a finished run as running while a blocked one keeps the process from saying so.
 */
export class RunReports {
  private start: RunInfo[] = [];
  private end: string[] = [];
  private sent?: Promise<void>;

  constructor(private readonly send: (msg: ToPrimary) => unknown) {}

  /** Resolves once the start has been sent. */
  started(run: RunInfo): Promise<void> {
    this.start.push(run);
    return this.flushSoon();
  }

  ended(jobId: string): void {
    this.end.push(jobId);
    void this.flushSoon();
  }

  private flushSoon(): Promise<void> {
    return (this.sent ??= new Promise((resolve) =>
      setImmediate(() => {
        this.sent = undefined;
        const msg: ToPrimary = { t: 'runs', started: this.start, ended: this.end };
        this.start = [];
        this.end = [];
        this.send(msg);
        resolve();
      }),
    ));
  }
}
