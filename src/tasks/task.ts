import { dependencyKey, dependencyRefKey, taskKey } from './identity.ts';
import { fromBullPriority } from './priority.ts';

/**
 * A dependency names a task by module and parameters (as in 2015), and its scope when it has
 * one; without params it is satisfied by any task of the module that completed.
 */
export interface DependencyRef {
  module: string;
  params?: unknown[];
  scope?: string;
}

/** A validated task, ready to be added. */
export interface Task {
  module: string;
  params: unknown[];
  /** Legacy scale: higher runs sooner. */
  priority: number;
  /** ms before a run is abandoned and retried. */
  timeout: number;
  dependencies: DependencyRef[];
  /** Unix seconds. */
  created: number;
  /** Queue to add to; the configured queue when absent. */
  queue?: string;
  /**
   * Part of the task's identity when present: tasks alike in all else but their scope are
   * distinct (a schedule's firings each use their own, so they never dedupe against each other).
   */
  scope?: string;
  /**
   * Queue a new run even when an identical task completed within the dedup window (a live
   * identical task still makes it a duplicate). Not part of the identity, not stored.
   */
  rerun?: boolean;
}

/**
 * Job data key that marks a job as carrying a Taskmaster envelope. Anything else a producer puts
 * in `data` is the task's one parameter, so a BullMQ-native `queue.add('sampleTask', { ticker })`
 * runs `sampleTask({ ticker })`, and an envelope's `params` array is spread as arguments.
 */
export const ENVELOPE_KEY = '$taskmaster';

/** What Taskmaster stores under ENVELOPE_KEY. */
export interface Envelope {
  v: 1;
  params: unknown[];
  timeout?: number;
  dependencies?: DependencyRef[];
  created?: number;
  scope?: string;
  /** Identity keys, computed once when added (see identity.ts); recomputed when absent. */
  keys?: { task: string; dependency: string };
}

export type JobData = { [ENVELOPE_KEY]: Envelope } | unknown;

export function toJobData(task: Task, keys?: Envelope['keys']): JobData {
  const envelope: Envelope = { v: 1, params: task.params, timeout: task.timeout, created: task.created, keys };
  if (task.dependencies.length) envelope.dependencies = task.dependencies;
  if (task.scope !== undefined) envelope.scope = task.scope;
  return { [ENVELOPE_KEY]: envelope };
}

function envelopeOf(data: unknown): Envelope | undefined {
  if (data && typeof data === 'object' && !Array.isArray(data) && Object.hasOwn(data, ENVELOPE_KEY)) {
    const env = (data as Record<string, unknown>)[ENVELOPE_KEY];
    if (env && typeof env === 'object' && Array.isArray((env as Envelope).params)) return env as Envelope;
  }
  return undefined;
}

/** The timeout a job's data carries, as TaskClient writes it; undefined when it has none. */
export function timeoutOf(data: unknown): number | undefined {
  return envelopeOf(data)?.timeout;
}

/**
 * The identity keys a job's data carries, as TaskClient writes them; undefined for jobs from
 * plain BullMQ producers (whose keys are computed when needed).
 */
export function storedKeys(data: unknown): Envelope['keys'] {
  return whole(envelopeOf(data)?.keys);
}

function whole(keys: Envelope['keys']): Envelope['keys'] {
  // Empty keys count as none: the finishing script is handed '' for "no keys".
  return keys && typeof keys.task === 'string' && typeof keys.dependency === 'string' && keys.task && keys.dependency
    ? keys
    : undefined;
}

/** The minimal view of a BullMQ job that the task model needs. */
export interface JobLike {
  id?: string;
  name: string;
  data: unknown;
  timestamp?: number;
  opts?: { priority?: number };
}

/** A job as a task, whatever produced it (legacy feeder, client API or a plain BullMQ producer). */
export interface JobTask {
  module: string;
  params: unknown[];
  priority: number;
  /** Undefined when the producer did not set one; the runner's default applies. */
  timeout?: number;
  dependencies: DependencyRef[];
  created: number;
  scope?: string;
  dependencyKey: string;
  taskKey: string;
  /**
   * Whether the job data carries both identity keys, as TaskClient writes them; the worker's
   * finishing script records the outcome of such jobs itself (queue/finishing.ts applies
   * the same test).
   */
  keysStored: boolean;
}

export function taskFromJob(job: JobLike): JobTask {
  const env = envelopeOf(job.data);
  const params = env ? env.params : job.data === undefined || job.data === null ? [] : [job.data];
  const dependencies = env?.dependencies ?? [];
  const scope = typeof env?.scope === 'string' ? env.scope : undefined;
  const keys = env?.keys;
  const depKey = keys?.dependency ?? dependencyKey(job.name, params, scope);
  const task: JobTask = {
    module: job.name,
    params,
    priority: fromBullPriority(job.opts?.priority),
    timeout: env?.timeout,
    dependencies,
    created: env?.created ?? Math.floor((job.timestamp ?? Date.now()) / 1000),
    dependencyKey: depKey,
    taskKey: keys?.task ?? taskKey(job.name, params, dependencies.map(dependencyRefKey), scope, depKey),
    keysStored: whole(keys) !== undefined,
  };
  if (scope !== undefined) task.scope = scope;
  return task;
}
