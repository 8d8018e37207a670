import { BullmqShapeError } from './errors.ts';
import { promote } from './scripts.ts';
import { bullmqVersion } from './versions.ts';

/**
 * BullMQ's promote script as the local function `bullmqPromote(KEYS, ARGV)`: KEYS the queue's
 * delayed, wait, paused, meta, prioritized, active, pc, events and marker keys; ARGV the
 * queue's key prefix, the job id (as BullMQ's Job.promote passes them). Throws a
 * BullmqShapeError (naming `what` is being built) when that has changed.
 */
export function promoteAsFunction(what: string): string {
  if (promote.keys !== 9 || !promote.content.includes('\nlocal jobId = ARGV[2]\n')) {
    throw new BullmqShapeError(`cannot build ${what}: BullMQ ${bullmqVersion}'s promote has changed shape`);
  }
  return `local function bullmqPromote(KEYS, ARGV)\n${promote.content}\nend`;
}
