import type { Redis } from 'ioredis';
import { keysFor, type Keys } from '../queue/keys.ts';
import { timeoutOf } from '../tasks/task.ts';
import type { RunInfo } from './task-worker.ts';

/** A run as Redis shows it: a job active under the lock token of some BullMQ worker. */
export interface HeldRun extends RunInfo {
  /** When this attempt was taken (BullMQ's processedOn), in ms. */
  processedOn: number;
}

/**
 * The runs a worker pool's processes hold, read from Redis rather than reported by the
 * processes: BullMQ locks a job with a token that begins with its worker's id before the task
 * starts, so a process whose event loop is blocked, or that has died, is still seen holding
 * its jobs. Read only when something needs it (a process stopped answering, died, or holds a
 * cancelled job) and at the primary's sweep every few seconds, so running jobs cost nothing
 * here; only the lock of each active job is read for jobs other consumers hold.
 */
export class HeldRuns {
  private readonly keys: Keys;
  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly queue: string,
    private readonly defaultTimeoutMs: number,
  ) {
    this.keys = keysFor(prefix);
  }

  /** The runs held by the BullMQ worker `workerId` (tokens `<workerId>:<n>`). */
  async of(workerId: string): Promise<HeldRun[]> {
    return (await this.byWorker([workerId])).get(workerId) ?? [];
  }

  /** The runs held by each of the given BullMQ workers, from one look at the active jobs. */
  async byWorker(workerIds: string[]): Promise<Map<string, HeldRun[]>> {
    const ids = await this.redis.lrange(this.keys.queue(this.queue, 'active'), 0, -1);
    const owner = (token: string) => workerIds.find((w) => token.startsWith(`${w}:`));
    const out = new Map<string, HeldRun[]>();
    for (const run of await this.read(ids, (token) => owner(token) !== undefined)) {
      const w = owner(run.token)!;
      const runs = out.get(w);
      if (runs) runs.push(run);
      else out.set(w, [run]);
    }
    return out;
  }

  /** The run of `jobId`, when the job is active under some lock. */
  async one(jobId: string): Promise<HeldRun | undefined> {
    return (await this.read([jobId], () => true))[0];
  }

  /**
   * Reads the locks of `ids`, then the details of those whose token `wanted` accepts: the
   * active list may hold many jobs of other consumers (remote runners), whose data is not read.
   */
  private async read(ids: string[], wanted: (token: string) => boolean): Promise<HeldRun[]> {
    if (!ids.length) return [];
    const jobKey = (id: string) => this.keys.job(this.queue, id);
    const locks = await this.pipelined(ids.map((id) => ['get', `${jobKey(id)}:lock`]));
    const mine = ids.flatMap((jobId, i) => {
      const token = locks[i];
      return typeof token === 'string' && wanted(token) ? [{ jobId, token }] : [];
    });
    if (!mine.length) return [];
    const details = await this.pipelined(mine.map(({ jobId }) => ['hmget', jobKey(jobId), 'processedOn', 'data']));
    return mine.flatMap(({ jobId, token }, i) => {
      const [processedOn, data] = (details[i] ?? []) as (string | null)[];
      return processedOn
        ? [{ jobId, queue: this.queue, token, processedOn: Number(processedOn), timeoutMs: this.timeout(data) }]
        : [];
    });
  }

  private async pipelined(commands: string[][]): Promise<unknown[]> {
    const replies = (await this.redis.pipeline(commands).exec()) ?? [];
    return replies.map(([err, value]) => (err ? undefined : value));
  }

  private timeout(data: string | null | undefined): number {
    try {
      return timeoutOf(JSON.parse(data ?? 'null')) ?? this.defaultTimeoutMs;
    } catch {
      return this.defaultTimeoutMs;
    }
  }
}
