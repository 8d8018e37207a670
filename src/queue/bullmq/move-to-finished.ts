import { moveToFinished } from './scripts.ts';
import { bullmqVersion } from './versions.ts';

/** The line of BullMQ's moveToFinished right after it has checked and removed the job's lock. */
export const MOVE_TO_FINISHED_ANCHOR = '    updateJobFields(jobIdKey, ARGV[9]);\n';
/** How many arguments BullMQ hands moveToFinished (the anchor's ARGV[9] is the last). */
export const MOVE_TO_FINISHED_ARGS = 9;

/**
 * BullMQ's moveToFinished with `block` run right after the job's lock is checked, where the
 * script's locals (`jobIdKey`, `rcall`) are in scope; undefined when BullMQ's script no longer
 * has the anchor line exactly once.
 */
export function spliceIntoMoveToFinished(block: string): string | undefined {
  const { content } = moveToFinished;
  const at = content.indexOf(MOVE_TO_FINISHED_ANCHOR);
  if (at < 0 || content.indexOf(MOVE_TO_FINISHED_ANCHOR, at + 1) >= 0) return undefined;
  return `${content.slice(0, at)}\n${block}\n${content.slice(at)}`;
}

/**
 * The name BullMQ defines moveToFinished under on a connection, and its key count: a script
 * defined under this name replaces BullMQ's own for every job that connection finishes.
 */
export const moveToFinishedCommand = {
  name: `${moveToFinished.name}:${bullmqVersion}`,
  keys: moveToFinished.keys,
};
