import type { Job } from 'bullmq';
import { CANCELLED_REASON } from '../tasks/cancellations.ts';
import { taskFromJob, type DependencyRef } from '../tasks/task.ts';

export type ArchivedStatus = 'completed' | 'failed' | 'cancelled';

/**
 * One finished task in the archive (documented in the README). `_id` is `<queue>:<job id>`, so
 * archiving a job again replaces its document instead of adding a second one.
 */
export interface TaskDocument {
  _id: string;
  jobId: string;
  queue: string;
  module: string;
  params: unknown[];
  /** Legacy scale: higher ran sooner. */
  priority: number;
  timeout?: number;
  dependencies: DependencyRef[];
  /** The task's scope, part of its identity, when it has one. */
  scope?: string;
  /** Identity keys (see tasks/identity.ts): `dependencyKey` answers late dependencies. */
  taskKey: string;
  dependencyKey: string;
  status: ArchivedStatus;
  result?: unknown;
  error?: { message: string; stack?: string; stacks?: string[] };
  /** Runs that ended in a failure or a success (BullMQ's attemptsMade). */
  attempts: number;
  /** Runs started, including ones a crash or a disconnected runner cut short. */
  starts: number;
  created: Date;
  started?: Date;
  finished: Date;
  /** ms from the last start to the finish. */
  duration?: number;
  /**
   * `host:pid` of the worker process, or for a remote runner `runner:<name>@<address>`
   * (`runner:<address>` when it gave no name; see bridge/presence.ts runnerLabel).
   */
  ranBy?: string;
  /** Ids of the tasks `taskmaster retry` queued from this one. */
  retriedAs?: string[];
  /**
   * Set when MongoDB could not store the document as it was: which of params, result, error
   * and dependencies were replaced by `{truncated: true, bytes, reason}`, and why (see storable.ts).
   */
  reduced?: { reason: string; fields: string[] };
  archivedAt: Date;
}

/** The fields of a BullMQ job the archive reads (a Job, or its JSON as stored). */
export type FinishedJob = Pick<
  Job,
  | 'id'
  | 'name'
  | 'data'
  | 'opts'
  | 'timestamp'
  | 'processedOn'
  | 'finishedOn'
  | 'attemptsMade'
  | 'failedReason'
  | 'stacktrace'
  | 'returnvalue'
  | 'queueName'
> & {
  attemptsStarted?: number;
  processedBy?: string;
};

export function documentId(queue: string, jobId: string): string {
  return `${queue}:${jobId}`;
}

/** Builds the document of a finished job. `status` as decided by where the job was found. */
export function documentFromJob(job: FinishedJob, status: 'completed' | 'failed' | 'cancelled'): TaskDocument {
  const jobId = job.id!;
  const task = taskFromJob({ ...job, id: jobId });
  const finished = new Date(job.finishedOn ?? Date.now());
  const cancelled = status === 'cancelled' || (status === 'failed' && job.failedReason === CANCELLED_REASON);
  const doc: TaskDocument = {
    _id: documentId(job.queueName, jobId),
    jobId,
    queue: job.queueName,
    module: task.module,
    params: task.params,
    priority: task.priority,
    dependencies: task.dependencies,
    taskKey: task.taskKey,
    dependencyKey: task.dependencyKey,
    status: cancelled ? 'cancelled' : status,
    attempts: job.attemptsMade ?? 0,
    starts: job.attemptsStarted ?? job.attemptsMade ?? 0,
    created: new Date(job.timestamp || task.created * 1000),
    finished,
    archivedAt: new Date(),
  };
  if (task.timeout !== undefined) doc.timeout = task.timeout;
  if (task.scope !== undefined) doc.scope = task.scope;
  if (job.processedOn) {
    doc.started = new Date(job.processedOn);
    doc.duration = Math.max(0, finished.getTime() - job.processedOn);
  }
  if (job.processedBy) doc.ranBy = job.processedBy;
  if (status === 'completed') doc.result = job.returnvalue ?? null;
  else {
    const stacks = (job.stacktrace ?? []).filter((s): s is string => typeof s === 'string' && s.length > 0);
    doc.error = { message: job.failedReason || (cancelled ? CANCELLED_REASON : 'unknown error') };
    if (stacks.length) doc.error.stack = stacks.at(-1);
    if (stacks.length > 1) doc.error.stacks = stacks;
  }
  return doc;
}

/**
 * What is kept of a task cancelled before it ran, whose job is removed from Redis at once (see
 * tasks/cancellations.ts): enough to archive it.
 */
export interface CancelledSnapshot {
  queue: string;
  id: string;
  name: string;
  data: unknown;
  priority?: number;
  timestamp: number;
  attemptsMade: number;
  cancelledAt: number;
}

export function jobFromSnapshot(s: CancelledSnapshot): FinishedJob {
  return {
    id: s.id,
    name: s.name,
    queueName: s.queue,
    data: s.data,
    opts: { priority: s.priority },
    timestamp: s.timestamp,
    finishedOn: s.cancelledAt,
    attemptsMade: s.attemptsMade,
    failedReason: CANCELLED_REASON,
    stacktrace: [],
  } as unknown as FinishedJob;
}
