import type { AddedTask } from '../tasks/task-client.ts';
import { taskFromJob, type JobLike, type JobTask, type Task } from '../tasks/task.ts';

/**
 * A task as the 2016 master stored and sent it (its mongoose document as JSON). Runners get it
 * as a JSON string in `task:send` / `task:run` and echo it back in `task:done` / `task:error`;
 * feeders get it in `task:added`. Fields after `assigned` are Taskmaster's additions, which a
 * legacy client ignores.
 */
export interface LegacyTask extends Task {
  /** The BullMQ job id. */
  _id: string;
  /** Who holds the task and since when (unix seconds); `lease` tells one hand-out from the next. */
  assigned?: { who: string; when: number; lease?: string };
  /** Which run this is: 1 for the first, 2 for the first retry, … */
  attempt?: number;
  /** In `task:added`: an identical task was already queued; `_id` names it. */
  duplicate?: boolean;
}

/** A stored task from what TaskClient.add answered. */
export function legacyFromAdded(added: AddedTask): LegacyTask {
  const t = added.task;
  return {
    _id: added.id,
    module: t.module,
    params: t.params,
    priority: t.priority,
    timeout: t.timeout,
    dependencies: t.dependencies,
    created: t.created,
    queue: added.queue,
    duplicate: added.duplicate,
    ...(t.scope !== undefined ? { scope: t.scope } : {}),
  };
}

/** A job as the legacy task a runner receives (`t` is `taskFromJob(job)`, when the caller has it). */
export function legacyFromJob(
  job: JobLike & { id: string; queueName: string; attemptsMade?: number },
  t: JobTask = taskFromJob(job),
  defaultTimeout: number,
  assigned?: LegacyTask['assigned'],
): LegacyTask {
  const out: LegacyTask = {
    _id: job.id,
    module: t.module,
    params: t.params,
    priority: t.priority,
    timeout: t.timeout ?? defaultTimeout,
    dependencies: t.dependencies,
    created: t.created,
  };
  if (assigned) out.assigned = assigned;
  out.queue = job.queueName;
  if (t.scope !== undefined) out.scope = t.scope;
  if (job.attemptsMade !== undefined) out.attempt = job.attemptsMade + 1;
  return out;
}

/** What a runner names when it reports on a task: the job id and, when echoed, the lease. */
export interface TaskRef {
  id: string;
  lease?: string;
}

/**
 * Reads the task a runner sends back: the JSON string it was given (the 2015 and 2016 runners
 * echo `JSON.stringify(task)`), the parsed object, or a bare id. Returns undefined when no id
 * can be found.
 */
export function parseTaskRef(value: unknown): TaskRef | undefined {
  let v = value;
  if (typeof v === 'string') {
    const text = v.trim();
    if (!text.startsWith('{')) return text && text.length <= 200 ? { id: text } : undefined;
    try {
      v = JSON.parse(text);
    } catch {
      return undefined;
    }
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const id = o._id ?? o.id;
  if (typeof id !== 'string' && typeof id !== 'number') return undefined;
  const assigned = o.assigned as Record<string, unknown> | undefined;
  const lease =
    assigned && typeof assigned === 'object' && typeof assigned.lease === 'string' ? assigned.lease : undefined;
  return { id: String(id), lease };
}

/**
 * A readable message from whatever a runner reports as an error: an Error serialised by
 * Socket.IO (which sends `{}` for an Error, losing its message), a string, or an object.
 */
export function errorMessage(err: unknown): string {
  if (typeof err === 'string' && err) return err.slice(0, 10_000);
  if (err && typeof err === 'object') {
    const o = err as Record<string, unknown>;
    if (typeof o.message === 'string' && o.message) return o.message.slice(0, 10_000);
    let text: string | undefined;
    try {
      text = JSON.stringify(err);
    } catch {
      text = undefined;
    }
    if (text && text !== '{}') return text.slice(0, 10_000);
  }
  if (typeof err === 'number' || typeof err === 'boolean') return String(err);
  return 'the runner reported an error without a message';
}

/**
 * Escapes every character above U+007F as `\uXXXX`. Applied to the encoded Socket.IO packets
 * sent to protocol-3 clients (socket.io-client 1.x and 2.x): over HTTP long-polling a 1.x
 * client counts the payload in characters while the bytes are UTF-8, so non-ASCII text arrives
 * garbled or drops the transport. Inside JSON the escape decodes to the same character, so the
 * client gets exactly what was sent; outside JSON strings an encoded packet is ASCII.
 */
export function escapeNonAscii(text: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[^\x00-\x7f]/.test(text)) return text;
  // eslint-disable-next-line no-control-regex
  return text.replace(/[^\x00-\x7f]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}
