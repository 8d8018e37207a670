import { randomBytes } from 'node:crypto';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { TaskTimeoutError } from '../errors.ts';
import { CANCELLED_REASON, type Cancellations } from '../tasks/cancellations.ts';
import type { Outcomes } from '../tasks/outcomes.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { taskFromJob, type JobTask } from '../tasks/task.ts';
import { passIdentityKeys } from '../workers/finish-script.ts';
import { refusalBeforeHandOut } from './hand-out-checks.ts';
import { legacyFromJob, type LegacyTask, type TaskRef } from './legacy-shape.ts';
import { runnerLabel, type Peer, type Presence } from './presence.ts';
import { QueueFetcher, type HandOutcome } from './queue-fetcher.ts';
import { RunnerBackoff } from './runner-backoff.ts';

export interface RunnerLeasesOptions {
  config: Pick<Config, 'queue' | 'prefix' | 'defaults'>;
  connection: Redis;
  client: TaskClient;
  outcomes: Outcomes;
  cancellations: Cancellations;
  presence: Presence;
  log: Logger;
  /** Sends a task to a runner (`task:send` and `task:run`) or tells it to stop (`task:cancel`). */
  send(peer: Peer, event: 'task:send' | 'task:run' | 'task:cancel', task: LegacyTask): void;
  /** How long a lease's lock lasts without renewal (renewed at half that while the runner is connected). @defaultValue 10000 */
  lockDurationMs?: number;
  /** @defaultValue 5000 */
  stalledIntervalMs?: number;
  /** @defaultValue 64 */
  parallelFetches?: number;
  /**
   * Whether `connection` finishes jobs with the finishing script that records outcomes
   * (workers/finish-script.ts): then jobs that carry their identity keys are recorded there,
   * in the same step as their completion or failure, and not by a command of their own.
   */
  recordsInScript?: boolean;
  /**
   * A task started this many times in all (attempts, runners that disconnected, stalls) fails
   * for good instead of being handed out again, so a task that kills its runner cannot loop.
   * @defaultValue 20
   */
  maxStarts?: number;
  /**
   * Back-off of a runner whose connection dropped tasks it held, doubling per drop up to
   * `maxDropBackoffMs` (see RunnerBackoff). @defaultValue 1000
   */
  dropBackoffMs?: number;
  /** @defaultValue 30000 */
  maxDropBackoffMs?: number;
}

/** How long a cancel announcement for a job not held here is remembered. */
const ANNOUNCED_KEPT_MS = 60_000;

/** A job a runner holds: the lock is ours (the token), the work is the runner's. */
export interface Lease {
  /** Short id sent as `assigned.lease`, so a report about an earlier hand-out of the same job is told apart. */
  readonly id: string;
  readonly job: Job;
  readonly token: string;
  readonly peer: Peer;
  readonly task: LegacyTask;
  /** The task's identity keys, computed once at hand-out, for recording its outcome. */
  readonly keys: Pick<JobTask, 'taskKey' | 'dependencyKey' | 'keysStored'>;
  readonly timer: NodeJS.Timeout;
}

/**
 * Remote runners' leases. A runner has the slots it declared (one when it declared none, as
 * every 2016 runner); a `task:request` puts its free slots in the queue's fetcher, which takes
 * the next job for each, and the runner holds a job for as long as its socket is connected (the
 * lock is renewed meanwhile). A lease ends exactly once: `task:done` completes the job,
 * `task:error` fails the attempt (retried per policy), its timeout fails the attempt and sends
 * `task:cancel`, a cancel request fails the job for good, and a disconnect gives the job back to
 * the queue without spending an attempt. Whatever arrives for a lease that has ended is ignored.
 *
 * After its own report a runner asks again, as old runners do; a slot the master ended (a
 * timeout, a cancel, a lost lock) waits for the next task at once, since the 2016 worker only
 * goes idle on `task:cancel` and asks for nothing, as the 2016 master marked it free itself.
 */
export class RunnerLeases {
  private readonly fetchers = new Map<string, QueueFetcher>();
  /** Every lease on this bridge, by job id. */
  private readonly leases = new Map<string, Lease>();
  private readonly lockMs: number;
  private readonly log: Logger;
  /**
   * Lease ids tell one hand-out of a job from the next, also across masters and restarts: a
   * random base per bridge and a counter.
   */
  private readonly leaseBase = randomBytes(4).toString('hex');
  private handed = 0;
  /**
   * Cancel announcements for jobs not held here, kept a while by job id: a job fetched but not
   * yet handed out when its announcement arrives is cancelled at hand-out instead of missed.
   */
  private readonly announced = new Map<string, number>();
  private readonly backoff: RunnerBackoff;
  /** Runners backed off after a drop: when they will be served, and on which queues. */
  private readonly deferred = new Map<Peer, { timer: NodeJS.Timeout; queues: Set<string> }>();

  constructor(private readonly opts: RunnerLeasesOptions) {
    this.log = opts.log;
    this.lockMs = opts.lockDurationMs ?? 10_000;
    this.backoff = new RunnerBackoff(opts.dropBackoffMs, opts.maxDropBackoffMs);
  }

  private fetcher(queue: string): QueueFetcher {
    let f = this.fetchers.get(queue);
    if (!f) {
      f = new QueueFetcher({
        queue,
        prefix: this.opts.config.prefix,
        connection: this.opts.connection,
        log: this.log,
        hand: (peer, job, token) => this.hand(peer, job, token),
        giveBack: (job, token, why) => this.giveBack(job, token, why),
        held: () => [...this.leases.values()].filter((l) => l.job.queueName === queue).map((l) => ({ jobId: l.job.id!, token: l.token })),
        lost: (jobId) => this.lost(jobId),
        lockDurationMs: this.lockMs,
        stalledIntervalMs: this.opts.stalledIntervalMs ?? 5000,
        parallel: this.opts.parallelFetches ?? 64,
      });
      if (this.opts.recordsInScript) passIdentityKeys(f.worker);
      this.fetchers.set(queue, f);
    }
    return f;
  }

  /**
   * `peer` is ready for work on `queue`: each of its slots that neither holds a task nor waits
   * for one starts waiting. Idempotent; a runner in its drop back-off is served once it is over.
   */
  request(peer: Peer, queue: string): void {
    if (!peer.connected) return;
    peer.queues.add(queue);
    this.opts.presence.touch(peer);
    const wait = this.backoff.remaining(peer);
    if (wait > 0) return this.defer(peer, queue, wait);
    const free = (peer.slots ?? 1) - peer.held.size - peer.idle;
    if (free <= 0) return;
    peer.idle += free;
    const f = this.fetcher(queue);
    for (let i = 0; i < free; i++) f.enqueue(peer);
  }

  private defer(peer: Peer, queue: string, ms: number): void {
    const d = this.deferred.get(peer);
    if (d) return void d.queues.add(queue);
    const queues = new Set([queue]);
    const timer = setTimeout(() => {
      this.deferred.delete(peer);
      for (const q of queues) this.request(peer, q);
    }, ms);
    timer.unref();
    this.deferred.set(peer, { timer, queues });
    this.log.info({ runner: runnerLabel(peer), client: peer.id, waitMs: ms }, 'runner backed off after dropping tasks');
  }

  /** The lease `peer` holds for `ref`, or undefined (a report about a task it no longer holds). */
  held(peer: Peer, ref: TaskRef): Lease | undefined {
    const lease = this.leases.get(ref.id);
    if (!lease || lease.peer !== peer) return undefined;
    if (ref.lease && ref.lease !== lease.id) return undefined;
    return lease;
  }

  /**
   * Offers a fetched job to one of `peer`'s waiting slots. The slot counts as idle until the
   * lease is made, so that a request arriving meanwhile does not add a slot in its place.
   */
  private async hand(peer: Peer, job: Job, token: string): Promise<HandOutcome> {
    if (!peer.connected) return this.slotGone(peer);
    const wait = this.backoff.remaining(peer);
    if (wait > 0) {
      // Another connection of this runner dropped tasks since this one asked: it waits too.
      peer.idle -= 1 + [...this.fetchers.values()].reduce((n, f) => n + f.drop(peer), 0);
      for (const q of peer.queues) this.defer(peer, q, wait);
      return 'peer-gone';
    }
    const jt = taskFromJob(job as Job & { id: string });
    const refusal = await refusalBeforeHandOut(job, jt, {
      announced: this.announced,
      maxStarts: this.opts.maxStarts ?? 20,
      client: this.opts.client,
    });
    if (refusal) {
      this.log.warn({ jobId: job.id, module: job.name, reason: refusal.reason }, 'task failed for good instead of going to a runner');
      await this.failForGood(job, token, refusal.reason, jt);
      if (refusal.cancelled) await this.opts.cancellations.done(job.id!);
      return 'job-finished';
    }
    if (!peer.connected) return this.slotGone(peer);
    peer.idle--;
    const id = `${this.leaseBase}-${(++this.handed).toString(36)}`;
    const task = legacyFromJob(job as Job & { id: string }, jt, this.opts.config.defaults.timeout, {
      who: peer.name ?? peer.id,
      when: Math.floor(Date.now() / 1000),
      lease: id,
    });
    const timer = setTimeout(() => void this.timedOut(lease), task.timeout);
    timer.unref();
    const lease: Lease = { id, job, token, peer, task, keys: jt, timer };
    this.leases.set(job.id!, lease);
    // Who ran it, where BullMQ keeps a worker's name (the archive records it).
    const jobKey = this.opts.client.keys.job(job.queueName, job.id!);
    // Only the archive's note of who ran it: a failed write loses nothing else.
    void this.opts.connection.hset(jobKey, 'pb', `runner:${runnerLabel(peer)}`).catch(() => undefined);
    peer.held.add(job.id!);
    this.opts.presence.touch(peer);
    this.log.debug({ jobId: job.id, module: job.name, runner: peer.name ?? peer.id }, 'task handed to a runner');
    this.opts.send(peer, 'task:send', task);
    this.opts.send(peer, 'task:run', task);
    return 'leased';
  }

  private slotGone(peer: Peer): HandOutcome {
    peer.idle--;
    return 'peer-gone';
  }

  /** A slot whose lease the master ended waits for the next task without a new request. */
  private rearm(lease: Lease): void {
    this.request(lease.peer, lease.job.queueName);
  }

  /** Ends a lease (exactly once); false when it had already ended. */
  private end(lease: Lease): boolean {
    if (this.leases.get(lease.job.id!) !== lease) return false;
    this.leases.delete(lease.job.id!);
    clearTimeout(lease.timer);
    lease.peer.held.delete(lease.job.id!);
    this.opts.presence.touch(lease.peer);
    return true;
  }

  /** Whether the outcome of `keys`' job needs a command of its own (see `recordsInScript`). */
  private recordsHere(keys: Lease['keys']): boolean {
    return !(this.opts.recordsInScript && keys.keysStored);
  }

  /** `task:done`: completes the job with the runner's result. */
  async complete(lease: Lease, result: unknown): Promise<void> {
    if (!this.end(lease)) return;
    const { job, token, peer } = lease;
    this.backoff.completed(peer);
    // Where the finishing script does not record it, recorded first: if this process dies
    // before the job is marked completed, the job is re-run (recording again is harmless); the
    // reverse order could leave dependents waiting on a completion nobody recorded.
    const record = this.recordsHere(lease.keys)
      ? () => this.opts.outcomes.record('completed', job as Job & { id: string }, undefined, lease.keys)
      : async () => {};
    await this.fetcher(job.queueName).complete(peer, job, token, result === undefined ? null : result, record);
  }

  /** `task:error`: fails this attempt; BullMQ retries it per the job's attempts and backoff. */
  async fail(lease: Lease, message: string): Promise<void> {
    if (!this.end(lease)) return;
    await this.failAttempt(lease, new Error(message));
  }

  private async failAttempt({ job, token, keys }: Lease, err: Error): Promise<void> {
    const final = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    if (final && this.recordsHere(keys)) await this.opts.outcomes.record('failed', job as Job & { id: string }, err.message, keys);
    await job.moveToFailed(err, token, false);
  }

  /** `reason` becomes the job's failedReason and the identity's recorded reason alike. */
  private async failForGood(job: Job, token: string, reason: string, keys: Lease['keys']): Promise<void> {
    if (this.recordsHere(keys)) await this.opts.outcomes.record('failed', job as Job & { id: string }, reason, keys);
    await job.moveToFailed(new UnrecoverableError(reason), token, false);
  }

  private async timedOut(lease: Lease): Promise<void> {
    if (!this.end(lease)) return;
    const { job, peer, task } = lease;
    this.log.warn({ jobId: job.id, module: job.name, runner: peer.name ?? peer.id, timeoutMs: task.timeout }, 'task timed out on its runner: cancelling it');
    this.opts.send(peer, 'task:cancel', task);
    this.rearm(lease);
    const err = new TaskTimeoutError(`task ${job.name} exceeded its timeout of ${task.timeout} ms on runner ${peer.name ?? peer.id}`);
    await this.failAttempt(lease, err).catch((e) => this.log.warn({ err: e, jobId: job.id }, 'could not fail a timed-out task'));
  }

  /** A cancel request for a job: when a runner here holds it, stop it and fail the job for good. */
  async cancel(jobId: string): Promise<boolean> {
    const lease = this.leases.get(jobId);
    if (!lease || !this.end(lease)) {
      const now = Date.now();
      for (const [id, at] of this.announced) if (now - at > ANNOUNCED_KEPT_MS) this.announced.delete(id);
      this.announced.set(jobId, now);
      return false;
    }
    this.log.info({ jobId, runner: lease.peer.name ?? lease.peer.id }, 'task cancelled: telling its runner to stop');
    this.opts.send(lease.peer, 'task:cancel', lease.task);
    this.rearm(lease);
    await this.failForGood(lease.job, lease.token, CANCELLED_REASON, lease.keys);
    await this.opts.cancellations.done(jobId);
    return true;
  }

  /** Job ids held on this bridge (to catch up on cancel requests after a resubscription). */
  heldIds(): string[] {
    return [...this.leases.keys()];
  }

  private async giveBack(job: Job, token: string, why: string): Promise<void> {
    try {
      await job.moveToWait(token);
      this.log.info({ jobId: job.id, module: job.name, why }, 'task given back to the queue');
    } catch (err) {
      // The lock is gone (expired, or the job was finished meanwhile): BullMQ's stalled check
      // or whoever owns it now decides what happens to it.
      this.log.warn({ err, jobId: job.id, why }, 'could not give a task back; the stalled-job check will');
    }
    // A prioritized job given back writes no marker, so a fetcher waiting here would not see it.
    this.fetchers.get(job.queueName)?.kick();
  }

  /**
   * A runner disconnected: its waiting slots are forgotten and its jobs go back to the queue,
   * at the front; its runner is backed off first, so that it does not take them straight back.
   */
  async release(peer: Peer): Promise<void> {
    for (const f of this.fetchers.values()) peer.idle -= f.drop(peer);
    clearTimeout(this.deferred.get(peer)?.timer);
    this.deferred.delete(peer);
    const mine = [...this.leases.values()].filter((l) => l.peer === peer && this.end(l));
    if (mine.length) {
      const backoffMs = this.backoff.dropped(peer);
      const runner = runnerLabel(peer);
      this.log.info({ runner, client: peer.id, dropped: mine.length, backoffMs }, 'runner dropped the tasks it held');
    }
    await Promise.all(mine.map((l) => this.giveBack(l.job, l.token, 'its runner disconnected')));
  }

  /** The lock of a held job could not be renewed (it expired meanwhile): the runner is told to stop. */
  private lost(jobId: string): void {
    const lease = this.leases.get(jobId);
    if (!lease || !this.end(lease)) return;
    this.log.warn({ jobId, runner: lease.peer.name ?? lease.peer.id }, 'lost the lock of a task a runner holds: cancelling it there');
    this.opts.send(lease.peer, 'task:cancel', lease.task);
    this.rearm(lease);
  }

  /** Gives every held job back and stops fetching. */
  async close(): Promise<void> {
    for (const d of this.deferred.values()) clearTimeout(d.timer);
    this.deferred.clear();
    const all = [...this.leases.values()].filter((l) => this.end(l));
    await Promise.all(all.map((l) => this.giveBack(l.job, l.token, 'the bridge is closing')));
    await Promise.all([...this.fetchers.values()].map((f) => f.close()));
  }
}
