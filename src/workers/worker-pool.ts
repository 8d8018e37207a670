import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { Job, UnrecoverableError } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { TaskTimeoutError } from '../errors.ts';
import { Cancellations, CANCELLED_REASON } from '../tasks/cancellations.ts';
import { Gates } from '../tasks/gates.ts';
import { Outcomes } from '../tasks/outcomes.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import type { RunInfo } from './task-worker.ts';
import { RESOLVED_CONFIG_ENV, type ToPrimary, type ToWorker } from './worker-process.ts';

export interface WorkerPoolOptions {
  config: Config;
  connection: Redis;
  client: TaskClient;
  log: Logger;
  /** @defaultValue config.workers */
  processes?: number;
  /** How long a stopping pool lets runs finish. @defaultValue 30000 */
  graceMs?: number;
  /** How long after its timeout (or a cancel) a run may take to stop before its process is killed. @defaultValue 2000 */
  killGraceMs?: number;
  /** Lock length the primary renews for runs in its processes. @defaultValue 10000 */
  lockDurationMs?: number;
}

interface Slot {
  index: number;
  /** Set when the process was asked to restart (a lingering run), so its exit is no crash. */
  recycling?: boolean;
  proc?: ClusterWorker;
  crashes: number;
  startedAt: number;
  runs: Map<string, { run: RunInfo; timer: NodeJS.Timeout }>;
}

const ENTRY = fileURLToPath(new URL('./worker-entry.ts', import.meta.url));

/**
 * The node:cluster primary: forks one worker process per slot and replaces any that dies (with
 * a growing back-off so a crash loop does not spin). It also watches every run: a run still
 * going `killGraceMs` after its timeout — a task blocking the event loop, or one ignoring its
 * abort signal — gets its process killed and replaced, and its attempt failed with a timeout
 * error (retried per its policy). It renews the locks of runs in its processes, so a busy event
 * loop does not make BullMQ think a job stalled.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly log: Logger;
  private stopping = false;
  private lockTimer?: NodeJS.Timeout;
  private readonly outcomes: Outcomes;
  private readonly gates: Gates;
  private readonly cancellations: Cancellations;
  private subscriber?: Redis;

  constructor(private readonly opts: WorkerPoolOptions) {
    this.log = opts.log.child({ component: 'worker-pool' });
    this.gates = new Gates({ connection: opts.connection, prefix: opts.config.prefix, store: opts.client.store, log: this.log });
    this.outcomes = new Outcomes(opts.client.store, this.gates);
    this.cancellations = new Cancellations(opts.connection, opts.config.prefix, this.gates, this.outcomes);
  }

  private get killGraceMs(): number {
    return this.opts.killGraceMs ?? 2000;
  }

  start(): void {
    // Worker processes load TypeScript the way the primary does: through tsx, found from here.
    cluster.setupPrimary({ exec: ENTRY, execArgv: ['--import', import.meta.resolve('tsx')], silent: false });
    const n = this.opts.processes ?? this.opts.config.workers;
    for (let i = 0; i < n; i++) {
      const slot: Slot = { index: i, crashes: 0, startedAt: 0, runs: new Map() };
      this.slots.push(slot);
      this.fork(slot);
    }
    const lockMs = this.opts.lockDurationMs ?? 10_000;
    this.lockTimer = setInterval(() => void this.renewLocks(lockMs), lockMs / 2);
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
    });
    slot.proc = proc;
    slot.startedAt = Date.now();
    proc.on('message', (msg: ToPrimary) => this.onMessage(slot, msg));
    // A send to a process that has just died fails asynchronously, as an 'error' event that
    // would crash the primary if nobody listened. Its exit is handled on 'exit'.
    proc.on('error', (err) => this.log.warn({ err, pid: proc.process.pid }, 'worker process channel error'));
    proc.on('exit', (code, signal) => this.onExit(slot, proc, code, signal));
  }

  private onMessage(slot: Slot, msg: ToPrimary): void {
    if (msg.t === 'runs') {
      // Ends first: a job that ended and was fetched again in the same turn is running.
      for (const jobId of msg.ended) {
        clearTimeout(slot.runs.get(jobId)?.timer);
        slot.runs.delete(jobId);
      }
      for (const run of msg.started) {
        const timer = setTimeout(() => void this.overrun(slot, run, 'timeout'), run.timeoutMs + this.killGraceMs);
        slot.runs.set(run.jobId, { run, timer });
      }
    } else if (msg.t === 'recycle' && slot.proc && !slot.recycling) {
      slot.recycling = true;
      this.log.warn({ pid: slot.proc.process.pid, jobId: msg.jobId }, 'an aborted run is still going; replacing its worker process');
      slot.proc.send({ t: 'shutdown', graceMs: this.opts.graceMs ?? 30_000 } satisfies ToWorker);
    }
  }

  /** A run that did not stop in time: kill its process, then fail its attempt. */
  private async overrun(slot: Slot, run: RunInfo, why: 'timeout' | 'cancel'): Promise<void> {
    if (!slot.runs.has(run.jobId) || !slot.proc) return;
    slot.runs.delete(run.jobId);
    const pid = slot.proc.process.pid;
    this.log.error({ jobId: run.jobId, pid, why }, 'run did not stop; killing its worker process');
    slot.proc.process.kill('SIGKILL');
    const err =
      why === 'timeout'
        ? new TaskTimeoutError(`task exceeded its timeout of ${run.timeoutMs} ms and did not stop; worker process ${pid} was killed`)
        : new UnrecoverableError(CANCELLED_REASON);
    await this.failRun(run, err);
    if (why === 'cancel') await this.cancellations.done(run.jobId);
  }

  /** Fails one attempt of a run whose process is gone; BullMQ retries it per its policy. */
  private async failRun(run: RunInfo, err: Error): Promise<void> {
    try {
      const job = await Job.fromId(this.opts.client.queue(run.queue), run.jobId);
      if (!job) return;
      await job.moveToFailed(err, run.token, false);
      if ((await job.getState()) === 'failed') {
        await this.outcomes.record('failed', job as Job & { id: string }, err instanceof UnrecoverableError ? err.message : err.message);
      }
    } catch (e) {
      // The lock was lost meanwhile (another process took the job): nothing left to fail.
      this.log.warn({ err: e, jobId: run.jobId }, 'could not fail the attempt of a killed run');
    }
  }

  private onExit(slot: Slot, proc: ClusterWorker, code: number | null, signal: string | null): void {
    if (slot.proc !== proc) return;
    slot.proc = undefined;
    const orphans = [...slot.runs.values()];
    slot.runs.clear();
    for (const { run, timer } of orphans) {
      clearTimeout(timer);
      void this.failRun(run, new Error(`worker process ${proc.process.pid} exited (${signal ?? code}) while running this task`));
    }
    if (this.stopping) return;
    const lived = Date.now() - slot.startedAt;
    if (slot.recycling) slot.crashes = 0;
    else slot.crashes = lived > 60_000 ? 1 : slot.crashes + 1;
    slot.recycling = false;
    const delay = slot.crashes ? Math.min(30_000, 250 * 2 ** (slot.crashes - 1)) : 0;
    this.log.warn({ pid: proc.process.pid, code, signal, restartInMs: delay }, 'worker process exited; replacing it');
    setTimeout(() => !this.stopping && this.fork(slot), delay).unref();
  }

  private async renewLocks(lockMs: number): Promise<void> {
    for (const slot of this.slots) {
      for (const { run } of slot.runs.values()) {
        await new Job(this.opts.client.queue(run.queue), '', {}, {}, run.jobId).extendLock(run.token, lockMs).catch(() => undefined);
      }
    }
  }

  /** A cancel reaches the process running the task, which aborts it; if it does not stop, kill. */
  private listenForCancels(): void {
    const sub = (this.subscriber = this.opts.connection.duplicate());
    sub.on('error', () => {});
    void sub.subscribe(this.cancellations.channel).catch(() => undefined);
    sub.on('message', (_c, id: string) => {
      for (const slot of this.slots) {
        const entry = slot.runs.get(id);
        if (entry) setTimeout(() => void this.overrun(slot, entry.run, 'cancel'), this.killGraceMs).unref();
      }
    });
  }

  /** Stops every process gracefully (runs in flight finish within `graceMs`), then resolves. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.lockTimer);
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
    for (const s of this.slots) for (const { timer } of s.runs.values()) clearTimeout(timer);
    this.log.info('worker pool stopped');
  }

  /** Kills every process at once (a second signal); their runs are recovered as stalled jobs. */
  kill(): void {
    this.stopping = true;
    for (const s of this.slots) s.proc?.process.kill('SIGKILL');
  }
}
