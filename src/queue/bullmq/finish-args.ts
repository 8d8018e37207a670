import type { Job, Worker } from 'bullmq';
import { MOVE_TO_FINISHED_ARGS } from './move-to-finished.ts';

/** The job as BullMQ hands it to moveToFinishedArgs. */
export interface FinishingJob {
  id?: string;
  name: string;
  data: unknown;
}

/** BullMQ's protected RedisQueueBackend#moveToFinishedArgs, with the keys it is sent with. */
type FinishArgs = (
  job: FinishingJob,
  val: unknown,
  propVal: unknown,
  shouldRemove: unknown,
  target: unknown,
  token: unknown,
  timestamp: unknown,
  fetchNext?: unknown,
  fieldsToUpdate?: unknown,
) => unknown[];
type Backend = { moveToFinishedArgs: FinishArgs; moveToFinishedKeys: unknown[] };

/**
 * Makes `worker` hand its finishing script (see spliceIntoMoveToFinished) the strings `extra`
 * gives after BullMQ's own arguments. `extra` gets the job, its id and the finishing time BullMQ
 * hands the script; it is not asked where BullMQ's arguments are not the count expected, and
 * then the script is sent BullMQ's arguments alone. Returns false, changing nothing, where the
 * worker's arguments for a placeholder job are not that count: nothing would be handed.
 */
export function appendFinishArgs(
  worker: Worker,
  extra: (job: FinishingJob, jobId: string, finishedAt: number) => string[],
): boolean {
  const backend = worker.backend as unknown as Backend;
  if (typeof backend.moveToFinishedArgs !== 'function' || !Array.isArray(backend.moveToFinishedKeys)) return false;
  const args: FinishArgs = backend.moveToFinishedArgs.bind(backend);
  // Its keys array is BullMQ's own, set afresh for each job: a placeholder leaves nothing behind.
  const placeholder = { id: '', name: '', data: null, opts: {} };
  const probe = args(placeholder, undefined, 'returnvalue', false, 'completed', '', 0, false);
  if (probe.length !== backend.moveToFinishedKeys.length + MOVE_TO_FINISHED_ARGS) return false;
  backend.moveToFinishedArgs = (
    job,
    val,
    propVal,
    shouldRemove,
    target,
    token,
    timestamp,
    fetchNext,
    fieldsToUpdate,
  ) => {
    const out = args(job, val, propVal, shouldRemove, target, token, timestamp, fetchNext, fieldsToUpdate);
    const n = backend.moveToFinishedKeys.length;
    if (out.length !== n + MOVE_TO_FINISHED_ARGS) return out;
    out.push(...extra(job, out[n] as string, out[n + 1] as number));
    return out;
  };
  return true;
}

/**
 * What finishes jobs for `of` (a worker, or a job it fetched: a job is finished by its worker's
 * backend), to tell whether a job's finishing goes through a worker appendFinishArgs changed.
 */
export function finishingBackend(of: Worker | Job): object {
  return (of as unknown as { backend: object }).backend;
}
