import { Job, type Queue } from 'bullmq';
import type { TaskClient, AddedTask } from '../tasks/task-client.ts';
import { TaskmasterError } from '../errors.ts';
import type { Queues } from '../queue/queues.ts';
import { isJobPriority } from '../tasks/priority.ts';
import { validateTasks } from '../tasks/validate.ts';
import { documentFromJob, documentId, type FinishedJob, type TaskDocument } from './document.ts';
import { FINISHED_STATUSES, type HistoryQuery, type TaskSearch, type TaskStatus } from './query.ts';
import type { ArchiveStore } from './store.ts';

/** A task as history shows it: the archive document's fields, wherever the task is now. */
export type TaskView = Omit<TaskDocument, 'status' | 'finished' | 'archivedAt'> & {
  status: TaskStatus;
  finished?: Date;
  archivedAt?: Date;
  /** Where it was found: still in Redis (live or kept finished), or only in the archive. */
  source: 'redis' | 'archive';
};

export class TaskNotFoundError extends TaskmasterError {
  override readonly code = 'TASK_NOT_FOUND';
}

export class NotRetriableError extends TaskmasterError {
  override readonly code = 'NOT_RETRIABLE';
}

/** BullMQ's states as history names them. */
const REDIS_STATES: Record<string, TaskStatus> = {
  wait: 'waiting',
  waiting: 'waiting',
  prioritized: 'prioritized',
  delayed: 'delayed',
  'waiting-children': 'waiting-children',
  active: 'active',
  completed: 'completed',
  failed: 'failed',
};

/** Jobs read from Redis per state for a search (the live queue and the kept finished jobs). */
const REDIS_SCAN = 2000;

/**
 * One search over live and archived tasks: Redis for what is waiting, running or still kept
 * there, the archive (when there is one) for everything that finished. A task found in both is
 * shown once, as Redis has it.
 */
export class History {
  /**
   * @param client adds a retried task
   * @param queues where a task still in Redis is read: the process's queues (its components')
   * @param store the archive; unset: history is what Redis still has
   */
  constructor(
    private readonly client: TaskClient,
    private readonly queues: Pick<Queues, 'get'>,
    private readonly store?: ArchiveStore,
  ) {}

  get archived(): boolean {
    return !!this.store;
  }

  async search(q: HistoryQuery & SearchFilters): Promise<TaskView[]> {
    if (q.id) return this.byId(q.id, q);
    const wanted = new Set<TaskStatus>(q.statuses ?? (Object.values(REDIS_STATES) as TaskStatus[]).concat('cancelled'));
    const finished = FINISHED_STATUSES.filter((s) => wanted.has(s));
    const [live, archived] = await Promise.all([
      this.fromRedis(this.queues.get(q.queue), q, wanted),
      this.store && finished.length ? this.store.find({ ...q, statuses: finished }) : Promise.resolve([]),
    ]);
    const byId = new Map<string, TaskView>();
    for (const d of archived) byId.set(d._id, { ...d, source: 'archive' });
    for (const v of live) byId.set(v._id, v);
    const when = (v: TaskView) => (v.finished ?? v.started ?? v.created).getTime();
    return [...byId.values()].sort((a, b) => when(b) - when(a) || (a._id < b._id ? 1 : -1)).slice(0, q.limit);
  }

  private async fromRedis(queue: Queue, q: HistoryQuery & SearchFilters, wanted: Set<TaskStatus>): Promise<TaskView[]> {
    const states = Object.keys(REDIS_STATES).filter(
      (s) => s !== 'wait' && (wanted.has(REDIS_STATES[s]!) || (s === 'failed' && wanted.has('cancelled'))),
    );
    const out: TaskView[] = [];
    for (const state of states) {
      const jobs = await queue.getJobs([state as 'completed'], 0, REDIS_SCAN - 1, false);
      for (const job of jobs) {
        if (!job?.id || (q.module && job.name !== q.module)) continue;
        const v = viewOf(job, REDIS_STATES[state]!);
        if (!wanted.has(v.status)) continue;
        const t = (v.finished ?? v.started ?? v.created).getTime();
        if ((q.since && t < q.since.getTime()) || (q.until && t > q.until.getTime())) continue;
        if (!matchesText(v, q)) continue;
        out.push(v);
      }
    }
    return out;
  }

  /** One page of a search, newest first; `hasMore` when a next page has tasks. */
  async searchPage(s: TaskSearch): Promise<{ page: number; pageSize: number; hasMore: boolean; tasks: TaskView[] }> {
    const end = s.page * s.pageSize;
    const found = await this.search({ ...s, limit: end + 1 });
    return {
      page: s.page,
      pageSize: s.pageSize,
      hasMore: found.length > end,
      tasks: found.slice(end - s.pageSize, end),
    };
  }

  /** The search of one id: the task, if it has the other properties asked for. */
  private async byId(id: string, q: HistoryQuery & SearchFilters): Promise<TaskView[]> {
    const v = await this.get(id, q.queue);
    if (!v || (q.module && v.module !== q.module) || (q.statuses && !q.statuses.includes(v.status))) return [];
    const t = (v.finished ?? v.started ?? v.created).getTime();
    if ((q.since && t < q.since.getTime()) || (q.until && t > q.until.getTime())) return [];
    return matchesText(v, q) ? [v] : [];
  }

  /** A task by id, whether still in Redis or only in the archive. */
  async get(id: string, queueName: string): Promise<TaskView | undefined> {
    const queue = this.queues.get(queueName);
    const job = await Job.fromId(queue, id);
    if (job) {
      const state = await job.getState();
      return viewOf(job, REDIS_STATES[state] ?? 'waiting');
    }
    const doc = await this.store?.get(documentId(queueName, id));
    return doc ? { ...doc, source: 'archive' } : undefined;
  }

  /**
   * Queues a finished task again (a new task with the same module, params, priority, timeout
   * and dependencies; dedup applies). The archived one records the new id in `retriedAs`.
   */
  async retry(id: string, queueName: string): Promise<{ from: TaskView; added: AddedTask }> {
    const from = await this.get(id, queueName);
    if (!from) {
      throw new TaskNotFoundError(
        `no task with id ${id} in queue ${queueName}` +
          (this.store ? ', in Redis or in the archive' : ' (no archive configured: MONGO_URL is not set)'),
      );
    }
    if (!(FINISHED_STATUSES as readonly string[]).includes(from.status)) {
      throw new NotRetriableError(
        `task ${id} is ${from.status}, not finished: only completed, failed or cancelled tasks can be retried`,
      );
    }
    const lost = from.reduced?.fields.filter((f) => f === 'params' || f === 'dependencies') ?? [];
    if (lost.length) {
      const without = `${lost.join(' and ')} (${from.reduced!.reason})`;
      throw new NotRetriableError(`task ${id} was archived without its ${without}: it cannot be retried`);
    }
    // The priority is the job's own, as the legacy scale shows it (tasks/priority.ts): kept as
    // it was, also where a BullMQ-native producer chose one a legacy producer cannot ask for.
    if (!isJobPriority(from.priority)) {
      throw new NotRetriableError(`task ${id} has priority ${from.priority}, which maps to no BullMQ priority`);
    }
    const [task] = validateTasks(
      {
        module: from.module,
        params: from.params,
        ...(from.timeout !== undefined ? { timeout: from.timeout } : {}),
        dependencies: from.dependencies,
        ...(from.scope !== undefined ? { scope: from.scope } : {}),
        queue: queueName,
        // A retry runs again even when the task completed within the dedup window.
        rerun: true,
      },
      this.client.config,
    );
    const [added] = await this.client.addTasks([{ ...task!, priority: from.priority }]);
    if (this.store) await this.store.addRetry(from._id, added!.id).catch(() => undefined);
    return { from, added: added! };
  }
}

/** What a search may ask besides a history query. */
export interface SearchFilters {
  id?: string;
  /** Case-insensitive text in the params (as JSON). */
  text?: string;
  /** Case-insensitive text in the failure reason or its stack. */
  error?: string;
}

/** Whether a task has the params text and error text a search asks for. */
export function matchesText(v: Pick<TaskDocument, 'params' | 'error'>, f: SearchFilters): boolean {
  if (
    f.text &&
    !JSON.stringify(v.params ?? [])
      .toLowerCase()
      .includes(f.text.toLowerCase())
  )
    return false;
  if (f.error) {
    const e = v.error;
    const text = e ? `${e.message ?? ''}\n${e.stack ?? ''}` : '';
    if (!text.toLowerCase().includes(f.error.toLowerCase())) return false;
  }
  return true;
}

function viewOf(job: Job, status: TaskStatus): TaskView {
  if (status === 'completed' || status === 'failed') {
    const { archivedAt, ...doc } = documentFromJob(job as FinishedJob, status);
    void archivedAt;
    return { ...doc, source: 'redis' };
  }
  const { finished, archivedAt, status: _s, ...doc } = documentFromJob(job as FinishedJob, 'completed');
  void finished;
  void archivedAt;
  void _s;
  delete (doc as Partial<TaskDocument>).result;
  return { ...doc, status, source: 'redis' };
}
