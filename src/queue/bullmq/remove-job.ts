import { BullmqShapeError } from './errors.ts';
import { removeJob } from './scripts.ts';
import { bullmqVersion } from './versions.ts';

/** The header lines of BullMQ's removeJob that say what its KEYS and ARGV are. */
const REMOVE_JOB_HEADER = [
  'local jobId = ARGV[1]',
  'local shouldRemoveChildren = ARGV[2]',
  'local prefix = ARGV[3]',
  'local jobKey = KEYS[1]',
  'local repeatKey = KEYS[2]',
];
/** The line of BullMQ's removeJob after which its arguments are all read. */
const ANCHOR = 'local repeatKey = KEYS[2]\n';

/**
 * BullMQ's removeJob script as the local function `bullmqRemoveJob(KEYS, ARGV)`: KEYS job key,
 * repeat key; ARGV job id, '1' to remove its children, the queue's key prefix. Throws a
 * BullmqShapeError (naming `what` is being built) when its header has changed.
 */
export function removeJobAsFunction(what: string): string {
  const header = REMOVE_JOB_HEADER.every((line) => removeJob.content.includes(`\n${line}\n`));
  if (removeJob.keys !== 2 || !header) {
    throw new BullmqShapeError(`cannot build ${what}: BullMQ ${bullmqVersion}'s removeJob has changed shape`);
  }
  return `local function bullmqRemoveJob(KEYS, ARGV)\n${removeJob.content}\nend`;
}

/**
 * BullMQ's removeJob with `block` run once its arguments are read (its locals `jobId`, `prefix`,
 * `jobKey`, `rcall` and its helper functions in scope), with the key count it is defined with;
 * undefined when BullMQ's script no longer has that line exactly once.
 */
export function spliceIntoRemoveJob(block: string): string | undefined {
  const { content } = removeJob;
  const at = content.indexOf(ANCHOR);
  if (at < 0 || content.indexOf(ANCHOR, at + 1) >= 0) return undefined;
  const end = at + ANCHOR.length;
  return `${content.slice(0, end)}${block}\n${content.slice(end)}`;
}
