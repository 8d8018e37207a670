import { DelayedError, Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { GATE_QUEUE } from '../queue/keys.ts';
import { openGatesScript } from '../queue/scripts.ts';
import type { IdentityStore } from './identity-store.ts';
import type { DependencyRef } from './task.ts';
import { OutageLog } from '../queue/outage-log.ts';

/**
 * A gate stands for one dependency edge that is not a direct child in a flow: the dependent
 * job is a flow parent whose child is the gate, and the gate is delayed until the dependency
 * settles. BullMQ keeps delayed scores below 2^53, so "indefinitely" is a few years; a gate
 * that wakes up with its dependency still open registers again and goes back to sleep.
 */
export const GATE_SLEEP_MS = 3 * 365 * 24 * 3600 * 1000;
export const GATE_NAME = 'gate';
/** How many registered gates one run of the opening script looks at. */
const OPEN_SLICE = 1000;

type Scripted = Redis & {
  tmOpenGates(...keysAndArgs: string[]): Promise<[string, number, number]>;
};

export interface GateData {
  dependencyKey: string;
  dependency: DependencyRef;
}

export function describeDependency(dep: DependencyRef): string {
  if (dep.params === undefined) return `any task of ${dep.module}`;
  const params = JSON.stringify(dep.params);
  const scope = dep.scope === undefined ? '' : ` in scope ${JSON.stringify(dep.scope)}`;
  return `${dep.module}(${params.length > 200 ? params.slice(0, 197) + '...' : params})${scope}`;
}

/**
 * Opens gates when dependencies settle, re-opens what a crash left half done, and runs the
 * trivial worker that completes (or fails) a gate once it is promoted.
 *
 * The rule that keeps a dependent from being stranded: a gate sleeps only while it is in the
 * waiters set of its dependency, where the next outcome recorded finds it. Opening a gate takes
 * it out of the set in the same step that wakes it (open-gates.lua); a gate that wakes to find
 * no outcome (the dependency was added again meanwhile) puts itself back before it reads the
 * outcome, and only then goes back to sleep.
 */
export class Gates {
  readonly queue: Queue;
  private readonly redis: Scripted;
  private worker?: Worker;
  private timer?: NodeJS.Timeout;

  constructor(private readonly opts: { connection: Redis; prefix: string; store: IdentityStore; log: Logger }) {
    this.queue = new Queue(GATE_QUEUE, { connection: opts.connection, prefix: opts.prefix });
    this.queue.on('error', OutageLog.listener(opts.log, 'gate queue error'));
    this.redis = opts.connection as Scripted;
    if (typeof this.redis.tmOpenGates !== 'function') {
      opts.connection.defineCommand('tmOpenGates', { numberOfKeys: 11, lua: openGatesScript() });
    }
  }

  /**
   * Wakes every gate sleeping on `dependencyKey`; each then reads the outcome. `waiting`, when
   * given, is what `settle` returned: none means nothing was put in `opening` either. The key
   * leaves `opening` once no gate is registered on it any more (see open-gates.lua).
   */
  async open(dependencyKey: string, waiting?: string[]): Promise<void> {
    if (waiting && !waiting.length) return;
    const { keys } = this.opts.store;
    const q = this.queue.keys;
    // The gate queue's keys in the order BullMQ's promote takes them.
    const promoteKeys = [q.delayed, q.wait, q.paused, q.meta, q.prioritized, q.active, q.pc, q.events, q.marker];
    const scriptKeys = [keys.waiters(dependencyKey), keys.opening, ...promoteKeys];
    const gatePrefix = this.queue.toKey('');
    let cursor = '0';
    do {
      [cursor] = await this.redis.tmOpenGates(...scriptKeys, dependencyKey, gatePrefix, cursor, String(OPEN_SLICE));
    } while (cursor !== '0');
  }

  /** Finishes what a process that died mid-way left: identities settled but gates not opened. */
  async reconcile(): Promise<number> {
    const pending = await this.opts.store.opening();
    for (const dk of pending) await this.open(dk);
    return pending.length;
  }

  /** Runs the gate worker and a periodic reconciler in this process. */
  start(connection: Redis, reconcileEveryMs = 15_000): void {
    const { log } = this.opts;
    this.worker = new Worker<GateData>(GATE_QUEUE, (job, token) => this.pass(job, token), {
      connection,
      prefix: this.opts.prefix,
      concurrency: 50,
    });
    this.worker.on('error', OutageLog.listener(log, 'gate worker error'));
    const tick = () =>
      this.reconcile()
        .then((n) => n && log.info({ reopened: n }, 'reopened gates left by an interrupted completion'))
        .catch((err) => log.warn({ err }, 'gate reconcile failed'));
    void tick();
    this.timer = setInterval(tick, reconcileEveryMs);
    this.timer.unref();
  }

  /**
   * A woken gate: completes when its dependency completed, fails when it failed for good, and
   * otherwise goes back to sleep, registered (see the class comment).
   */
  private async pass(job: Job<GateData>, token?: string): Promise<{ jobId: string }> {
    const { store, log } = this.opts;
    const dk = job.data.dependencyKey;
    const waiters = store.keys.waiters(dk);
    let [outcome] = await store.outcomes([dk]);
    if (!outcome) {
      // Registered before the outcome is read again: an outcome recorded from here on finds
      // this gate, and one recorded before is read below.
      await this.redis.sadd(waiters, job.id!);
      [outcome] = await store.outcomes([dk]);
      // It finishes now; its registration would only make the next outcome look for it.
      if (outcome) await this.redis.srem(waiters, job.id!);
    }
    if (outcome?.state === 'completed') return { jobId: outcome.jobId };
    if (outcome?.state === 'failed') {
      const reason = outcome.reason ?? 'unknown reason';
      const dependency = describeDependency(job.data.dependency);
      throw new UnrecoverableError(`dependency ${dependency} (job ${outcome.jobId}) failed for good: ${reason}`);
    }
    await job.moveToDelayed(Date.now() + GATE_SLEEP_MS, token);
    // An outcome recorded while this gate was still running found it registered but could not
    // wake it, and left its dependency in `opening` for the reconciler: wake it now instead.
    const [late] = await store.outcomes([dk]).catch(() => [undefined]);
    if (late) await this.open(dk).catch((err) => log.warn({ err }, 'opening gates failed; the reconciler will'));
    throw new DelayedError();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.worker?.close();
    await this.queue.close();
  }
}
