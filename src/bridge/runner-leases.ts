import { randomBytes } from 'node:crypto';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Components } from '../components.ts';
import type { Config } from '../config/config.ts';
import type { Finishing, OutcomeKeys } from '../queue/finishing.ts';
import { TaskTimeoutError } from '../errors.ts';
import { CANCELLED_REASON, type Cancellations } from '../tasks/cancellations.ts';
import { taskFromJob, type JobTask } from '../tasks/task.ts';
import { refusalBeforeHandOut } from './hand-out-checks.ts';
import { legacyFromJob, type LegacyTask, type TaskRef } from './legacy-shape.ts';
import { runnerLabel, type Peer, type Presence } from './presence.ts';
import { QueueFetcher, type Offer } from './queue-fetcher.ts';
import { RunnerBackoff } from './runner-backoff.ts';
import type { RunnerSlots } from './runner-slots.ts';

export interface RunnerLeasesOptions {
  config: Pick<Config, 'queue' | 'prefix' | 'defaults'>;
  connection: Redis;
  /** The bridge's components: the keys, and what the checks before a hand-out read. */
  components: Pick<Components, 'keys' | 'queues' | 'store'>;
  slots: RunnerSlots;
  finishing: Finishing;
  cancellations: Cancellations;
  presence: Presence;
  log: Logger;
  /** Sends a task to a runner (`task:send` and `task:run`) or tells it to stop (`task:cancel`). */
  send(peer: Peer, event: 'task:send' | 'task:run' | 'task:cancel', task: LegacyTask): void;
  /**
   * How long a lease's lock lasts without renewal (renewed at half that while the runner is
   * connected). @defaultValue 10000
   */
  lockDurationMs?: number;
  /** @defaultValue 5000 */
  stalledIntervalMs?: number;
  /** @defaultValue 64 */
  parallelFetches?: number;
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
  readonly keys: OutcomeKeys;
  readonly timer: NodeJS.Timeout;
}

/**
 * Remote runners' leases. A `task:request` makes the runner's free slots wait (RunnerSlots) on
 * the queue's fetcher, and each job it fetches for one is checked and handed out here; the
 * runner then holds the job for as long as its socket is connected (its lock is renewed
 * meanwhile). A lease ends exactly once: `task:done` completes the job, `task:error` fails the
 * attempt (retried per policy), its timeout fails the attempt and sends `task:cancel`, a cancel
 * request fails the job for good, and a disconnect gives the job back to the queue without
 * spending an attempt. Whatever arrives for a lease that has ended is ignored.
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
  private readonly renewTimer: NodeJS.Timeout;
  private readonly log: Logger;
  /** Lease ids tell one hand-out of a job from the next, across masters and restarts too: a random base, a counter. */
  private readonly leaseBase = randomBytes(4).toString('hex');
  private handed = 0;
  /** Hand-outs in flight, which closing waits for. */
  private readonly handing = new Set<Promise<void>>();
  private closed = false;
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
    this.renewTimer = setInterval(() => void this.renewLocks(), this.lockMs / 2);
    this.renewTimer.unref();
  }

  private fetcher(queue: string): QueueFetcher {
    let f = this.fetchers.get(queue);
    if (!f) {
      f = new QueueFetcher({
        queue,
        prefix: this.opts.config.prefix,
        connection: this.opts.connection,
        log: this.log,
        slots: this.opts.slots,
        finishing: this.opts.finishing,
        lockDurationMs: this.lockMs,
        stalledIntervalMs: this.opts.stalledIntervalMs ?? 5000,
        parallel: this.opts.parallelFetches ?? 64,
      });
      this.fetchers.set(queue, f);
      void this.handOutFrom(f);
    }
    return f;
  }

  /** Hands out what `f` fetches, each job as it comes, until it closes. */
  private async handOutFrom(f: QueueFetcher): Promise<void> {
    for (let offer = await f.next(); offer; offer = await f.next()) {
      const p = this.handOut(f, offer);
      this.handing.add(p);
      void p.finally(() => this.handing.delete(p));
    }
  }

  /**
   * `peer` is ready for work on `queue`, running `declared` tasks at once if it says so: each of
   * its slots that neither holds a task nor waits for one starts waiting. Idempotent; a runner
   * in its drop back-off is served once it is over.
   */
  request(peer: Peer, queue: string, declared?: number): void {
    if (declared) this.opts.slots.declare(peer, declared);
    if (!peer.connected) return;
    peer.queues.add(queue);
    this.opts.presence.touch(peer);
    const wait = this.backoff.remaining(peer);
    if (wait > 0) return this.defer(peer, queue, wait);
    if (this.opts.slots.wait(peer, queue)) this.fetcher(queue).pump();
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
   * Checks a fetched job and hands it to the slot it was fetched for: a job that must not run
   * fails for good and the slot waits again; a slot whose runner went away (or was backed off)
   * passes the job to the next waiting slot; a check Redis failed gives the job back whole.
   */
  private async handOut(f: QueueFetcher, { peer, job, token }: Offer): Promise<void> {
    const { slots } = this.opts;
    try {
      if (this.closed) return f.giveBack(job, token, 'the bridge is closing');
      if (!peer.connected) return this.slotGone(f, peer, job, token);
      const wait = this.backoff.remaining(peer);
      if (wait > 0) {
        // Another connection of this runner dropped tasks since this one asked: it waits too.
        slots.withdraw(peer);
        for (const q of peer.queues) this.defer(peer, q, wait);
        return this.slotGone(f, peer, job, token);
      }
      const jt = taskFromJob(job as Job & { id: string });
      const refusal = await refusalBeforeHandOut(job, jt, {
        announced: this.announced,
        maxStarts: this.opts.maxStarts ?? 20,
        components: this.opts.components,
      });
      if (refusal) {
        const { reason } = refusal;
        this.log.warn({ jobId: job.id, module: job.name, reason }, 'task failed for good instead of going to a runner');
        await this.opts.finishing.fail(job, token, new UnrecoverableError(reason), jt);
        if (refusal.cancelled) await this.opts.cancellations.done(job.id!);
        return f.again(peer);
      }
      if (this.closed) return f.giveBack(job, token, 'the bridge is closing');
      if (!peer.connected) return this.slotGone(f, peer, job, token);
      this.lease(peer, job, token, jt);
    } catch (err) {
      // Redis failed us half-way (the checks before a hand-out): the job goes back whole.
      f.again(peer);
      await f.giveBack(job, token, `could not hand it out: ${(err as Error).message}`);
    }
  }

  private async slotGone(f: QueueFetcher, peer: Peer, job: Job, token: string): Promise<void> {
    this.opts.slots.lose(peer);
    await f.reoffer(job, token);
  }

  private lease(peer: Peer, job: Job, token: string, jt: JobTask): void {
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
    this.opts.slots.take(peer, job.id!);
    // Who ran it, where BullMQ keeps a worker's name (the archive records it).
    const jobKey = this.opts.components.keys.job(job.queueName, job.id!);
    // Only the archive's note of who ran it: a failed write loses nothing else.
    void this.opts.connection.hset(jobKey, 'pb', `runner:${runnerLabel(peer)}`).catch(() => undefined);
    this.opts.presence.touch(peer);
    this.log.debug({ jobId: job.id, module: job.name, runner: peer.name ?? peer.id }, 'task handed to a runner');
    this.opts.send(peer, 'task:send', task);
    this.opts.send(peer, 'task:run', task);
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
    this.opts.slots.free(lease.peer, lease.job.id!);
    this.opts.presence.touch(lease.peer);
    return true;
  }

  /** `task:done`: completes the job with the runner's result. */
  async complete(lease: Lease, result: unknown): Promise<void> {
    if (!this.end(lease)) return;
    const { job, token, peer, keys } = lease;
    this.backoff.completed(peer);
    await this.fetcher(job.queueName).complete(peer, job, token, result === undefined ? null : result, keys);
  }

  /** `task:error`: fails this attempt; BullMQ retries it per the job's attempts and backoff. */
  async fail(lease: Lease, message: string): Promise<void> {
    if (!this.end(lease)) return;
    await this.opts.finishing.fail(lease.job, lease.token, new Error(message), lease.keys);
  }

  private async timedOut(lease: Lease): Promise<void> {
    if (!this.end(lease)) return;
    const { job, token, peer, task, keys } = lease;
    const runner = peer.name ?? peer.id;
    const fields = { jobId: job.id, module: job.name, runner, timeoutMs: task.timeout };
    this.log.warn(fields, 'task timed out on its runner: cancelling it');
    this.opts.send(peer, 'task:cancel', task);
    this.rearm(lease);
    const err = new TaskTimeoutError(`task ${job.name} exceeded its timeout of ${task.timeout} ms on runner ${runner}`);
    await this.opts.finishing
      .fail(job, token, err, keys)
      .catch((e) => this.log.warn({ err: e, jobId: job.id }, 'could not fail a timed-out task'));
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
    await this.opts.finishing.fail(lease.job, lease.token, new UnrecoverableError(CANCELLED_REASON), lease.keys);
    await this.opts.cancellations.done(jobId);
    return true;
  }

  /** Job ids held on this bridge (to catch up on cancel requests after a resubscription). */
  heldIds(): string[] {
    return [...this.leases.keys()];
  }

  /**
   * A runner disconnected: its waiting slots are forgotten and its jobs go back to the queue,
   * at the front; its runner is backed off first, so that it does not take them straight back.
   */
  async release(peer: Peer): Promise<void> {
    this.opts.slots.withdraw(peer);
    clearTimeout(this.deferred.get(peer)?.timer);
    this.deferred.delete(peer);
    const mine = [...this.leases.values()].filter((l) => l.peer === peer && this.end(l));
    if (mine.length) {
      const backoffMs = this.backoff.dropped(peer);
      const runner = runnerLabel(peer);
      this.log.info({ runner, client: peer.id, dropped: mine.length, backoffMs }, 'runner dropped the tasks it held');
    }
    await Promise.all(mine.map((l) => this.giveBack(l, 'its runner disconnected')));
  }

  private giveBack(lease: Lease, why: string): Promise<void> {
    return this.fetcher(lease.job.queueName).giveBack(lease.job, lease.token, why);
  }

  /** Extends the locks of the jobs runners hold, one call per queue; a runner whose lock was lost is told to stop. */
  private async renewLocks(): Promise<void> {
    const byQueue = new Map<string, { jobId: string; token: string }[]>();
    for (const l of this.leases.values()) {
      const held = byQueue.get(l.job.queueName) ?? [];
      held.push({ jobId: l.job.id!, token: l.token });
      byQueue.set(l.job.queueName, held);
    }
    await Promise.all(
      [...byQueue].map(async ([queue, held]) => {
        try {
          for (const jobId of await this.fetcher(queue).extendLocks(held)) this.lost(jobId);
        } catch (err) {
          this.log.warn({ err, queue }, 'could not renew the locks of tasks runners hold');
        }
      }),
    );
  }

  /** The lock of a held job could not be renewed (it expired meanwhile): the runner is told to stop. */
  private lost(jobId: string): void {
    const lease = this.leases.get(jobId);
    if (!lease || !this.end(lease)) return;
    const runner = lease.peer.name ?? lease.peer.id;
    this.log.warn({ jobId, runner }, 'lost the lock of a task a runner holds: cancelling it there');
    this.opts.send(lease.peer, 'task:cancel', lease.task);
    this.rearm(lease);
  }

  /** Gives every held job back and stops fetching. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.renewTimer);
    for (const d of this.deferred.values()) clearTimeout(d.timer);
    this.deferred.clear();
    await Promise.allSettled([...this.handing]);
    const all = [...this.leases.values()].filter((l) => this.end(l));
    await Promise.all(all.map((l) => this.giveBack(l, 'the bridge is closing')));
    await Promise.all([...this.fetchers.values()].map((f) => f.close()));
  }
}
