/**
 * What the cases share: the tasks they add, the raw side's jobs (the same data and options
 * TaskClient writes, with BullMQ's own ids), a raw Worker, and number formatting.
 */
import { createRequire } from 'node:module';
import { Queue, Worker, type JobsOptions } from 'bullmq';
import { startBridge, type Bridge } from '../../src/bridge/bridge.ts';
import type { Config } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { TaskClient } from '../../src/tasks/task-client.ts';
import { taskJobOptions } from '../../src/tasks/task-client.ts';
import { toJobData, type Task } from '../../src/tasks/task.ts';
import type { Scope } from '../run.ts';

export interface BenchTask {
  module: string;
  params: unknown[];
  dependencies?: Task['dependencies'];
}

export const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

/** "12,345 tasks/s (1.62 s)" for `n` items in `ms`. */
export const rate = (n: number, ms: number, unit = 'tasks') => `${fmt((n / ms) * 1000)} ${unit}/s (${(ms / 1000).toFixed(2)} s)`;

/** `total` distinct no-op tasks in batches of `batch`. */
export function noopBatches(total: number, batch: number): BenchTask[][] {
  return Array.from({ length: Math.ceil(total / batch) }, (_, b) =>
    Array.from({ length: Math.min(batch, total - b * batch) }, (_, i) => ({ module: 'noop', params: [b * batch + i] })),
  );
}

/** A task as a raw BullMQ job: TaskClient's job data and options, without our job id. */
export function rawJobs(config: Config, tasks: BenchTask[]): { name: string; data: ReturnType<typeof toJobData>; opts: JobsOptions }[] {
  const opts = taskJobOptions(config, config.defaults.priority);
  const created = Math.floor(Date.now() / 1000);
  return tasks.map((t) => ({
    name: t.module,
    data: toJobData({ dependencies: [], ...t, priority: config.defaults.priority, timeout: config.defaults.timeout, created }),
    opts,
  }));
}

export async function rawQueue(scope: Scope): Promise<Queue> {
  const queue = new Queue(scope.config.queue, { connection: await scope.connection('queue'), prefix: scope.config.prefix });
  scope.defer(() => queue.close());
  await queue.waitUntilReady();
  return queue;
}

/** A BullMQ Worker with an empty processor, ready but not running (call `run()`). */
export async function rawWorker(scope: Scope, concurrency: number): Promise<Worker> {
  const { config } = scope;
  const worker = new Worker(config.queue, async () => null, {
    connection: await scope.connection('worker'),
    prefix: config.prefix,
    concurrency,
    autorun: false,
  });
  worker.on('error', () => {});
  scope.defer(() => worker.close());
  await worker.waitUntilReady();
  return worker;
}

/** The 2016 client, socket.io-client 1.7.4, as far as the cases use it. */
export interface LegacySocket {
  on(event: string, fn: (...args: unknown[]) => void): void;
  once(event: string, fn: (...args: unknown[]) => void): void;
  emit(event: string, ...args: unknown[]): void;
  close(): void;
}

export const legacyIo = createRequire(import.meta.url)('socket.io-client-v1') as (url: string, opts: object) => LegacySocket;

/** A TaskClient and a bridge on a free local port, both closed when the scope ends. */
export async function benchBridge(scope: Scope): Promise<{ client: TaskClient; bridge: Bridge; url: string }> {
  const { config } = scope;
  const client = new TaskClient(config, await scope.connection('client'));
  scope.defer(() => client.close());
  const bridge = await startBridge({
    config: { ...config, port: 0, host: '127.0.0.1' },
    connection: await scope.connection('bridge'),
    client,
    log: createLogger({ level: 'silent', pretty: false }),
  });
  scope.defer(() => bridge.close());
  return { client, bridge, url: `http://127.0.0.1:${bridge.port}` };
}
