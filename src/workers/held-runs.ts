import type { Redis } from 'ioredis';
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
 * cancelled job), so running jobs cost nothing here.
 */
export class HeldRuns {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly queue: string,
    private readonly defaultTimeoutMs: number,
  ) {}

  /** The runs held by the BullMQ worker `workerId` (tokens `<workerId>:<n>`). */
  async of(workerId: string): Promise<HeldRun[]> {
    const ids = await this.redis.lrange(`${this.prefix}:${this.queue}:active`, 0, -1);
    const runs = await this.read(ids);
    return runs.filter((r) => r.token.startsWith(`${workerId}:`));
  }

  /** The run of `jobId`, when the job is active under some lock. */
  async one(jobId: string): Promise<HeldRun | undefined> {
    return (await this.read([jobId]))[0];
  }

  private async read(ids: string[]): Promise<HeldRun[]> {
    if (!ids.length) return [];
    const p = this.redis.pipeline();
    for (const id of ids) {
      const key = `${this.prefix}:${this.queue}:${id}`;
      p.get(`${key}:lock`);
      p.hmget(key, 'processedOn', 'data');
    }
    const replies = (await p.exec()) ?? [];
    const runs: HeldRun[] = [];
    ids.forEach((jobId, i) => {
      const token = replies[2 * i]?.[1];
      const [processedOn, data] = (replies[2 * i + 1]?.[1] ?? []) as (string | null)[];
      if (typeof token !== 'string' || !processedOn) return;
      runs.push({ jobId, queue: this.queue, token, processedOn: Number(processedOn), timeoutMs: this.timeout(data) });
    });
    return runs;
  }

  private timeout(data: string | null | undefined): number {
    try {
      return timeoutOf(JSON.parse(data ?? 'null')) ?? this.defaultTimeoutMs;
    } catch {
      return this.defaultTimeoutMs;
    }
  }
}
