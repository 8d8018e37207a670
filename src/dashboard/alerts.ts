import type { RouteContext } from '../http/context.ts';
import { GATE_QUEUE, parseJobKey } from '../queue/keys.ts';
import { CANCELLED_REASON } from '../tasks/cancellations.ts';
import { describeDependency, type GateData } from '../tasks/gates.ts';
import type { ConsumerInfo } from '../workers/registry.ts';
import type { QueueOverview } from './overview.ts';

/**
 * Something the status page flags:
 * - `unrunnable-module`: tasks of a module wait and no live worker process or runner serving
 *   their queue announces it (a runner that announces no modules, as 2016 runners, may run any);
 * - `failure-rate`: of a module's runs that finished within the window, this share failed;
 * - `waiting-age`: the oldest of the next tasks in line has waited longer than the threshold;
 * - `dependency-wait`: tasks have waited longer than that threshold for a dependency that has not
 *   completed (one that names params no task has, which waits until such a task is added, shows
 *   here rather than nowhere).
 */
export interface Alert {
  kind: 'unrunnable-module' | 'failure-rate' | 'waiting-age' | 'dependency-wait';
  queue: string;
  module?: string;
  message: string;
  value: number;
  threshold: number;
}

/** Finished runs read per state and queue for the failure rate (the most recent ones). */
const FINISHED_READ_MAX = 5000;
/** A module needs this many finished runs in the window before its failure rate is judged. */
export const FAILURE_RATE_MIN_RUNS = 5;
/** Sleeping gates read per overview for dependency waits (those asleep longest first). */
const GATES_READ_MAX = 100;
/**
 * Failure rates and dependency waits are read again at most this often: they cost more than the
 * counts, and are judged in minutes while an overview is built about once a second.
 */
const COSTLY_READ_EVERY_MS = 5000;

function minutes(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000} min` : `${Math.round(ms / 1000)} s`;
}

const lastReads = new WeakMap<RouteContext, Map<string, { at: number; value: unknown }>>();

/** What `read` gave for `what` within the last COSTLY_READ_EVERY_MS, or what it gives now. */
async function readAtMostEvery<T>(ctx: RouteContext, what: string, now: number, read: () => Promise<T>): Promise<T> {
  let reads = lastReads.get(ctx);
  if (!reads) lastReads.set(ctx, (reads = new Map()));
  const hit = reads.get(what);
  if (hit && now - hit.at < COSTLY_READ_EVERY_MS) return hit.value as T;
  const value = await read();
  reads.set(what, { at: now, value });
  return value;
}

/** Per module: runs that failed and runs that finished within the window, from BullMQ's finished sets. */
function finishedPerModule(ctx: RouteContext, queueName: string, now: number): Promise<Map<string, [number, number]>> {
  return readAtMostEvery(ctx, `failure-rate\n${queueName}`, now, () => readFinishedPerModule(ctx, queueName, now));
}

async function readFinishedPerModule(
  ctx: RouteContext,
  queueName: string,
  now: number,
): Promise<Map<string, [number, number]>> {
  const queue = ctx.components.queues.get(queueName);
  const redis = ctx.connection;
  const since = now - ctx.config.alerts.failureWindowMs;
  const read = (key: string) => redis.zrevrangebyscore(key, '+inf', since, 'LIMIT', 0, FINISHED_READ_MAX);
  const [completed, failed] = await Promise.all([read(queue.keys.completed!), read(queue.keys.failed!)]);
  const pipe = redis.pipeline();
  for (const id of completed) pipe.hget(queue.toKey(id), 'name');
  for (const id of failed) pipe.hmget(queue.toKey(id), 'name', 'failedReason');
  const rows = ((await pipe.exec()) ?? []).map(([, r]) => r);
  const rates = new Map<string, [number, number]>();
  const count = (module: string | null | undefined, failure: boolean) => {
    if (!module) return;
    const r = rates.get(module) ?? [0, 0];
    if (failure) r[0]++;
    r[1]++;
    rates.set(module, r);
  };
  rows.slice(0, completed.length).forEach((name) => count(name as string | null, false));
  for (const row of rows.slice(completed.length)) {
    const [name, reason] = row as [string | null, string | null];
    // A cancelled run is what someone asked for, not a failure of the module.
    if (reason !== CANCELLED_REASON) count(name, true);
  }
  return rates;
}

/**
 * Per dependency that tasks have waited for longer than the threshold, and has not completed: the
 * dependents' queue, how many wait, and how long the first has. Read from the sleeping gates.
 */
function dependencyWaits(ctx: RouteContext, now: number): Promise<Alert[]> {
  return readAtMostEvery(ctx, 'dependency-wait', now, () => readDependencyWaits(ctx, now));
}

async function readDependencyWaits(ctx: RouteContext, now: number): Promise<Alert[]> {
  const { waitingAgeMs } = ctx.config.alerts;
  const gates = ctx.components.queues.get(GATE_QUEUE);
  const ids = await ctx.connection.zrange(gates.keys.delayed!, 0, GATES_READ_MAX - 1);
  if (!ids.length) return [];
  const pipe = ctx.connection.pipeline();
  for (const id of ids) pipe.hmget(gates.toKey(id), 'data', 'timestamp', 'parentKey');
  const waits = new Map<string, { gate: GateData; queue: string; count: number; since: number }>();
  for (const [, row] of (await pipe.exec()) ?? []) {
    const [data, timestamp, parentKey] = (row ?? []) as (string | null)[];
    const since = Number(timestamp);
    const queue = parentKey ? parseJobKey(ctx.config.prefix, parentKey)?.queue : undefined;
    if (!data || !queue || !(now - since > waitingAgeMs)) continue;
    const gate = JSON.parse(data) as GateData;
    const key = `${queue}\n${gate.dependencyKey}`;
    const w = waits.get(key);
    if (w) {
      w.count++;
      w.since = Math.min(w.since, since);
    } else waits.set(key, { gate, queue, count: 1, since });
  }
  const list = [...waits.values()];
  // A dependency settled since its gates went to sleep is being opened, not waited for.
  const outcomes = await ctx.components.store.outcomes(list.map((w) => w.gate.dependencyKey));
  return list
    .filter((_, i) => !outcomes[i])
    .map(({ gate, queue, count, since }) => ({
      kind: 'dependency-wait' as const,
      queue,
      module: gate.dependency.module,
      message:
        `${count} task(s) in queue ${queue} have waited longer than ${minutes(waitingAgeMs)} for ` +
        `${describeDependency(gate.dependency)}, which has not completed` +
        (gate.dependency.params === undefined ? '' : ': it names the task with exactly these params'),
      value: now - since,
      threshold: waitingAgeMs,
    }));
}

/** The alerts of an overview being built. */
export async function alertsOf(
  ctx: RouteContext,
  o: { queues: QueueOverview[]; heads: Map<string, Map<string, number>>; consumers: ConsumerInfo[]; now: number },
): Promise<Alert[]> {
  const { failureRate, failureWindowMs, waitingAgeMs } = ctx.config.alerts;
  const alerts: Alert[] = [];
  for (const q of o.queues) {
    const serving = o.consumers.filter((c) => c.kind !== 'feeder' && c.queues.includes(q.name));
    const anyModule = serving.some((c) => c.kind === 'runner' && !c.modules.length);
    for (const [module, waiting] of q.paused || anyModule ? [] : (o.heads.get(q.name) ?? [])) {
      if (serving.some((c) => c.modules.includes(module))) continue;
      alerts.push({
        kind: 'unrunnable-module',
        queue: q.name,
        module,
        message: `tasks of ${module} wait in queue ${q.name}, and no connected worker process or runner can run it`,
        value: waiting,
        threshold: 0,
      });
    }
    if (!q.paused && q.oldestWaitingAgeMs !== undefined && q.oldestWaitingAgeMs > waitingAgeMs) {
      alerts.push({
        kind: 'waiting-age',
        queue: q.name,
        message: `the oldest waiting task in queue ${q.name} has waited longer than ${minutes(waitingAgeMs)}`,
        value: q.oldestWaitingAgeMs,
        threshold: waitingAgeMs,
      });
    }
    for (const [module, [failed, finished]] of await finishedPerModule(ctx, q.name, o.now)) {
      const rate = failed / finished;
      if (finished < FAILURE_RATE_MIN_RUNS || rate < failureRate || failed === 0) continue;
      alerts.push({
        kind: 'failure-rate',
        queue: q.name,
        module,
        message:
          `${failed} of the ${finished} runs of ${module} in queue ${q.name} that finished in the last ` +
          `${minutes(failureWindowMs)} failed`,
        value: Math.round(rate * 1000) / 1000,
        threshold: failureRate,
      });
    }
  }
  alerts.push(...(await dependencyWaits(ctx, o.now)));
  return alerts;
}
