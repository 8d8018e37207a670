import { randomBytes } from 'node:crypto';
import { Worker, type Job, type JobJson } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Peer } from './presence.ts';
import { OutageLog } from '../queue/outage-log.ts';

/** What became of a job offered to a runner. */
export type HandOutcome =
  /** The runner holds it now. */
  | 'leased'
  /** The job ended before it reached the runner (cancelled, or a dependency failed); the slot is still free. */
  | 'job-finished'
  /** The runner went away; the job is still held under the token, for the next slot. */
  | 'peer-gone';

export interface QueueFetcherOptions {
  queue: string;
  prefix: string;
  connection: Redis;
  log: Logger;
  /** Offers a fetched job to a runner. */
  hand(peer: Peer, job: Job, token: string): Promise<HandOutcome>;
  /** Gives a fetched job back to the queue (no attempt spent). */
  giveBack(job: Job, token: string, why: string): Promise<void>;
  /** The jobs of this queue runners hold now, whose locks are renewed every `lockDurationMs / 2`. */
  held(): { jobId: string; token: string }[];
  /** A held job whose lock could not be renewed (it had expired). */
  lost(jobId: string): void;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** Fetches without blocking run this many at once while runners wait and jobs are there. */
  parallel: number;
}

/** A Worker for manual processing that can also turn the next job moveToCompleted fetched into a Job. */
class ManualWorker extends Worker {
  /** `raw` is what `job.moveToCompleted(value, token, true)` returned: [jobData, jobId, …]. */
  jobFrom(raw: unknown[], token: string): Promise<Job | undefined> {
    const [data, id] = raw as [JobJson | undefined, string | undefined];
    return this.nextJobFromJobData(data, id, token);
  }
}

/**
 * Takes jobs from one queue on behalf of remote runners, with BullMQ's manual job processing:
 * a Worker without a processor, `getNextJob(token)` per idle runner slot.
 *
 * Runners' free slots (see RunnerLeases) wait in arrival order. While slots wait and the queue has
 * jobs, up to `parallel` non-blocking fetches run at once (each is one atomic moveToActive, so
 * priority order holds across them); once the queue is drained, one blocking fetch waits on
 * BullMQ's marker (BZPOPMIN) and wakes as soon as a job is added, promoted or unblocked. Nothing
 * is fetched while no slot waits, so a job is never taken for a runner that does not exist.
 *
 * A runner answers `task:done` and asks again at once (`task:request`). While its completion is
 * in flight, that request is parked, and the completion fetches the next job for it in the same
 * call (`moveToCompleted` with fetchNext, as BullMQ's own workers do): one script, not two.
 */
export class QueueFetcher {
  readonly worker: ManualWorker;
  private slots: Peer[] = [];
  /** Requests parked while their runner's completion is in flight, by runner. */
  private readonly parked = new Map<Peer, number>();
  /** Completions in flight, by runner. */
  private readonly completing = new Map<Peer, number>();
  private fetching = 0;
  private blocking = false;
  private drained = false;
  private closed = false;
  private readonly inflight = new Set<Promise<void>>();
  /** Lock tokens: unique per fetch, from one random base and a counter. */
  private readonly tokenBase = randomBytes(8).toString('hex');
  private fetches = 0;
  private readonly renewTimer: NodeJS.Timeout;
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
    this.worker.on('error', OutageLog.listener(this.log, 'bridge fetcher error'));
    // Manual processing runs no stalled-job check of its own; without one, the jobs a crashed
    // master held would stay active until some local worker happened to check.
    void this.worker.startStalledCheckTimer().catch((err) => this.log.error({ err }, 'stalled check failed to start'));
    this.renewTimer = setInterval(() => void this.renewLocks(), opts.lockDurationMs / 2);
    this.renewTimer.unref();
  }

  /** One more free slot of a runner waits for a job. */
  enqueue(peer: Peer): void {
    if (this.completing.has(peer)) {
      this.parked.set(peer, (this.parked.get(peer) ?? 0) + 1);
      return;
    }
    this.slots.push(peer);
    this.pump();
  }

  /** Forgets the waiting slots of a runner that went away; returns how many there were. */
  drop(peer: Peer): number {
    const before = this.slots.length;
    this.slots = this.slots.filter((p) => p !== peer);
    const parked = this.parked.get(peer) ?? 0;
    this.parked.delete(peer);
    return before - this.slots.length + parked;
  }

  /**
   * Completes a job a runner held (after `before`, which records its outcome), fetching the
   * next job in the same call when a request of the same runner is parked.
   */
  async complete(peer: Peer, job: Job, token: string, result: unknown, before: () => Promise<void>): Promise<void> {
    this.completing.set(peer, (this.completing.get(peer) ?? 0) + 1);
    try {
      await before();
      const parked = this.parked.get(peer) ?? 0;
      if (!parked || this.closed || !peer.connected) {
        await job.moveToCompleted(result, token, false);
        return;
      }
      if (parked > 1) this.parked.set(peer, parked - 1);
      else this.parked.delete(peer);
      let next: Job | undefined;
      try {
        const raw = await job.moveToCompleted(result, token, true);
        next = Array.isArray(raw) ? await this.worker.jobFrom(raw, token) : undefined;
      } finally {
        if (!next && peer.connected) this.slots.push(peer);
      }
      if (next) await this.deliver(next, token, peer);
      else this.drained = true;
    } finally {
      const n = this.completing.get(peer)! - 1;
      if (n) this.completing.set(peer, n);
      else {
        this.completing.delete(peer);
        if (peer.connected) for (let i = this.parked.get(peer) ?? 0; i > 0; i--) this.slots.push(peer);
        this.parked.delete(peer);
      }
      this.pump();
    }
  }

  /** Something made a job available that no marker announces (a job given back): look now. */
  kick(): void {
    this.drained = false;
    // A blocking fetch in flight may cover the waiting slots, but it will not wake for this job.
    if (this.slots.length > this.fetching && this.fetching < this.opts.parallel) this.track(this.fetch(false));
    this.pump();
  }

  private pump(): void {
    if (this.closed) return;
    if (!this.drained) {
      while (this.fetching < this.opts.parallel && this.slots.length > this.fetching + (this.blocking ? 1 : 0)) {
        this.track(this.fetch(false));
      }
    } else if (!this.blocking && this.slots.length > this.fetching) {
      this.track(this.fetch(true));
    }
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
      await this.deliver(job, token).catch((err) => this.log.error({ err, jobId: job.id }, 'could not hand a job to a runner'));
    } else if (!block) {
      this.drained = true;
    }
    this.pump();
  }

  /** Hands a fetched job to `first` if given, else (or if it went away) to the longest-waiting slot. */
  private async deliver(job: Job, token: string, first?: Peer): Promise<void> {
    for (;;) {
      const peer = first ?? this.slots.shift();
      first = undefined;
      if (!peer || this.closed) {
        await this.opts.giveBack(job, token, 'no runner is waiting for it any more');
        return;
      }
      let outcome: HandOutcome;
      try {
        outcome = await this.opts.hand(peer, job, token);
      } catch (err) {
        // Redis failed us half-way (the checks before a hand-out): the job goes back whole.
        if (peer.connected) this.slots.unshift(peer);
        await this.opts.giveBack(job, token, `could not hand it out: ${(err as Error).message}`);
        return;
      }
      if (outcome === 'leased') return;
      if (outcome === 'job-finished') {
        if (peer.connected) this.slots.unshift(peer);
        return;
      }
    }
  }

  /** Extends the locks of the jobs runners hold, in one call; tells of those it could not. */
  private async renewLocks(): Promise<void> {
    const held = this.opts.held();
    if (!held.length) return;
    try {
      const lost = await this.worker.extendJobLocks(
        held.map((l) => l.jobId),
        held.map((l) => l.token),
        this.opts.lockDurationMs,
      );
      for (const id of lost) this.opts.lost(id);
    } catch (err) {
      this.log.warn({ err }, 'could not renew the locks of tasks runners hold');
    }
  }

  /** Stops fetching; a job fetched meanwhile is given back before this resolves. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.renewTimer);
    this.slots = [];
    this.parked.clear();
    await this.worker.close(true);
    await Promise.allSettled([...this.inflight]);
  }
}
