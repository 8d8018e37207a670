import type { RouteContext } from '../http/context.ts';

/** Completed and failed tasks of a queue per minute, oldest first; `start` is the first minute's start (ms). */
export interface Metrics {
  queue: string;
  stepMs: 60000;
  start: number;
  completed: number[];
  failed: number[];
}

const STEP = 60_000;

/**
 * Finished tasks per minute over the last `hours`: from BullMQ's finished sets (scored by finish
 * time) back to the oldest job Redis keeps, and from the archive before that (trimming removes
 * the oldest first, so the two never overlap). Without an archive, minutes older than what Redis
 * keeps count nothing.
 */
export async function readMetrics(ctx: RouteContext, queueName: string, hours: number): Promise<Metrics> {
  const now = Date.now();
  const start = Math.floor((now - hours * 3_600_000) / STEP) * STEP;
  const buckets = Math.floor((now - start) / STEP) + 1;
  const out: Metrics = { queue: queueName, stepMs: STEP, start, completed: [], failed: [] };
  const queue = ctx.components.queues.get(queueName);
  const redis = ctx.connection;
  for (const state of ['completed', 'failed'] as const) {
    const counts = new Array<number>(buckets).fill(0);
    const key = queue.keys[state]!;
    const [inRange, oldest] = await Promise.all([
      redis.zrangebyscore(key, start, '+inf', 'WITHSCORES'),
      redis.zrange(key, 0, 0, 'WITHSCORES'),
    ]);
    for (let i = 1; i < inRange.length; i += 2) {
      const at = Math.floor((Number(inRange[i]) - start) / STEP);
      if (at >= 0 && at < buckets) counts[at]!++;
    }
    // Before the oldest finished job Redis keeps (or all of the range, when it keeps none).
    const keptFrom = oldest.length ? Number(oldest[1]) : now;
    if (ctx.store && keptFrom > start) {
      const rows = await ctx.store.finishedPerMinute(queueName, new Date(start), new Date(keptFrom));
      for (const r of rows) {
        const matches = state === 'completed' ? r.status === 'completed' : r.status === 'failed';
        const at = Math.floor((r.minute - start) / STEP);
        if (matches && at >= 0 && at < buckets) counts[at]! += r.n;
      }
    }
    out[state] = counts;
  }
  return out;
}
