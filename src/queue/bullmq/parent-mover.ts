import { BullmqShapeError } from './errors.ts';
import { releaseParentIfNoPendingDependencies } from './scripts.ts';
import { bullmqVersion } from './versions.ts';

const MOVE_PARENT = 'local function moveParentToWaitIfNeeded(parentQueueKey, parentKey, parentId, timestamp)';

/**
 * BullMQ's moveParentToWaitIfNeeded — what a failing child with continueParentOnFailure calls
 * to release its parent — as the local `moveParentOn(parentQueueKey, parentKey, parentId,
 * timestamp)`, taken with its helpers from the one compiled script that defines them without
 * other code around them. Throws a BullmqShapeError (naming `what` is being built) when that
 * script has changed shape.
 */
export function parentMoverAsFunction(what: string): string {
  const { content } = releaseParentIfNoPendingDependencies;
  const from = content.indexOf('\n-- Includes');
  const to = content.lastIndexOf('\nmoveParentToWaitIfNoPendingDependencies(');
  const functions = from >= 0 && to > from ? content.slice(from, to) : '';
  if (!functions.includes(MOVE_PARENT) || /\b(KEYS|ARGV)\b/.test(functions)) {
    throw new BullmqShapeError(
      `cannot build ${what}: BullMQ ${bullmqVersion}'s releaseParentIfNoPendingDependencies has changed shape`,
    );
  }
  return `local moveParentOn\ndo\n${functions}\nmoveParentOn = moveParentToWaitIfNeeded\nend`;
}
