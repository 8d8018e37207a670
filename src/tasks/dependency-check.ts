import { Job } from 'bullmq';
import type { Components } from '../components.ts';
import { DependencyFailedError } from '../errors.ts';
import { GATE_QUEUE } from '../queue/keys.ts';
import { describeDependency } from './gates.ts';
import { dependencyRefKey } from './identity.ts';
import { taskFromJob, type DependencyRef } from './task.ts';

/** What the check reads: a child job from its queue, and the identities' outcome records. */
export type DependencyReader = Pick<Components, 'queues' | 'store'>;

/**
 * A dependent job reaches a consumer when all its dependencies settled, or as soon as one
 * failed for good (children are added with `continueParentOnFailure`) or was cancelled before
 * it ran (see cancel.lua). Whoever is about to run it — a worker, or the bridge on behalf of a
 * remote runner — calls this first: it throws a DependencyFailedError naming the failed
 * dependency, and the dependent fails for good.
 */
export async function assertDependenciesSucceeded(job: Job, reader: DependencyReader): Promise<void> {
  const failures = Object.entries(await job.getIgnoredChildrenFailures());
  if (!failures.length) return;
  const [childKey, reason] = failures[0]!;
  const parts = childKey.split(':');
  const childId = parts.pop()!;
  const childQueue = parts.pop()!;
  // A gate's reason already names its dependency; a direct child's is the child's own error,
  // which may be about the child's own dependency, so the child is named in front of it.
  if (childQueue === GATE_QUEUE) throw new DependencyFailedError(reason);
  // A child that cannot be read is looked for as gone: the dependent fails either way, only less precisely named.
  const child = await Job.fromId(reader.queues.get(childQueue), childId).catch(() => undefined);
  const dep = child ? taskFromJob(child) : await gone(job, childId, reader);
  const name = dep ? `${describeDependency(dep)} (job ${childId})` : childKey;
  throw new DependencyFailedError(`dependency ${name} failed for good: ${reason}`);
}

/**
 * Which of the dependent's dependencies a child job that is gone stood for (removed by a cancel,
 * or trimmed after it failed): the one whose identity's record names that job.
 */
async function gone(job: Job, childId: string, reader: DependencyReader): Promise<DependencyRef | undefined> {
  const deps = taskFromJob(job).dependencies;
  // Unread records leave the child unnamed: the dependent fails all the same, with the child's key.
  const outcomes = await reader.store.outcomes(deps.map(dependencyRefKey)).catch(() => []);
  return deps.find((_, i) => outcomes[i]?.jobId === childId);
}
