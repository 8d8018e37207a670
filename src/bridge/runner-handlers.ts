import type { Logger } from 'pino';
import { errorMessage, parseTaskRef } from './legacy-shape.ts';
import type { Peer } from './presence.ts';
import type { RunnerLeases } from './runner-leases.ts';

/** What a runner's event is answered with, through its acknowledgement callback when it gives one. */
export interface RunnerAnswer {
  ok: boolean;
  message?: string;
}

/** Idle slots one runner may have waiting at once. */
export const MAX_IDLE_SLOTS = 1000;
const QUEUE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Reads `task:request`'s optional argument: a runner name (2015), `{name}` (2016), or `{name, queue, modules}`. */
export function parseRequest(arg: unknown, defaultQueue: string): { name?: string; queue: string; modules?: string[] } | string {
  if (arg === undefined || arg === null) return { queue: defaultQueue };
  if (typeof arg === 'string') return arg.length <= 200 ? { name: arg || undefined, queue: defaultQueue } : 'task:request: a runner name is at most 200 characters';
  if (typeof arg !== 'object' || Array.isArray(arg)) return 'task:request takes nothing, a runner name, or {name, queue, modules}';
  const o = arg as Record<string, unknown>;
  const out: { name?: string; queue: string; modules?: string[] } = { queue: defaultQueue };
  if (o.name !== undefined && o.name !== null) {
    if (typeof o.name !== 'string' || o.name.length > 200) return 'task:request: name must be a string of at most 200 characters';
    out.name = o.name || undefined;
  }
  if (o.queue !== undefined && o.queue !== null) {
    if (typeof o.queue !== 'string' || !QUEUE_NAME.test(o.queue)) {
      return 'task:request: queue must be a queue name of letters, digits, "_", "." or "-" (1-64 characters)';
    }
    out.queue = o.queue;
  }
  if (o.modules !== undefined) {
    if (!Array.isArray(o.modules) || o.modules.length > 10_000 || !o.modules.every((m) => typeof m === 'string' && m.length <= 200)) {
      return 'task:request: modules must be an array of module names';
    }
    out.modules = o.modules as string[];
  }
  return out;
}

/**
 * The runner side of the protocol: `task:request`, `task:done` and `task:error`. Reports about a
 * task the runner does not hold (any more) are ignored and logged, never applied: a job is
 * completed or failed once, by the runner that holds it.
 */
export class RunnerHandlers {
  constructor(
    private readonly opts: { leases: RunnerLeases; log: Logger; defaultQueue: string },
  ) {}

  request(peer: Peer, arg: unknown): RunnerAnswer {
    const req = parseRequest(arg, this.opts.defaultQueue);
    if (typeof req === 'string') return { ok: false, message: req };
    if (peer.idle >= MAX_IDLE_SLOTS) return { ok: false, message: `task:request: at most ${MAX_IDLE_SLOTS} requests may wait at once per connection` };
    if (req.name && req.name !== peer.name) peer.name = req.name;
    if (req.modules) peer.modules = req.modules;
    this.opts.leases.request(peer, req.queue);
    return { ok: true };
  }

  async done(peer: Peer, taskJson: unknown, result: unknown): Promise<RunnerAnswer> {
    const ref = parseTaskRef(taskJson);
    const lease = ref && this.opts.leases.held(peer, ref);
    if (!lease) return this.stale(peer, 'task:done', ref?.id);
    await this.opts.leases.complete(lease, result);
    this.opts.log.debug({ jobId: ref.id, runner: peer.name ?? peer.id }, 'task completed by its runner');
    return { ok: true };
  }

  async error(peer: Peer, err: unknown, taskJson: unknown): Promise<RunnerAnswer> {
    let ref = parseTaskRef(taskJson);
    // Tolerate the arguments the other way round (task first), which some runners send.
    if (!ref || !this.opts.leases.held(peer, ref)) {
      const swapped = parseTaskRef(err);
      if (swapped && this.opts.leases.held(peer, swapped)) {
        ref = swapped;
        [err, taskJson] = [taskJson, err];
      }
    }
    const lease = ref && this.opts.leases.held(peer, ref);
    if (!lease) return this.stale(peer, 'task:error', ref?.id);
    const message = errorMessage(err);
    this.opts.log.info({ jobId: lease.job.id, module: lease.task.module, runner: peer.name ?? peer.id, error: message }, 'task failed on its runner');
    await this.opts.leases.fail(lease, message);
    return { ok: true };
  }

  private stale(peer: Peer, event: string, id: string | undefined): RunnerAnswer {
    const message = id
      ? `${event} for task ${id} ignored: this runner does not hold it (it timed out, was cancelled, or was handed out again)`
      : `${event} ignored: the task JSON names no task id (_id)`;
    this.opts.log.warn({ runner: peer.name ?? peer.id, jobId: id }, message);
    return { ok: false, message };
  }
}
