import { randomBytes } from 'node:crypto';
import type { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ManualWorker } from '../queue/bullmq/manual-worker.ts';
import { OutageLog } from '../queue/outage-log.ts';
import type { Peer } from './presence.ts';
import type { Finishing, OutcomeKeys } from '../queue/finishing.ts';
import type { RunnerSlots } from './runner-slots.ts';

/** A fetched job, held under `token`, for the waiting slot of `peer` it was taken for. */
export interface Offer {
  peer: Peer;
  job: Job;
  token: string;
}

export interface QueueFetcherOptions {
  queue: string;
  prefix: string;
  connection: Redis;
  log: Logger;
  /** Whose waiting slots jobs are fetched for. */
  slots: RunnerSlots;
  finishing: Finishing;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** Fetches without blocking run this many at once while slots wait and jobs are there. */
  parallel: number;
}

/**
 * Takes jobs from one queue for the runner slots waiting on it (RunnerSlots), with BullMQ's
 * manual job processing: a Worker without a processor, `getNextJob(token)` per waiting slot.
 * Each fetched job comes out of `next()` with the slot it was taken for, for the caller to hand
 * out; nothing is fetched while no slot waits, so a job is never taken for a runner that does
 * not exist.
 *
 * While slots wait and the queue has jobs, up to `parallel` non-blocking fetches run at once
 * (each is one atomic moveToActive, so priority order holds across them); once the queue is
 * drained, one blocking fetch waits on BullMQ's marker (BZPOPMIN) and wakes as soon as a job is
 * added, promoted or unblocked.
 *
 * A runner answers `task:done` and asks again at once (`task:request`). While its completion
 * is in flight, that request is parked, and the completion fetches the next job for it in the
 * same call (`moveToCompleted` with fetchNext, as BullMQ's own workers do): one script, not two.
 */
export class QueueFetcher {
  private readonly worker: ManualWorker;
  /** Offers not taken by `next()` yet, and the caller waiting in `next()` if any. */
  private readonly offers: Offer[] = [];
  private taker?: (offer: Offer | undefined) => void;
  private fetching = 0;
  private blocking = false;
  private drained = false;
  private closed = false;
  private readonly inflight = new Set<Promise<void>>();
  /** Lock tokens: unique per fetch, from one random base and a counter. */
  private readonly tokenBase = randomBytes(8).toString('hex');
  private fetches = 0;
  private readonly log: Logger;

  constructor(private readonly opts: QueueFetcherOptions) {
    this.log = opts.log.child({ queue: opts.queue });
    this.worker = new ManualWorker(opts.queue, null, {
      connection: opts.connection,
      prefix: opts.prefix,
      autorun: false,
      lockDuration: opts.lockDurationMs,
      stalledInterval: opts.stalledIntervalMs,
      // Seconds a blocking fetch waits before it looks again. Short, because a job given back
      // with moveToWait (a prioritized one) writes no marker, so a sleeping fetcher on
      // another master only sees it when its wait times out.
      drainDelay: 1,
      name: `bridge:${opts.queue}`,
    });
    opts.finishing.prepare(this.worker);
    this.worker.on('error', OutageLog.listener(this.log, 'bridge fetcher error'));
    // Manual processing runs no stalled-job check of its own; without one, the jobs a crashed
    // master held would stay active until some local worker happened to check.
    void this.worker.startStalledCheckTimer().catch((err) => this.log.error({ err }, 'stalled check failed to start'));
  }

  /** The next fetched job with its slot (for one caller at a time); undefined once the fetcher is closed. */
  next(): Promise<Offer | undefined> {
    const offer = this.offers.shift();
    if (offer || this.closed) return Promise.resolve(offer);
    return new Promise((resolve) => (this.taker = resolve));
  }

  private offer(o: Offer): void {
    if (this.closed) return this.track(this.giveBack(o.job, o.token, 'the bridge is closing'));
    const taker = this.taker;
    this.taker = undefined;
    if (taker) taker(o);
    else this.offers.push(o);
  }

  /** Fetches for the slots that wait on this queue now (after RunnerSlots.wait). */
  pump(): void {
    if (this.closed) return;
    const waiting = this.opts.slots.waiting(this.opts.queue);
    if (!this.drained) {
      while (this.fetching < this.opts.parallel && waiting > this.fetching + (this.blocking ? 1 : 0)) {
        this.track(this.fetch(false));
      }
    } else if (!this.blocking && waiting > this.fetching) {
      this.track(this.fetch(true));
    }
  }

  /** An offered slot waits again at the front: the job it was offered ended, or could not be handed. */
  again(peer: Peer): void {
    this.opts.slots.again(this.opts.queue, peer, 'front');
    this.pump();
  }

  /** A job whose slot went away goes to the next waiting slot, else back to the queue. */
  async reoffer(job: Job, token: string): Promise<void> {
    const peer = this.closed ? undefined : this.opts.slots.next(this.opts.queue);
    if (peer) this.offer({ peer, job, token });
    else await this.giveBack(job, token, 'no runner is waiting for it any more');
  }

  /** Gives a held job back to the queue, at the front, without spending an attempt. */
  async giveBack(job: Job, token: string, why: string): Promise<void> {
    try {
      await job.moveToWait(token);
      this.log.info({ jobId: job.id, module: job.name, why }, 'task given back to the queue');
    } catch (err) {
      // The lock is gone (expired, or the job was finished meanwhile): BullMQ's stalled check
      // or whoever owns it now decides what happens to it.
      this.log.warn({ err, jobId: job.id, why }, 'could not give a task back; the stalled-job check will');
    }
    // A prioritized job given back writes no marker, so a blocking fetch here would not see it.
    this.kick();
  }

  /** Something made a job available that no marker announces (a job given back): look now. */
  private kick(): void {
    this.drained = false;
    // A blocking fetch in flight may cover the waiting slots, but it will not wake for this job.
    const waiting = this.opts.slots.waiting(this.opts.queue);
    if (!this.closed && waiting > this.fetching && this.fetching < this.opts.parallel) this.track(this.fetch(false));
    this.pump();
  }

  /**
   * Completes a job `peer` held, fetching the next job in the same call when a request of the
   * same runner was parked meanwhile; that job comes out of `next()` for it.
   */
  async complete(peer: Peer, job: Job, token: string, result: unknown, keys: OutcomeKeys): Promise<void> {
    const { queue, slots, finishing } = this.opts;
    slots.completing(queue, peer);
    try {
      await finishing.recordCompletion(job, keys);
      const fetchNext = !this.closed && peer.connected && slots.unpark(queue, peer);
      let next: Job | undefined;
      try {
        const raw = await finishing.moveToCompleted(job, token, result, fetchNext);
        next = fetchNext && Array.isArray(raw) ? await this.worker.jobFrom(raw, token) : undefined;
      } finally {
        if (fetchNext && !next) slots.again(queue, peer, 'back');
      }
      if (next) this.offer({ peer, job: next, token });
      else if (fetchNext) this.drained = true;
    } finally {
      slots.completed(queue, peer);
      this.pump();
    }
  }

  /** Extends the locks of held jobs in one call; returns the ids of those it could not (expired). */
  extendLocks(held: { jobId: string; token: string }[]): Promise<string[]> {
    return this.worker.extendJobLocks(
      held.map((l) => l.jobId),
      held.map((l) => l.token),
      this.opts.lockDurationMs,
    );
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private async fetch(block: boolean): Promise<void> {
    if (block) this.blocking = true;
    else this.fetching++;
    const token = `${this.tokenBase}:${(++this.fetches).toString(36)}`;
    let job: Job | undefined;
    try {
      job = await this.worker.getNextJob(token, { block });
    } catch (err) {
      if (!this.closed) {
        // Redis is likely down: one (blocking) fetch at a time until one succeeds again.
        this.drained = true;
        this.log.error({ err }, 'could not fetch a job; trying again in 1 s');
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      if (block) this.blocking = false;
      else this.fetching--;
    }
    if (job) {
      this.drained = false;
      await this.reoffer(job, token).catch((err) =>
        this.log.error({ err, jobId: job.id }, 'could not offer a job to a runner'),
      );
    } else if (!block) {
      this.drained = true;
    }
    this.pump();
  }

  /** Stops fetching; jobs fetched and not taken are given back before this resolves. */
  async close(): Promise<void> {
    this.closed = true;
    this.taker?.(undefined);
    this.taker = undefined;
    await Promise.all(this.offers.splice(0).map((o) => this.giveBack(o.job, o.token, 'the bridge is closing')));
    await this.worker.close(true);
    await Promise.allSettled([...this.inflight]);
  }
}
