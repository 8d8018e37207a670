import { Job } from 'bullmq';
import type { TaskView } from '../archive/history.ts';
import type { RouteContext } from '../http/context.ts';
import { GATE_QUEUE, parseJobKey } from '../queue/keys.ts';
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
  /** Absent for a dependency on any completed task of the module. */
  params?: unknown[];
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

/** A task, wherever it is, with what it waits for and what waits for it. */
export async function taskDetail(ctx: RouteContext, id: string, queue: string): Promise<TaskDetail | undefined> {
  const view = await ctx.history.get(id, queue);
  if (!view) return undefined;
  const q = ctx.components.queues.get(queue);
  const job = view.source === 'redis' ? await Job.fromId(q, id) : undefined;
  const [logs, dependencies, dependents] = await Promise.all([
    job ? q.getJobLogs(id, 0, LOGS_MAX - 1).then((l) => l.logs) : Promise.resolve([]),
    dependenciesOf(ctx, view.dependencies, job),
    waitingDependents(ctx, view, job),
  ]);
  return { ...view, ...(job ? { progress: job.progress } : {}), logs, dependencies, dependents };
}

/**
 * What a task depends on, by identity: a task of its own batch (a flow child) with its id and
 * state; otherwise the run that completed (or failed) for good, or `pending`. Read from the
 * task's declared dependencies, since the gates that stood for the others leave once open.
 */
async function dependenciesOf(ctx: RouteContext, refs: readonly DependencyRef[], job?: Job): Promise<Dependency[]> {
  const list = refs.slice(0, EDGES_MAX);
  if (!list.length) return [];
  const keys = list.map(dependencyRefKey);
  const children = new Map<string, Dependency>();
  if (job) {
    const deps = await job.getDependencies({
      processed: { count: EDGES_MAX },
      unprocessed: { count: EDGES_MAX },
      failed: { count: EDGES_MAX },
      ignored: { count: EDGES_MAX },
    });
    const childKeys = [
      ...Object.keys(deps.processed ?? {}),
      ...(deps.unprocessed ?? []),
      ...(deps.failed ?? []),
      ...Object.keys(deps.ignored ?? {}),
    ];
    for (const key of childKeys) {
      const at = parseJobKey(ctx.config.prefix, key);
      if (!at || at.queue === GATE_QUEUE) continue;
      const child = await ctx.history.get(at.id, at.queue);
      if (child) {
        const { module, params, status } = child;
        children.set(child.dependencyKey, { id: at.id, queue: at.queue, module, params, status });
      }
    }
  }
  const outcomes = await ctx.components.store.outcomes(keys.filter((k) => !children.has(k)));
  let next = 0;
  return list.map((d, i) => {
    const child = children.get(keys[i]!);
    if (child) return child;
    const o = outcomes[next++];
    const params = d.params ? { params: d.params } : {};
    return { ...(o ? { id: o.jobId } : {}), module: d.module, ...params, status: o?.state ?? 'pending' };
  });
}

/** Its flow parent, and the tasks whose gates wait on its identity. */
async function waitingDependents(ctx: RouteContext, view: TaskView, job: Job | undefined): Promise<Dependent[]> {
  const parents: string[] = [];
  if (job?.parentKey) parents.push(job.parentKey);
  if (view.dependencyKey) {
    const gateIds = (await ctx.components.store.waiters(view.dependencyKey)).slice(0, EDGES_MAX);
    const gateQueue = ctx.components.queues.get(GATE_QUEUE);
    for (const gateId of gateIds) {
      const gate = await Job.fromId(gateQueue, gateId);
      if (gate?.parentKey) parents.push(gate.parentKey);
    }
  }
  const out: Dependent[] = [];
  for (const key of new Set(parents)) {
    const at = parseJobKey(ctx.config.prefix, key);
    const parent = at && (await Job.fromId(ctx.components.queues.get(at.queue), at.id));
    if (at && parent)
      out.push({ id: at.id, queue: at.queue, module: parent.name, status: statusOf(await parent.getState()) });
  }
  return out;
}
