import { readFileSync } from 'node:fs';
import { releaseParentIfNoPendingDependencies } from 'bullmq/dist/esm/scripts/releaseParentIfNoPendingDependencies-2.js';
import { removeJob } from 'bullmq/dist/esm/scripts/removeJob-2.js';
import { version } from 'bullmq/dist/esm/version.js';
import { TaskmasterError } from '../errors.ts';
import { SETTLE_ONE_LUA } from './identity-store.ts';

/** BullMQ's scripts no longer have the shape the cancel script is built from. */
export class BullmqShapeError extends TaskmasterError {
  override readonly code = 'BULLMQ_SHAPE';
}

const CANCEL_LUA = readFileSync(new URL('./cancel.lua', import.meta.url), 'utf8');
const SWEEP_LUA = readFileSync(new URL('./sweep-cancels.lua', import.meta.url), 'utf8');

/** The header lines of BullMQ's removeJob that say what its KEYS and ARGV are. */
const REMOVE_JOB_HEADER = [
  'local jobId = ARGV[1]',
  'local shouldRemoveChildren = ARGV[2]',
  'local prefix = ARGV[3]',
  'local jobKey = KEYS[1]',
  'local repeatKey = KEYS[2]',
];
const MOVE_PARENT = 'local function moveParentToWaitIfNeeded(parentQueueKey, parentKey, parentId, timestamp)';

function shapeError(what: string): BullmqShapeError {
  return new BullmqShapeError(`cannot build the cancel script: BullMQ ${version}'s ${what} has changed shape`);
}

/**
 * BullMQ's moveParentToWaitIfNeeded — what a failing child with continueParentOnFailure calls
 * to release its parent — as the local `moveParentOn`, taken with its helpers from the one
 * compiled script that defines them without other code around them.
 */
function parentMover(): string {
  const { content } = releaseParentIfNoPendingDependencies;
  const from = content.indexOf('\n-- Includes');
  const to = content.lastIndexOf('\nmoveParentToWaitIfNoPendingDependencies(');
  const functions = from >= 0 && to > from ? content.slice(from, to) : '';
  if (!functions.includes(MOVE_PARENT) || /\b(KEYS|ARGV)\b/.test(functions)) {
    throw shapeError('releaseParentIfNoPendingDependencies');
  }
  return `local moveParentOn\ndo\n${functions}\nmoveParentOn = moveParentToWaitIfNeeded\nend`;
}

/** BullMQ's removeJob script as the local function `bullmqRemoveJob(KEYS, ARGV)`. */
function jobRemover(): string {
  const header = REMOVE_JOB_HEADER.every((line) => removeJob.content.includes(`\n${line}\n`));
  if (removeJob.keys !== 2 || !header) throw shapeError('removeJob');
  return `local function bullmqRemoveJob(KEYS, ARGV)\n${removeJob.content}\nend`;
}

/** The cancel script (cancel.lua, with what it runs after); built when first defined. */
export function cancelScript(): string {
  return `local rcall = redis.call\n${jobRemover()}\n${parentMover()}\n${SETTLE_ONE_LUA}\n${CANCEL_LUA}`;
}

/** The sweep of cancel requests whose runs are over (sweep-cancels.lua). */
export function sweepCancelsScript(): string {
  return SWEEP_LUA;
}
