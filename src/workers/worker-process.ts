import { loadConfig, type Config } from '../config/config.ts';
import { createLogger } from '../logger.ts';
import { abandonRedis, createRedis } from '../queue/connection.ts';
import { placeholderJob } from '../queue/bullmq/placeholder-job.ts';
import { processOutageLog } from '../queue/outage-log.ts';
import { Components } from '../components.ts';
import { TaskClient } from '../tasks/task-client.ts';
import { TaskWorker, type RunInfo } from './task-worker.ts';

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

/** How often a stopping process looks whether its runs have ended. */
const STOP_POLL_MS = 50;

/** How long a stop waits for BullMQ's close once Redis is abandoned (its commands fail at once). */
const ABANDONED_CLOSE_MS = 2000;

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
  const rootLog = createLogger({ level: config.logLevel }).child({ slot });
  const log = rootLog.child({ component: 'worker-process' });
  const outages = processOutageLog().logTo(rootLog);
  const send = (msg: ToPrimary) => process.connected && process.send?.(msg);
  const connection = createRedis(config.redisUrl, { name: `worker-${slot}` });
  // Built once for the process, on the connection its BullMQ worker finishes jobs on.
  const components = new Components({ config, connection, log });
  const client = new TaskClient(config, connection, { components });
  const worker = new TaskWorker({
    config,
    connection,
    client,
    components,
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

  // Runs in flight when Redis went away or the stop began, until BullMQ confirms their end was
  // written ('completed'/'failed'): those left were neither finished in Redis nor handed back.
  // Watched only from then on, so that runs in normal times pay nothing for it.
  const unconfirmed = new Set<string>();
  let watchingEnds = false;
  const watchEnds = () => {
    for (const run of worker.running()) unconfirmed.add(run.jobId);
    if (watchingEnds) return;
    watchingEnds = true;
    const confirmed = (job?: { id?: string }) => job?.id && unconfirmed.delete(job.id);
    worker.worker.on('completed', confirmed);
    worker.worker.on('failed', confirmed);
  };
  outages.whenUnreachable(watchEnds);

  let stopping = false;
  const shutdown = async (graceMs: number) => {
    // One shutdown however many ask (the primary, and a service manager signalling the whole
    // group): only the primary decides that a second signal means "now", and it kills.
    if (stopping) return;
    stopping = true;
    log.info({ running: worker.running().length, graceMs }, 'stopping: no new jobs, waiting for runs in flight');
    watchEnds();
    let closed = false;
    const closing = worker
      .close()
      .then(() => components.close())
      .then(
        () => (closed = true),
        (err) => log.warn({ err }, 'error while closing the worker'),
      );
    // BullMQ's close also waits for Redis, without end while it is away: what a stop waits for is
    // the runs in flight, for the grace period at most.
    const deadline = Date.now() + graceMs;
    while (!closed && Date.now() < deadline && (worker.running().length || !outages.unreachable)) {
      await new Promise((r) => setTimeout(r, STOP_POLL_MS));
    }
    if (!closed) {
      const unfinished = worker.running();
      const notGiven = await handBack(unfinished);
      // With Redis away, runs that ended unconfirmed were not handed back either.
      const notHandedBack = outages.unreachable ? [...new Set([...notGiven, ...unconfirmed])] : notGiven;
      if (unfinished.length && !outages.unreachable) {
        log.warn({ handedBack: unfinished.length - notGiven.length }, 'grace period over: handed unfinished runs back');
      }
      if (outages.unreachable) {
        // Results of runs that ended while Redis was away were not written either: their jobs
        // stay active in Redis until BullMQ's stalled-job check gives them back.
        log.warn(
          { notHandedBack, downForMs: outages.downForMs },
          'Redis is unreachable: stopping without it; runs not handed back and results not written are given ' +
            "back by BullMQ's stalled-job check once Redis is back",
        );
      } else if (notHandedBack.length) {
        log.warn({ notHandedBack }, "could not hand these runs back; BullMQ's stalled-job check will");
      }
      abandonRedis(connection);
      await Promise.race([closing, new Promise((r) => setTimeout(r, ABANDONED_CLOSE_MS).unref())]);
    }
    // Stopping: the connection is dropped just below whether or not the client closed cleanly.
    await client.close().catch(() => undefined);
    connection.disconnect();
    process.exit(0);
  };
  /** Gives runs back (no attempt spent) so that another process takes them now; returns those it could not. */
  const handBack = async (runs: RunInfo[]): Promise<string[]> => {
    if (outages.unreachable) return runs.map((r) => r.jobId);
    const given = await Promise.all(
      runs.map((run) =>
        placeholderJob(components.queues.get(run.queue), run.jobId)
          .moveToWait(run.token)
          .then(
            () => true,
            () => false,
          ),
      ),
    );
    return runs.filter((_, i) => !given[i]).map((r) => r.jobId);
  };
  process.on('message', (msg: ToWorker) => {
    if (msg?.t === 'shutdown') void shutdown(msg.graceMs);
  });
  // The primary coordinates shutdown; a terminal's Ctrl-C reaches the whole process group.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => void shutdown(Number(process.env.TASKMASTER_GRACE_MS ?? 30_000)));
  process.on('disconnect', () => void shutdown(0));
}
