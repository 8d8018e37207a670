import { Job } from 'bullmq';
import type { TaskView } from '../archive/history.ts';
import type { RouteContext } from '../http/context.ts';
import { GATE_QUEUE } from '../queue/keys.ts';
import type { GateData } from '../tasks/gates.ts';
import { dependencyRefKey } from '../tasks/identity.ts';
import type { DependencyRef } from '../tasks/task.ts';

/**
 * The status of a dependency: a task's state when its job is known, or `pending` for one that
 * has not completed nor failed and whose job is not known here (it may not be added yet).
 */
export type EdgeStatus = TaskView['status'] | 'pending';

export interface Dependency {
  id?: string;
  queue?: string;
  module: string;
  params: unknown[];
  status: EdgeStatus;
}

export interface Dependent {
  id: string;
  queue: string;
  module: string;
  status: EdgeStatus;
}

/** A task as its detail view shows it: the history view, its progress and logs, and its edges. */
export type TaskDetail = TaskView & {
  progress?: unknown;
  logs: string[];
  /** What it waits (or waited) for. */
  dependencies: Dependency[];
  /** What waits for it now: its flow parent and the tasks whose gates wait on its identity. */
  dependents: Dependent[];
};

/** Edges read at most per direction (a task with more shows the first ones). */
const EDGES_MAX = 100;
const LOGS_MAX = 200;

/** `wait` is how BullMQ names the waiting state; history says `waiting`. */
function statusOf(state: string): EdgeStatus {
  return state === 'wait' ? 'waiting' : state === 'unknown' ? 'pending' : (state as EdgeStatus);
}

/** `<prefix>:<queue>:<id>` → queue and id (neither holds ':'). */
function parseJobKey(key: string, prefix: string): { queue: string; id: string } | undefined {
  if (!key.startsWith(`${prefix}:`)) return undefined;
  const [queue, id] = key.slice(prefix.length + 1).split(':');
  return queue && id ? { queue, id } : undefined;
}

/** A task, wherever it is, with what it waits for and what waits for it. */
export async function taskDetail(ctx: RouteContext, id: string, queue: string): Promise<TaskDetail | undefined> {
  const view = await ctx.history.get(id, queue);
  if (!view) return undefined;
  const q = ctx.client.queue(queue);
  const job = view.source === 'redis' ? await Job.fromId(q, id) : undefined;
  const [logs, dependencies, dependents] = await Promise.all([
    job ? q.getJobLogs(id, 0, LOGS_MAX - 1).then((l) => l.logs) : Promise.resolve([]),
    job ? liveDependencies(ctx, job) : settledDependencies(ctx, view.dependencies),
    waitingDependents(ctx, view, job),
  ]);
  return { ...view, ...(job ? { progress: job.progress } : {}), logs, dependencies, dependents };
}

/** A job's children: tasks of its batch, and gates standing for dependencies added apart. */
async function liveDependencies(ctx: RouteContext, job: Job): Promise<Dependency[]> {
  const deps = await job.getDependencies({
    processed: { count: EDGES_MAX },
    unprocessed: { count: EDGES_MAX },
    failed: { count: EDGES_MAX },
    ignored: { count: EDGES_MAX },
  });
  const keys = [
    ...Object.keys(deps.processed ?? {}),
    ...(deps.unprocessed ?? []),
    ...(deps.failed ?? []),
    ...Object.keys(deps.ignored ?? {}),
  ].slice(0, EDGES_MAX);
  const out: Dependency[] = [];
  const gates: { data: GateData }[] = [];
  for (const key of keys) {
    const at = parseJobKey(key, ctx.config.prefix);
    if (!at) continue;
    const child = await Job.fromId(ctx.client.queue(at.queue), at.id);
    if (!child) continue;
    if (at.queue === GATE_QUEUE) gates.push({ data: child.data as GateData });
    else {
      const params = (await ctx.history.get(at.id, at.queue))?.params ?? [];
      out.push({ id: at.id, queue: at.queue, module: child.name, params, status: statusOf(await child.getState()) });
    }
  }
  return out.concat(
    await settledDependencies(
      ctx,
      gates.map((g) => g.data.dependency),
    ),
  );
}

/** Dependencies by identity: the run that completed (or failed) for each, or `pending`. */
async function settledDependencies(ctx: RouteContext, refs: readonly DependencyRef[]): Promise<Dependency[]> {
  const list = refs.slice(0, EDGES_MAX);
  const outcomes = await ctx.client.store.outcomes(list.map(dependencyRefKey));
  return list.map((d, i) => {
    const o = outcomes[i];
    return { ...(o ? { id: o.jobId } : {}), module: d.module, params: d.params, status: o?.state ?? 'pending' };
  });
}

/** Its flow parent, and the tasks whose gates wait on its identity. */
async function waitingDependents(ctx: RouteContext, view: TaskView, job: Job | undefined): Promise<Dependent[]> {
  const parents: string[] = [];
  if (job?.parentKey) parents.push(job.parentKey);
  if (view.dependencyKey) {
    const gateIds = (await ctx.client.store.waiters(view.dependencyKey)).slice(0, EDGES_MAX);
    const gateQueue = ctx.client.queue(GATE_QUEUE);
    for (const gateId of gateIds) {
      const gate = await Job.fromId(gateQueue, gateId);
      if (gate?.parentKey) parents.push(gate.parentKey);
    }
  }
  const out: Dependent[] = [];
  for (const key of new Set(parents)) {
    const at = parseJobKey(key, ctx.config.prefix);
    const parent = at && (await Job.fromId(ctx.client.queue(at.queue), at.id));
    if (at && parent)
      out.push({ id: at.id, queue: at.queue, module: parent.name, status: statusOf(await parent.getState()) });
  }
  return out;
}
