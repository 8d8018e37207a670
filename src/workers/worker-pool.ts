import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { Job, UnrecoverableError } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { TaskTimeoutError } from '../errors.ts';
import { Components } from '../components.ts';
import { CANCELLED_REASON } from '../tasks/cancellations.ts';
import { placeholderJob } from '../queue/bullmq/placeholder-job.ts';
import { Finishing } from '../queue/finishing.ts';
import { isConnectionError } from '../queue/outage-log.ts';
import { taskFromJob } from '../tasks/task.ts';
import { HeldRuns, type HeldRun } from './held-runs.ts';
import { COMPILED } from './typescript-tasks.ts';
import type { RunInfo } from './task-worker.ts';
import { BEAT_MS, RESOLVED_CONFIG_ENV, type ToPrimary, type ToWorker } from './worker-process.ts';

export interface WorkerPoolOptions {
  config: Config;
  connection: Redis;
  /**
   * The process's shared components (see components.ts), which their builder closes.
   * @defaultValue components of the pool's own on `connection`, closed when it stops
   */
  components?: Components;
  log: Logger;
  /** @defaultValue config.workers */
  processes?: number;
  /** How long a stopping pool lets runs finish. @defaultValue 30000 */
  graceMs?: number;
  /** How long a run may take to stop after its timeout or a cancel before its process is killed. @defaultValue 2000 */
  killGraceMs?: number;
  /**
   * How long a run's lock lasts without renewal. A process's own BullMQ worker renews its locks;
   * the primary renews them while the process's event loop is blocked, and every half of it
   * also looks over all processes' runs for one past its timeout. @defaultValue 10000
   */
  lockDurationMs?: number;
}

interface Slot {
  index: number;
  /** Set when the process was asked to restart (a lingering run), so its exit is no crash. */
  recycling?: boolean;
  proc?: ClusterWorker;
  crashes: number;
  startedAt: number;
  /** The id of the process's BullMQ worker (its lock tokens begin with it), once it said. */
  workerId?: string;
  /** When the process last beat (or started). */
  beatAt: number;
  /** When the locks of its runs were last renewed here (while its event loop was blocked). */
  renewedAt: number;
  /** A look at its runs in progress. */
  checking?: Promise<void>;
  /**
   * Its runs as read when it fell silent: a blocked process takes no new jobs, so they are read
   * once per silence, not at every look. Forgotten when it beats again.
   */
  silentRuns?: HeldRun[];
}

/** A process that has not beaten for this long has a blocked event loop: its runs are looked at. */
const SILENT_MS = 4 * BEAT_MS;

const ENTRY = fileURLToPath(new URL(COMPILED ? './worker-entry.js' : './worker-entry.ts', import.meta.url));

/**
 * The node:cluster primary: forks one worker process per slot and replaces any that dies (with
 * a growing back-off so a crash loop does not spin). Processes do not report their runs; the
 * primary reads them from Redis (HeldRuns) when it has to:
 * - a process that stopped beating has a blocked event loop: a run of it still going
 *   `killGraceMs` after its timeout (`while (true) {}`) gets the process killed and replaced,
 *   and its attempt failed with a timeout error (retried per its policy); the others' locks are
 *   renewed meanwhile, so a long synchronous task is not taken for a stalled one;
 * - a process that died: its runs' attempts are failed at once, so they run again now rather
 *   than after BullMQ's stalled-job check;
 * - a cancelled job one of them holds: if it still holds it `killGraceMs` later, it is killed.
 * A run whose process keeps turning is timed out in the process itself (its signal; a run that
 * ignores it makes the process ask to be replaced). Every `lockDurationMs / 2` all processes'
 * runs are looked over too, in case one is past its timeout all the same.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly log: Logger;
  private stopping = false;
  private watchTimer?: NodeJS.Timeout;
  private sweptAt = Date.now();
  /** Jobs whose attempt is being failed here, so that their process's exit does not fail them again. */
  private readonly failing = new Set<string>();
  private readonly held: HeldRuns;
  private readonly parts: Components;
  /** Fails the attempts of runs whose process is gone, as their worker would have. */
  private readonly finishing: Finishing;
  private subscriber?: Redis;

  constructor(private readonly opts: WorkerPoolOptions) {
    this.log = opts.log.child({ component: 'worker-pool' });
    this.parts = opts.components ?? new Components({ config: opts.config, connection: opts.connection, log: this.log });
    this.finishing = new Finishing({ connection: opts.connection, outcomes: this.parts.outcomes, log: this.log });
    this.held = new HeldRuns(opts.connection, opts.config.prefix, opts.config.queue, opts.config.defaults.timeout);
  }

  private get lockMs(): number {
    return this.opts.lockDurationMs ?? 10_000;
  }

  private get killGraceMs(): number {
    return this.opts.killGraceMs ?? 2000;
  }

  start(): void {
    // Worker processes run what the primary runs: the compiled files as they are (with the
    // primary's node options), the TypeScript sources through tsx, found from here.
    const execArgv = COMPILED ? process.execArgv : ['--import', import.meta.resolve('tsx')];
    cluster.setupPrimary({ exec: ENTRY, execArgv, silent: false });
    const n = this.opts.processes ?? this.opts.config.workers;
    for (let i = 0; i < n; i++) {
      const slot: Slot = { index: i, crashes: 0, startedAt: 0, beatAt: 0, renewedAt: 0 };
      this.slots.push(slot);
      this.fork(slot);
    }
    this.watchTimer = setInterval(() => this.watch(), BEAT_MS);
    this.listenForCancels();
    this.log.info({ processes: n, concurrency: this.opts.config.concurrency }, 'worker pool started');
  }

  /** Process ids of the live worker processes (for tests and the status page). */
  pids(): number[] {
    return this.slots.map((s) => s.proc?.process.pid).filter((p): p is number => Boolean(p));
  }

  private fork(slot: Slot): void {
    // Processes run with exactly the primary's resolved configuration (which may differ from
    // the environment: `start` may have started a private redis-server on a port of its own).
    const proc = cluster.fork({
      [RESOLVED_CONFIG_ENV]: JSON.stringify(this.opts.config),
      TASKMASTER_WORKER_SLOT: String(slot.index),
      TASKMASTER_GRACE_MS: String(this.opts.graceMs ?? 30_000),
      TASKMASTER_LOCK_MS: String(this.lockMs),
    });
    slot.proc = proc;
    slot.workerId = undefined;
    slot.startedAt = slot.beatAt = Date.now();
    proc.on('message', (msg: ToPrimary) => this.onMessage(slot, msg));
    // A send to a process that has just died fails asynchronously, as an 'error' event that
    // would crash the primary if nobody listened. Its exit is handled on 'exit'.
    proc.on('error', (err) => this.log.warn({ err, pid: proc.process.pid }, 'worker process channel error'));
    proc.on('exit', (code, signal) => this.onExit(slot, proc, code, signal));
  }

  private onMessage(slot: Slot, msg: ToPrimary): void {
    slot.beatAt = Date.now();
    slot.silentRuns = undefined;
    if (msg.t === 'ready') {
      slot.workerId = msg.workerId;
    } else if (msg.t === 'recycle' && slot.proc && !slot.recycling) {
      slot.recycling = true;
      this.log.warn(
        { pid: slot.proc.process.pid, jobId: msg.jobId },
        'an aborted run is still going; replacing its worker process',
      );
      slot.proc.send({ t: 'shutdown', graceMs: this.opts.graceMs ?? 30_000 } satisfies ToWorker);
    }
  }

  /** Looks at the runs of processes that stopped beating, and every lockMs / 2 at all of them. */
  private watch(): void {
    const now = Date.now();
    const sweep = now - this.sweptAt >= this.lockMs / 2;
    if (sweep) this.sweptAt = now;
    let all: Promise<Map<string, HeldRun[]>> | undefined;
    for (const slot of this.slots) {
      if (!slot.proc || !slot.workerId || slot.checking) continue;
      const silent = now - slot.beatAt > SILENT_MS;
      if (!silent && !sweep) continue;
      // A sweep reads the active jobs once for all processes.
      const workerId = slot.workerId;
      const runs = sweep
        ? (all ??= this.held.byWorker(this.slots.flatMap((s) => (s.proc && s.workerId ? [s.workerId] : [])))).then(
            (m) => m.get(workerId) ?? [],
          )
        : undefined;
      slot.checking = this.check(slot, slot.proc, workerId, silent, runs)
        .catch((err) => {
          if (!this.unreachable(err)) this.log.warn({ err }, 'could not look at the runs of a worker process');
        })
        .finally(() => (slot.checking = undefined));
    }
  }

  /**
   * Kills `proc` if one of its runs (`read`, when a sweep has read them) is past its timeout;
   * renews its locks while it is silent.
   */
  private async check(
    slot: Slot,
    proc: ClusterWorker,
    workerId: string,
    silent: boolean,
    read?: Promise<HeldRun[]>,
  ): Promise<void> {
    const runs = read ? await read : (silent && slot.silentRuns) || (await this.held.of(workerId));
    if (silent && Date.now() - slot.beatAt > SILENT_MS) slot.silentRuns = runs;
    const now = Date.now();
    const over = runs.find((r) => now >= r.processedOn + r.timeoutMs + this.killGraceMs);
    if (over) return this.overrun(slot, proc, over, 'timeout');
    if (!silent || !runs.length || now - slot.renewedAt < this.lockMs / 2) return;
    slot.renewedAt = now;
    this.log.warn(
      { pid: proc.process.pid, jobs: runs.map((r) => r.jobId) },
      'worker process is not answering; keeping the locks of its runs',
    );
    // A lock that cannot be extended is lost already (or Redis is away): the job stalls and is retried.
    await Promise.all(
      runs.map((r) =>
        this.job(r)
          .extendLock(r.token, this.lockMs)
          .catch(() => undefined),
      ),
    );
  }

  private job(run: RunInfo): Job {
    return placeholderJob(this.parts.queues.get(run.queue), run.jobId);
  }

  /** A run that did not stop in time: kill its process, then fail its attempt. */
  private async overrun(slot: Slot, proc: ClusterWorker, run: HeldRun, why: 'timeout' | 'cancel'): Promise<void> {
    if (slot.proc !== proc) return;
    const pid = proc.process.pid;
    this.log.error({ jobId: run.jobId, pid, why }, 'run did not stop; killing its worker process');
    this.failing.add(run.jobId);
    try {
      proc.process.kill('SIGKILL');
      const err =
        why === 'timeout'
          ? new TaskTimeoutError(
              `task exceeded its timeout of ${run.timeoutMs} ms and did not stop; worker process ${pid} was killed`,
            )
          : new UnrecoverableError(CANCELLED_REASON);
      await this.failRun(run, err);
    } finally {
      this.failing.delete(run.jobId);
    }
    if (why === 'cancel') await this.parts.cancellations.done(run.jobId);
  }

  /** Fails one attempt of a run whose process is gone; BullMQ retries it per its policy. */
  private async failRun(run: RunInfo, err: Error): Promise<void> {
    try {
      const job = await Job.fromId(this.parts.queues.get(run.queue), run.jobId);
      if (!job) return;
      await this.finishing.fail(job, run.token, err, taskFromJob(job));
    } catch (e) {
      // The lock was lost meanwhile (another process took the job): nothing left to fail.
      this.log.warn({ err: e, jobId: run.jobId }, 'could not fail the attempt of a killed run');
    }
  }

  private onExit(slot: Slot, proc: ClusterWorker, code: number | null, signal: string | null): void {
    if (slot.proc !== proc) return;
    slot.proc = undefined;
    if (slot.workerId)
      void this.failOrphans(
        slot.workerId,
        `worker process ${proc.process.pid} exited (${signal ?? code}) while running this task`,
      );
    slot.workerId = undefined;
    if (this.stopping) return;
    const lived = Date.now() - slot.startedAt;
    if (slot.recycling) slot.crashes = 0;
    else slot.crashes = lived > 60_000 ? 1 : slot.crashes + 1;
    slot.recycling = false;
    const delay = slot.crashes ? Math.min(30_000, 250 * 2 ** (slot.crashes - 1)) : 0;
    this.log.warn({ pid: proc.process.pid, code, signal, restartInMs: delay }, 'worker process exited; replacing it');
    setTimeout(() => !this.stopping && this.fork(slot), delay).unref();
  }

  /** Fails the attempts of the runs a process held when it died (retried per their policy). */
  private async failOrphans(workerId: string, why: string): Promise<void> {
    try {
      const runs = await this.held.of(workerId);
      await Promise.all(runs.filter((r) => !this.failing.has(r.jobId)).map((r) => this.failRun(r, new Error(why))));
    } catch (err) {
      // Redis is away: BullMQ's stalled-job check gives the jobs back once their locks expire.
      const why = isConnectionError(err) ? { reason: (err as Error).message } : { err };
      this.log.warn({ ...why, workerId }, 'could not fail the runs of a worker process that exited');
    }
  }

  /** True (after a debug line) for an error that only says Redis is away: the outage log tells that. */
  private unreachable(err: unknown): boolean {
    if (!isConnectionError(err)) return false;
    this.log.debug({ reason: (err as Error).message }, 'Redis unreachable');
    return true;
  }

  /** A cancel reaches the process running the task, which aborts it; if it does not stop, kill. */
  private listenForCancels(): void {
    const sub = (this.subscriber = this.opts.connection.duplicate());
    void sub
      .subscribe(this.parts.cancellations.channel)
      .catch((err) => this.log.warn({ err }, 'could not subscribe to cancel requests'));
    sub.on(
      'message',
      (_c, id: string) =>
        void this.cancelled(id).catch((err) => this.log.warn({ err, jobId: id }, 'could not look for a cancelled run')),
    );
  }

  /** A cancelled job one of these processes holds: killed if it still holds it after the grace. */
  private async cancelled(jobId: string): Promise<void> {
    const run = await this.held.one(jobId);
    if (!run) return;
    const slot = this.slots.find((s) => s.workerId && run.token.startsWith(`${s.workerId}:`));
    if (!slot?.proc) return;
    const proc = slot.proc;
    await new Promise((r) => setTimeout(r, this.killGraceMs).unref());
    const still = await this.held.one(jobId);
    if (still?.token === run.token) await this.overrun(slot, proc, still, 'cancel');
  }

  /** Stops every process gracefully (runs in flight finish within `graceMs`), then resolves. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.watchTimer);
    this.subscriber?.disconnect();
    const graceMs = this.opts.graceMs ?? 30_000;
    const exits = this.slots
      .filter((s) => s.proc)
      .map(
        (s) =>
          new Promise<void>((resolve) => {
            const proc = s.proc!;
            proc.once('exit', () => resolve());
            // A signal, not an IPC message: a process still starting has no 'message' listener
            // yet (a message would be lost), and SIGTERM simply ends it (it has no runs); a
            // started process handles SIGTERM with the grace it was forked with (graceMs).
            proc.process.kill('SIGTERM');
            setTimeout(() => proc.process.kill('SIGKILL'), graceMs + 5000).unref();
          }),
      );
    await Promise.all(exits);
    if (!this.opts.components) await this.parts.close();
    this.log.info('worker pool stopped');
  }

  /** Kills every process at once (a second signal); their runs are recovered as stalled jobs. */
  kill(): void {
    this.stopping = true;
    for (const s of this.slots) s.proc?.process.kill('SIGKILL');
  }
}
