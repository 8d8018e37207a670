/**
 * The comparison a user would make: `taskmaster workers` with one process at concurrency 50
 * against one separate process running a plain BullMQ Worker at concurrency 50 (bench/raw/
 * worker.js), each started cold (fresh processes, no warm-up jobs), on 10,000 jobs a
 * BullMQ-native producer added (Queue.addBulk, job name `noop`, plain data). Ours runs
 * bench/tasks/noop.js; raw an empty processor. The jobs wait in a paused queue until the side's
 * processes are up (ours: its worker process in the registry; raw: its Worker running), then
 * the clock runs from the release until the last one has completed. Start-up (spawn to ready)
 * is shown beside the rate and not timed; the start-up case times it.
 */
import type { Queue } from 'bullmq';
import { ConsumerRegistry } from '../../src/workers/registry.ts';
import type { BenchCase, Ready, Scope } from '../run.ts';
import { cpuPer, fmt, rate, rawQueue, withCpu, type CpuUse } from './common.ts';
import { BIN, cliEnv, ensureCompiled, message, RAW_WORKER, sleep, staleNote, startProcess } from './processes.ts';
import { completed } from './worker-noop.ts';

const TASKS = 10_000;
const BATCH = 1_000;
const CONCURRENCY = 50;
const READY_LIMIT_MS = 60_000;
/** Pause between "the side is up" and the release, on both sides. */
const SETTLE_MS = 300;

type Sample = { ms: number; startMs: number } & CpuUse;

/** The native producer's jobs, added to a paused queue. */
async function produced(scope: Scope): Promise<Queue> {
  const queue = await rawQueue(scope);
  await queue.pause();
  for (let b = 0; b < TASKS; b += BATCH) {
    await queue.addBulk(
      Array.from({ length: Math.min(BATCH, TASKS - b) }, (_, i) => ({ name: 'noop', data: { n: b + i } })),
    );
  }
  return queue;
}

function release(scope: Scope, queue: Queue, pids: number[], startMs: number): Ready<Sample> {
  return {
    async timed() {
      await sleep(SETTLE_MS);
      const m = await withCpu(await scope.connection('cpu'), pids, async () => {
        const start = performance.now();
        await queue.resume();
        await completed(queue, TASKS);
        return { ms: performance.now() - start };
      });
      return { ...m, startMs };
    },
  };
}

async function ours(scope: Scope): Promise<Ready<Sample>> {
  const queue = await produced(scope);
  const registry = new ConsumerRegistry(await scope.connection('registry'), scope.prefix);
  const start = performance.now();
  const primary = startProcess(
    scope,
    [BIN, 'workers'],
    cliEnv(scope, { TASKMASTER_WORKERS: '1', TASKMASTER_CONCURRENCY: String(CONCURRENCY) }),
  );
  let worker: number | undefined;
  while (worker === undefined) {
    if (primary.exitCode !== null) throw new Error(`taskmaster workers exited with code ${primary.exitCode}`);
    if (performance.now() - start > READY_LIMIT_MS)
      throw new Error(`taskmaster workers was not up within ${READY_LIMIT_MS} ms`);
    worker = (await registry.live()).find((c) => c.kind === 'worker')?.pid;
    if (worker === undefined) await sleep(5);
  }
  return release(scope, queue, [primary.pid!, worker], performance.now() - start);
}

async function raw(scope: Scope): Promise<Ready<Sample>> {
  const queue = await produced(scope);
  const { redisUrl, queue: name } = scope.config;
  const start = performance.now();
  const child = startProcess(scope, [RAW_WORKER, redisUrl, scope.prefix, name, String(CONCURRENCY)], cliEnv(scope));
  await message(child, (m) => (m as { ready?: number })?.ready, READY_LIMIT_MS);
  return release(scope, queue, [child.pid!], performance.now() - start);
}

const show = (m: Sample, what: string) =>
  `${rate(TASKS, m.ms)}; up in ${(m.startMs / 1000).toFixed(2)} s; ${cpuPer(TASKS, m, what)}`;

export const workersCold: BenchCase = {
  name: 'workers cold',
  async run(ctx) {
    ensureCompiled();
    const m = await ctx.compare('workers cold, 1 process × 50', { ours, raw });
    return [
      {
        name:
          `\`taskmaster workers\` started cold, 1 process × concurrency ${CONCURRENCY}, ${fmt(TASKS)} jobs from a ` +
          `BullMQ-native producer (raw: one process running a BullMQ Worker × ${CONCURRENCY})${staleNote()}`,
        ours: show(m.ours, 'primary + worker process'),
        raw: show(m.raw, 'worker process'),
        ratio: m.ratio.ms,
        goal: 0.85,
      },
    ];
  },
};
