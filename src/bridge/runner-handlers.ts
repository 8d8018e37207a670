import type { Logger } from 'pino';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../queue/keys.ts';
import { errorMessage, parseTaskRef } from './legacy-shape.ts';
import type { Peer } from './presence.ts';
import type { RunnerLeases } from './runner-leases.ts';

/** What a runner's event is answered with, through its acknowledgement callback when it gives one. */
export interface RunnerAnswer {
  ok: boolean;
  message?: string;
}

/** Most tasks one runner connection may declare it runs at once (`slots`). */
export const MAX_SLOTS = 1000;

export interface RunnerRequest {
  name?: string;
  queue: string;
  modules?: string[];
  /** Tasks the runner runs at once; absent: as declared before, else 1. */
  slots?: number;
}

/**
 * Reads `task:request`'s optional argument: a runner name (2015), `{name}` (2016), or
 * `{name, queue, modules, slots}`.
 */
export function parseRequest(arg: unknown, defaultQueue: string): RunnerRequest | string {
  if (arg === undefined || arg === null) return { queue: defaultQueue };
  if (typeof arg === 'string') {
    if (arg.length > 200) return 'task:request: a runner name is at most 200 characters';
    return { name: arg || undefined, queue: defaultQueue };
  }
  if (typeof arg !== 'object' || Array.isArray(arg)) {
    return 'task:request takes nothing, a runner name, or {name, queue, modules, slots}';
  }
  const o = arg as Record<string, unknown>;
  const out: RunnerRequest = { queue: defaultQueue };
  if (o.name !== undefined && o.name !== null) {
    if (typeof o.name !== 'string' || o.name.length > 200) {
      return 'task:request: name must be a string of at most 200 characters';
    }
    out.name = o.name || undefined;
  }
  if (o.queue !== undefined && o.queue !== null) {
    if (typeof o.queue !== 'string' || !QUEUE_NAME.test(o.queue)) {
      return `task:request: queue must be a queue name of ${QUEUE_NAME_RULE}`;
    }
    out.queue = o.queue;
  }
  if (o.modules !== undefined) {
    if (
      !Array.isArray(o.modules) ||
      o.modules.length > 10_000 ||
      !o.modules.every((m) => typeof m === 'string' && m.length <= 200)
    ) {
      return 'task:request: modules must be an array of module names';
    }
    out.modules = o.modules as string[];
  }
  if (o.slots !== undefined && o.slots !== null) {
    if (typeof o.slots !== 'number' || !Number.isInteger(o.slots) || o.slots < 1 || o.slots > MAX_SLOTS) {
      const got = typeof o.slots === 'string' ? JSON.stringify(o.slots) : String(o.slots);
      const allowed = `an integer from 1 to ${MAX_SLOTS} (the tasks this runner runs at once)`;
      return `task:request: slots must be ${allowed}, got ${got.slice(0, 50)}`;
    }
    out.slots = o.slots;
  }
  return out;
}

/**
 * The runner side of the protocol: `task:request`, `task:done` and `task:error`. Reports about a
 * task the runner does not hold (any more) are ignored and logged, never applied: a job is
 * completed or failed once, by the runner that holds it.
 */
export class RunnerHandlers {
  constructor(private readonly opts: { leases: RunnerLeases; log: Logger; defaultQueue: string }) {}

  /**
   * A runner is ready for work: its free slots (declared, else one) wait for tasks. Asking again
   * while they wait or are busy changes nothing, so a runner that asks on connect and again
   * after a report the master ignored still holds one task at a time.
   */
  request(peer: Peer, arg: unknown): RunnerAnswer {
    const req = parseRequest(arg, this.opts.defaultQueue);
    if (typeof req === 'string') return { ok: false, message: req };
    if (req.name && req.name !== peer.name) peer.name = req.name;
    if (req.modules) peer.modules = req.modules;
    this.opts.leases.request(peer, req.queue, req.slots);
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
    this.opts.log.info(
      { jobId: lease.job.id, module: lease.task.module, runner: peer.name ?? peer.id, error: message },
      'task failed on its runner',
    );
    await this.opts.leases.fail(lease, message);
    return { ok: true };
  }

  private stale(peer: Peer, event: string, id: string | undefined): RunnerAnswer {
    const message = id
      ? `${event} for task ${id} ignored: this runner does not hold it ` +
        '(it timed out, was cancelled, or was handed out again)'
      : `${event} ignored: the task JSON names no task id (_id)`;
    this.opts.log.warn({ runner: peer.name ?? peer.id, jobId: id }, message);
    return { ok: false, message };
  }
}
