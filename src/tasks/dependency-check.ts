import { Job } from 'bullmq';
import { DependencyFailedError } from '../errors.ts';
import { describeDependency } from './gates.ts';
import type { TaskClient } from './task-client.ts';
import { taskFromJob } from './task.ts';

/**
 * A dependent job reaches a consumer when all its dependencies settled, or as soon as one
 * failed for good (children are added with `continueParentOnFailure`). Whoever is about to run
 * it — a worker, or the bridge on behalf of a remote runner — calls this first: it throws a
 * DependencyFailedError naming the failed dependency, and the dependent fails for good.
 */
export async function assertDependenciesSucceeded(job: Job, client: TaskClient): Promise<void> {
  const failures = Object.entries(await job.getIgnoredChildrenFailures());
  if (!failures.length) return;
  const [childKey, reason] = failures[0]!;
  // A gate's reason already names its dependency; a direct child's is the child's own error.
  if (reason.startsWith('dependency ')) throw new DependencyFailedError(reason);
  const parts = childKey.split(':');
  const childId = parts.pop()!;
  const childQueue = parts.pop()!;
  const child = await Job.fromId(client.queue(childQueue), childId).catch(() => undefined);
  const name = child ? `${describeDependency(taskFromJob(child))} (job ${childId})` : childKey;
  throw new DependencyFailedError(`dependency ${name} failed for good: ${reason}`);
}
