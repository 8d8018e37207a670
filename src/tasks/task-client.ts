import type { FlowJobNode, FlowJob, JobsOptions, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import { Components } from '../components.ts';
import { parseJobKey, GATE_QUEUE, type Keys } from '../queue/keys.ts';
import pino, { type Logger } from 'pino';
import type { CancelResult } from './cancellations.ts';
import { GATE_NAME, GATE_SLEEP_MS, type GateData } from './gates.ts';
import { dependencyKey, dependencyRefKey, newTaskIds, taskKey } from './identity.ts';
import type { IdentityArchive, IdentityStore } from './identity-store.ts';
import { AtomicAdder } from './atomic-add.ts';
import { toBullPriority } from './priority.ts';
import { taskFromJob, toJobData, type JobTask, type Task } from './task.ts';
import { validateTasks } from './validate.ts';

const silentLog = pino({ level: 'silent' });

/** What the client answers for each task of a batch, in the batch's order. */
export interface AddedTask {
  /** The BullMQ job id that holds this task (an existing one when `duplicate`). */
  id: string;
  queue: string;
  /** True when an identical task was already waiting, delayed, blocked or running. */
  duplicate: boolean;
  task: Task;
}

export interface TaskClientOptions {
  /**
   * The process's shared components (see components.ts), which their builder closes. A client
   * given none builds its own on `connection`, and closes them.
   */
  components?: Components;
  /**
   * Where identities that completed long ago are looked up when Redis no longer has them; for a
   * client that builds its own components (otherwise the components' builder gives it).
   */
  identityArchive?: IdentityArchive;
  /**
   * Where the components a client builds for itself log (a cancel's gate opening that failed, and
   * the like). @defaultValue a logger that says nothing
   */
  log?: Logger;
  /**
   * How long an add waits for the archive to answer about its dependencies; past that, it fails
   * with ArchiveLookupTimeoutError and adds nothing. @defaultValue 10000
   */
  archiveLookupLimitMs?: number;
}

/** Well below READD_HIDES_MS, so that a re-add keeps its failure hidden until it is written. */
const ARCHIVE_LOOKUP_LIMIT_MS = 10_000;

export type ClientConfig = Pick<
  Config,
  'queue' | 'prefix' | 'defaults' | 'limits' | 'retry' | 'keep' | 'tasksDir' | 'dedupWindowMs'
>;

interface Planned {
  task: Task;
  queue: string;
  taskKey: string;
  dependencyKey: string;
  /** dependencyKey of each of the task's dependencies, in order. */
  depKeys: string[];
  id: string;
  jobKey: string;
  /** Index of the first identical task in the batch, when this one repeats it. */
  sameAs?: number;
  duplicate: boolean;
  /** A completed run of its identity does not make it a duplicate (see Task.rerun). */
  rerun: boolean;
}

interface GateEdge {
  dependencyKey: string;
  gateId: string;
  node: FlowJobNode;
}

/**
 * Adds tasks: validation, identity and dedup, priorities and dependencies, all-or-nothing per
 * batch. The bridge, the CLI and schedules all add through it; BullMQ-native producers can add
 * to the same queues without it (they get no dedup and no dependencies).
 */
export class TaskClient {
  private readonly parts: Components;
  /** Whether the components are this client's own, closed with it. */
  private readonly ownsParts: boolean;
  private readonly adder: AtomicAdder;
  private readonly archiveLookupLimitMs: number;

  constructor(
    readonly config: ClientConfig,
    private readonly connection: Redis,
    opts: TaskClientOptions = {},
  ) {
    this.ownsParts = !opts.components;
    this.parts =
      opts.components ??
      new Components({ config, connection, log: opts.log ?? silentLog, identityArchive: opts.identityArchive });
    this.archiveLookupLimitMs = opts.archiveLookupLimitMs ?? ARCHIVE_LOOKUP_LIMIT_MS;
    const queue = (name: string) => this.parts.queues.get(name);
    this.adder = new AtomicAdder(connection, this.keys, config.prefix, queue, config.dedupWindowMs);
  }

  /** The keys of the client's prefix (for library users; Taskmaster's own code is given the components). */
  get keys(): Keys {
    return this.parts.keys;
  }

  /** The identity store the client adds through (for library users; see `keys`). */
  get store(): IdentityStore {
    return this.parts.store;
  }

  /** Validates `input` (a task, an array, or a JSON string of either) and adds it atomically. */
  async add(input: unknown): Promise<AddedTask[]> {
    return this.addTasks(validateTasks(input, this.config));
  }

  /** BullMQ queue object for a queue name, created once (for library users; see `keys`). */
  queue(name = this.config.queue): Queue {
    return this.parts.queues.get(name);
  }

  /**
   * Adds already validated tasks as one atomic step, all of them or none: BullMQ flows (a task
   * is a flow of one, or a parent of the tasks of the batch it depends on; other dependencies
   * are gates), claims and gate registrations written by one script (atomic-add.ts). A claim is
   * never written without its job, so a duplicate is always answered with a job that exists.
   */
  async addTasks(tasks: Task[]): Promise<AddedTask[]> {
    const planned = this.plan(tasks);
    const fresh = planned.filter((p) => p.sameAs === undefined);
    const gates: GateEdge[] = [];
    // The common case — every dependency inside the batch, no identity held by a live task —
    // is one step.
    const all = this.buildFlows(fresh, gates);
    if (!gates.length) {
      const held = await this.adder.add(all, fresh);
      if (!held) return this.answer(planned);
      this.takeHolders(fresh, held);
    }
    await this.addGated(fresh.filter((p) => !p.duplicate));
    return this.answer(planned);
  }

  /**
   * A batch with dependencies outside it (gates), or one found to hold duplicates: the outcomes
   * of its dependencies are looked up first (in the archive too, within a time limit), then it
   * is written by the add script, which answers duplicates anew (then the batch is planned again
   * without them) and registers each gate where its dependency's outcome will find it.
   */
  private async addGated(toAdd: Planned[]): Promise<void> {
    // While the lookups run, the failures of the identities this batch adds again are hidden,
    // so that dependents added meanwhile wait for the new runs; given back if it is not written.
    const hidden = await this.store.hideFailures(toAdd);
    try {
      for (;;) {
        const gates: GateEdge[] = [];
        const flows = this.buildFlows(toAdd, gates);
        // A gate whose dependency has settled is written open; the script registers the others,
        // and opens any whose dependency settles between this read and the write.
        const dks = [...new Set(gates.map((g) => g.dependencyKey))];
        const read = await this.store.outcomes(dks, { archiveLimitMs: this.archiveLookupLimitMs });
        const settled = new Set(dks.filter((_, i) => read[i]));
        for (const g of gates) if (settled.has(g.dependencyKey)) g.node.opts!.delay = 0;
        const registrations = gates.map((g) => ({
          dependencyKey: g.dependencyKey,
          gateId: g.gateId,
          open: !g.node.opts!.delay,
        }));
        const { held, toOpen } = await this.adder.write(flows, toAdd, registrations);
        if (!held) {
          // The batch is written: should opening fail, the reconciler opens them (see ADD).
          await this.openGates(toOpen).catch(() => undefined);
          return;
        }
        this.takeHolders(toAdd, held);
        toAdd = toAdd.filter((p) => !p.duplicate);
      }
    } finally {
      // Entries the write dropped are gone already; those left (a batch not written, or an
      // identity found held) are given back, opening the gates of dependents that waited. This
      // must not replace the add's own answer: an entry left expires after READD_HIDES_MS.
      if (hidden.length) await this.giveBack(hidden).catch(() => undefined);
    }
  }

  /**
   * Marks the tasks whose identity another live task holds as duplicates of that task; a
   * holder that is '' or the task's own job key means the task was claimed.
   */
  private takeHolders(fresh: Planned[], holders: string[]): void {
    fresh.forEach((p, i) => {
      const holder = holders[i]!;
      if (holder && holder !== p.jobKey) {
        // Identity does not include the queue, so the holder may live in another queue.
        const { queue, id } = parseJobKey(this.config.prefix, holder)!;
        p.duplicate = true;
        p.jobKey = holder;
        p.queue = queue;
        p.id = id;
      }
    });
  }

  /**
   * Each task's answer; a duplicate shows the task it duplicates as that was stored (its
   * `created`, priority and timeout, which the repeat may give otherwise).
   */
  private async answer(planned: Planned[]): Promise<AddedTask[]> {
    const held = planned.filter((p) => p.duplicate);
    const stored = held.length ? await this.storedTasks(held.map((p) => p.jobKey)) : [];
    const byKey = new Map(held.map((p, i) => [p.jobKey, stored[i]]));
    return planned.map((p) => {
      const first = p.sameAs === undefined ? p : planned[p.sameAs]!;
      const duplicate = p.duplicate || p.sameAs !== undefined;
      const task = (first.duplicate && byKey.get(first.jobKey)) || first.task;
      return { id: first.id, queue: first.queue, duplicate, task };
    });
  }

  /** The tasks stored in the jobs `jobKeys`, undefined where a job cannot be read (gone since). */
  private async storedTasks(jobKeys: string[]): Promise<(Task | undefined)[]> {
    const read = this.connection.pipeline();
    for (const key of jobKeys) read.hmget(key, 'name', 'data', 'priority', 'timestamp');
    const out = (await read.exec()) ?? [];
    return jobKeys.map((key, i) => {
      const [err, fields] = out[i] ?? [];
      const [name, data, priority, timestamp] = (fields ?? []) as (string | null)[];
      if (err || !name || !data) return undefined;
      try {
        const opts = { priority: Number(priority) };
        const t = taskFromJob({ name, data: JSON.parse(data), opts, timestamp: Number(timestamp) });
        const { queue } = parseJobKey(this.config.prefix, key)!;
        const task: Task = { ...pick(t), timeout: t.timeout ?? this.config.defaults.timeout, queue };
        return task;
      } catch {
        // Data that is not JSON is no task of ours: the answer shows the task as sent.
        return undefined;
      }
    });
  }

  private plan(tasks: Task[]): Planned[] {
    const seen = new Map<string, number>();
    const ids = newTaskIds(tasks.length);
    return tasks.map((task, i) => {
      const queue = task.queue ?? this.config.queue;
      const depKeys = task.dependencies.map(dependencyRefKey);
      const ownKey = dependencyKey(task.module, task.params, task.scope);
      const tk = taskKey(task.module, task.params, depKeys, task.scope, ownKey);
      const id = ids[i]!;
      const p: Planned = {
        task,
        queue,
        taskKey: tk,
        dependencyKey: ownKey,
        depKeys,
        id,
        jobKey: this.keys.job(queue, id),
        duplicate: false,
        rerun: task.rerun === true,
      };
      const first = seen.get(tk);
      if (first !== undefined) p.sameAs = first;
      else seen.set(tk, i);
      return p;
    });
  }

  private jobOpts(p: Planned): JobsOptions {
    return { jobId: p.id, ...taskJobOptions(this.config, p.task.priority) };
  }

  /**
   * Tasks of the batch that others in the batch depend on become direct flow children (one
   * parent each, as flows are trees); every other edge becomes a gate.
   */
  private buildFlows(toAdd: Planned[], gates: GateEdge[]): FlowJob[] {
    const byDepKey = new Map<string, Planned>();
    for (const p of toAdd) if (!byDepKey.has(p.dependencyKey)) byDepKey.set(p.dependencyKey, p);
    const nodes = new Map<Planned, FlowJob>();
    const childOf = new Map<Planned, Planned>();
    for (const p of toAdd) {
      nodes.set(p, {
        name: p.task.module,
        queueName: p.queue,
        data: toJobData(p.task, { task: p.taskKey, dependency: p.dependencyKey }),
        opts: this.jobOpts(p),
      });
    }
    for (const p of toAdd) {
      const node = nodes.get(p)!;
      p.task.dependencies.forEach((d, i) => {
        const dk = p.depKeys[i]!;
        const target = byDepKey.get(dk);
        if (target && !childOf.has(target) && !this.isAncestor(target, p, childOf)) {
          childOf.set(target, p);
          const child = nodes.get(target)!;
          child.opts = { ...child.opts, continueParentOnFailure: true };
          (node.children ??= []).push(child as FlowJobNode);
          return;
        }
        const data: GateData = { dependencyKey: dk, dependency: d };
        const gate: FlowJobNode = {
          name: GATE_NAME,
          queueName: GATE_QUEUE,
          data,
          opts: {
            jobId: `${p.id}-${i}`,
            delay: GATE_SLEEP_MS,
            attempts: 1,
            continueParentOnFailure: true,
            removeOnComplete: true,
            removeOnFail: true,
          },
        };
        (node.children ??= []).push(gate);
        gates.push({ dependencyKey: dk, gateId: gate.opts!.jobId!, node: gate });
      });
    }
    return toAdd.filter((p) => !childOf.has(p)).map((p) => nodes.get(p)!);
  }

  /** Whether `a` is `b` or one of `b`'s ancestors in the flow being built. */
  private isAncestor(a: Planned, b: Planned, childOf: Map<Planned, Planned>): boolean {
    for (let cur: Planned | undefined = b; cur; cur = childOf.get(cur)) if (cur === a) return true;
    return false;
  }

  private async giveBack(hidden: Planned[]): Promise<void> {
    await this.openGates(await this.store.giveBackFailures(hidden));
  }

  /** Opens the gates waiting on dependencies that settled (an add script put them in `opening`). */
  private async openGates(dependencyKeys: string[]): Promise<void> {
    const { gates } = this.parts;
    await Promise.all(dependencyKeys.map((dk) => gates.open(dk)));
  }

  /**
   * Cancels a task wherever it is: a waiting, delayed or blocked one is removed; a running one
   * is stopped by the worker running it (the request is stored, so a worker that is briefly
   * disconnected still honours it); a finished one is left as it is. Which of these applies is
   * decided in the same step as what is done (see Cancellations).
   */
  async cancel(id: string, queue = this.config.queue): Promise<CancelResult> {
    return this.parts.cancellations.request(this.parts.queues.get(queue), id);
  }

  async close(): Promise<void> {
    await this.adder.close();
    if (this.ownsParts) await this.parts.close();
  }
}

/**
 * What every task's job gets besides its id: the priority, and attempts with exponential
 * back-off. Finished jobs are not removed by BullMQ: the master archives them (when there is an
 * archive) and keeps the most recent ones in Redis (see archive/retention.ts).
 */
export function taskJobOptions(config: Pick<Config, 'retry'>, priority: number): JobsOptions {
  return {
    priority: toBullPriority(priority),
    attempts: config.retry.attempts,
    backoff: { type: 'exponential', delay: config.retry.backoffMs },
  };
}

/** A job's task as the client answers it: the task's own fields, without its identity keys. */
function pick(t: JobTask): Omit<Task, 'timeout'> {
  const task: Omit<Task, 'timeout'> = {
    module: t.module,
    params: t.params,
    priority: t.priority,
    dependencies: t.dependencies,
    created: t.created,
  };
  if (t.scope !== undefined) task.scope = t.scope;
  return task;
}
