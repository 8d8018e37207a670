/**
 * What the cases share: the tasks they add, the raw side's jobs (the same data and options
 * TaskClient writes, with BullMQ's own ids), a raw Worker, and number formatting.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';
import { Queue, Worker, type JobsOptions } from 'bullmq';
import { startBridge, type Bridge } from '../../src/bridge/bridge.ts';
import type { Config } from '../../src/config/config.ts';
import { createLogger, type Logger } from '../../src/logger.ts';
import { TaskClient } from '../../src/tasks/task-client.ts';
import { TaskWorker } from '../../src/workers/task-worker.ts';
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
export const rate = (n: number, ms: number, unit = 'tasks') =>
  `${fmt((n / ms) * 1000)} ${unit}/s (${(ms / 1000).toFixed(2)} s)`;

/** `total` distinct no-op tasks in batches of `batch`. */
export function noopBatches(total: number, batch: number): BenchTask[][] {
  return Array.from({ length: Math.ceil(total / batch) }, (_, b) =>
    Array.from({ length: Math.min(batch, total - b * batch) }, (_, i) => ({ module: 'noop', params: [b * batch + i] })),
  );
}

/** A task as a raw BullMQ job: TaskClient's job data and options, without our job id. */
export function rawJobs(
  config: Config,
  tasks: BenchTask[],
): { name: string; data: ReturnType<typeof toJobData>; opts: JobsOptions }[] {
  const opts = taskJobOptions(config, config.defaults.priority);
  const created = Math.floor(Date.now() / 1000);
  return tasks.map((t) => ({
    name: t.module,
    data: toJobData({
      dependencies: [],
      ...t,
      priority: config.defaults.priority,
      timeout: config.defaults.timeout,
      created,
    }),
    opts,
  }));
}

export async function rawQueue(scope: Scope): Promise<Queue> {
  const queue = new Queue(scope.config.queue, {
    connection: await scope.connection('queue'),
    prefix: scope.config.prefix,
  });
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

/** A TaskWorker in this process with a TaskClient of its own, ready but not started; closed with the scope. */
export async function benchTaskWorker(scope: Scope, log: Logger, concurrency: number): Promise<TaskWorker> {
  const { config } = scope;
  const client = new TaskClient(config, await scope.connection('worker-client'));
  scope.defer(() => client.close());
  const tw = new TaskWorker({ config, connection: await scope.connection('worker'), client, log, concurrency });
  scope.defer(() => tw.close());
  await tw.worker.waitUntilReady();
  return tw;
}

/** The 2016 client, socket.io-client 1.7.4, as far as the cases use it. */
export interface LegacySocket {
  on(event: string, fn: (...args: unknown[]) => void): void;
  once(event: string, fn: (...args: unknown[]) => void): void;
  emit(event: string, ...args: unknown[]): void;
  close(): void;
}

export const legacyIo = createRequire(import.meta.url)('socket.io-client-v1') as (
  url: string,
  opts: object,
) => LegacySocket;

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

/** CPU time (ms) of a process by pid, from /proc; undefined where there is no /proc. */
function processCpuMs(pid: number): number | undefined {
  try {
    // utime and stime, in clock ticks (100 per second on Linux), after the command name.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

async function redisCpuMs(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? NaN);
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1000;
}

/** CPU spent during a timed run: Redis (all of it), this process, and the given other processes. */
export type CpuUse = { redisCpuMs: number; nodeCpuMs: number; othersCpuMs: number };

/**
 * Measures the CPU that Redis and Node spend while `run` works off its jobs: on a 2-core
 * machine both are near saturation, so where the time goes says more than the rate alone.
 * `pids` are the other Node processes of the side (pool processes, remote runners), read
 * before and after; where /proc is missing, only this process counts. Redis's figure is
 * the whole server's, so a shared Redis with other load inflates it.
 */
export async function withCpu<T extends object>(
  redis: Redis,
  pids: number[],
  run: () => Promise<T>,
): Promise<T & CpuUse> {
  const others = () => pids.reduce((sum, pid) => sum + (processCpuMs(pid) ?? 0), 0);
  const redis0 = await redisCpuMs(redis);
  const others0 = others();
  const self0 = process.cpuUsage();
  const out = await run();
  const self = process.cpuUsage(self0);
  const othersCpuMs = others() - others0;
  return {
    ...out,
    redisCpuMs: (await redisCpuMs(redis)) - redis0,
    nodeCpuMs: (self.user + self.system) / 1000 + othersCpuMs,
    othersCpuMs,
  };
}

/** "CPU/task: Redis 190 µs + Node 170 µs", and how much of Node's was the other processes'. */
export function cpuPer(n: number, m: CpuUse, others = 'other processes'): string {
  const us = (ms: number) => `${fmt((ms / n) * 1000)} µs`;
  const split = m.othersCpuMs ? ` (${others} ${us(m.othersCpuMs)})` : '';
  return `CPU/task: Redis ${us(m.redisCpuMs)} + Node ${us(m.nodeCpuMs)}${split}`;
}
