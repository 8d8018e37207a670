import type { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { appendFinishArgs } from '../queue/bullmq/finish-args.ts';
import { moveToFinishedCommand } from '../queue/bullmq/move-to-finished.ts';
import { encodeScriptCommands } from '../queue/command-encoding.ts';
import { keysFor } from '../queue/keys.ts';
import { finishScript } from '../queue/scripts.ts';
import type { Outcome } from '../tasks/identity-store.ts';
import { moduleKey } from '../tasks/identity.ts';
import { storedKeys } from '../tasks/task.ts';

export { finishScript };

/**
 * What passIdentityKeys hands the finishing script after BullMQ's arguments, in this order
 * (ARGV[10..17] of finish-record.lua).
 */
const HANDED = ['task', 'dependency', 'live', 'waiters', 'record', 'module', 'moduleWaiters', 'done'] as const;
/** One string per handed argument, in HANDED's order. */
type Handed = StringsFor<typeof HANDED>;
type StringsFor<T extends readonly unknown[]> = { [K in keyof T]: string };
/** What is handed for a job without identity keys. */
const NONE_HANDED = HANDED.map(() => '');

/**
 * Makes `connection` finish jobs with finishScript. BullMQ defines its scripts on a connection
 * only where they are not defined yet, and this replaces its own where it already did.
 * Returns false (and changes nothing) when the script cannot be built.
 */
export function installFinishScript(connection: Redis): boolean {
  const lua = finishScript();
  if (!lua) return false;
  const { name, keys } = moveToFinishedCommand;
  connection.defineCommand(name, { numberOfKeys: keys, lua });
  // Sent once per job: worth encoding the quicker way.
  encodeScriptCommands(connection, name);
  return true;
}

/**
 * Makes `worker` hand the finishing script what it needs to record each job's outcome: the
 * identity keys, our keys for them and the completion record, built here rather than in the
 * script (see finish-record.lua), so that the script need not read and decode the job's data
 * nor make strings in Redis, where every job's finishing step is spent and which a busy queue
 * waits on. The identity keys come from the job data the worker has already parsed, by the
 * same test as JobTask.keysStored.
 */
export function passIdentityKeys(worker: Worker): void {
  const keys = keysFor(worker.opts.prefix ?? 'bull');
  const queue = worker.name;
  appendFinishArgs(worker, (job, jobId, at) => {
    const ids = storedKeys(job.data);
    // None (a plain BullMQ producer's job) is said too, so the script does not look for them.
    if (!ids) return NONE_HANDED;
    // The record as Outcomes writes it; `at` is the finishing time BullMQ hands the script.
    const record: Outcome = { jobId, at, queue };
    const mk = moduleKey(job.name);
    return [
      ids.task,
      ids.dependency,
      keys.live,
      keys.waiters(ids.dependency),
      JSON.stringify(record),
      mk,
      keys.waiters(mk),
      keys.done,
    ] satisfies Handed;
  });
}
