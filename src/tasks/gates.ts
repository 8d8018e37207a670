import { DelayedError, Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { GATE_QUEUE } from '../queue/keys.ts';
import type { IdentityStore } from './identity-store.ts';
import type { DependencyRef } from './task.ts';
import { OutageLog } from '../queue/outage-log.ts';

/**
 * A gate stands for one dependency edge that is not a direct child in a flow: the dependent
 * job is a flow parent whose child is the gate, and the gate is delayed until the dependency
 * settles. BullMQ keeps delayed scores below 2^53, so "indefinitely" is a few years; a gate
 * that wakes up with its dependency still open simply goes back to sleep.
 */
export const GATE_SLEEP_MS = 3 * 365 * 24 * 3600 * 1000;
export const GATE_NAME = 'gate';

export interface GateData {
  dependencyKey: string;
  dependency: DependencyRef;
}

export function describeDependency(dep: DependencyRef): string {
  const params = JSON.stringify(dep.params);
  return `${dep.module}(${params.length > 200 ? params.slice(0, 197) + '...' : params})`;
}

/** Promotes gates by id; a gate that is gone or already promoted is left as it is. */
export async function promoteGates(queue: Queue, gateIds: string[]): Promise<void> {
  await Promise.all(gateIds.map((id) => new Job(queue, GATE_NAME, {}, {}, id).promote().catch(() => undefined)));
}

/**
 * Opens gates when dependencies settle, re-opens what a crash left half done, and runs the
 * trivial worker that completes (or fails) a gate once it is promoted.
 */
export class Gates {
  readonly queue: Queue;
  private worker?: Worker;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly opts: { connection: Redis; prefix: string; store: IdentityStore; log: Logger },
  ) {
    this.queue = new Queue(GATE_QUEUE, { connection: opts.connection, prefix: opts.prefix });
    this.queue.on('error', OutageLog.listener(opts.log, 'gate queue error'));
  }

  /**
   * Promotes every gate waiting on `dependencyKey` (or the given ones, as `settle` returned
   * them); the gate worker then reads the outcome.
   */
  async open(dependencyKey: string, waiting?: string[]): Promise<void> {
    const ids = waiting ?? (await this.opts.store.waiters(dependencyKey));
    if (!ids.length) {
      // Nothing waits: only the reconciler's call (no list given) has an `opening` entry to clear.
      if (!waiting) await this.opts.store.opened(dependencyKey);
      return;
    }
    await promoteGates(this.queue, ids);
    await this.opts.store.forgetWaiters(dependencyKey, ids);
    await this.opts.store.opened(dependencyKey);
  }

  /** Finishes what a process that died mid-way left: identities settled but gates not opened. */
  async reconcile(): Promise<number> {
    const pending = await this.opts.store.opening();
    for (const dk of pending) await this.open(dk);
    return pending.length;
  }

  /** Runs the gate worker and a periodic reconciler in this process. */
  start(connection: Redis, reconcileEveryMs = 15_000): void {
    const { store, log } = this.opts;
    this.worker = new Worker<GateData>(
      GATE_QUEUE,
      async (job, token) => {
        const [outcome] = await store.outcomes([job.data.dependencyKey]);
        if (outcome?.state === 'completed') return { jobId: outcome.jobId };
        if (outcome?.state === 'failed') {
          throw new UnrecoverableError(
            `dependency ${describeDependency(job.data.dependency)} (job ${outcome.jobId}) failed for good: ${outcome.reason ?? 'unknown reason'}`,
          );
        }
        await job.moveToDelayed(Date.now() + GATE_SLEEP_MS, token);
        throw new DelayedError();
      },
      { connection, prefix: this.opts.prefix, concurrency: 50 },
    );
    this.worker.on('error', OutageLog.listener(log, 'gate worker error'));
    const tick = () =>
      this.reconcile()
        .then((n) => n && log.info({ reopened: n }, 'reopened gates left by an interrupted completion'))
        .catch((err) => log.warn({ err }, 'gate reconcile failed'));
    void tick();
    this.timer = setInterval(tick, reconcileEveryMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.worker?.close();
    await this.queue.close();
  }
}
