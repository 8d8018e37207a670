/**
 * CPU scaling of the worker pool — Taskmaster against itself, as the issue asks: 200 runs of
 * bench/tasks/cpu-burn.js (a legacy module doing a fixed amount of arithmetic, calibrated here
 * to about 20 ms of one core) on a WorkerPool of 2 processes vs one of 1 process, concurrency 1
 * each. The ratio is time(1 process) / time(2 processes); perfect scaling would be 2.
 * Start-up is not timed: the tasks wait in a paused queue until every process has announced
 * itself, and each process first works off warm-up runs (loading the module, compiling the loop)
 * before the timed 200 are released.
 */
import { createRequire } from 'node:module';
import { createLogger, type Logger } from '../../src/logger.ts';
import type { BenchCase, Scope } from '../run.ts';
import { completed, pausedClient, startPool } from './worker-noop.ts';
import { fmt } from './common.ts';

const TASKS = 200;
const TARGET_MS = 20;
/** Untimed runs per process before the timed ones. */
const WARM_UPS = 4;
/** Timed rounds per side at most (BENCH_ROUNDS may lower it): two blocks of two (see compare). */
const MAX_ROUNDS = 4;
const require = createRequire(import.meta.url);

type Burn = (this: { done(result?: unknown): void }, iterations: number) => void;

/** Iterations of cpu-burn that take about TARGET_MS on one core of this machine. */
function calibrate(): number {
  const burn = require('../tasks/cpu-burn.js') as Burn;
  const api = { done() {} };
  const probe = 2_000_000;
  for (let i = 0; i < 20; i++) burn.call(api, probe);
  let best = Infinity;
  for (let i = 0; i < 15; i++) {
    const start = performance.now();
    burn.call(api, probe);
    best = Math.min(best, performance.now() - start);
  }
  return Math.round((probe * TARGET_MS) / best);
}

function side(log: Logger, processes: number, iterations: number) {
  return async (scope: Scope) => {
    const warmUps = WARM_UPS * processes;
    const burns = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({ module: 'cpu-burn', params: [iterations, from + i] }));
    const client = await pausedClient(scope);
    const queue = client.queue();
    await client.add(burns(0, warmUps));
    await startPool(scope, log, processes, 1);
    // Warm-up: every process takes some of these (each fetch re-marks the queue for the others).
    await queue.resume();
    await completed(queue, warmUps);
    await queue.pause();
    await client.add(burns(warmUps, TASKS));
    const start = performance.now();
    await queue.resume();
    await completed(queue, warmUps + TASKS);
    return { ms: performance.now() - start };
  };
}

export const cpuScaling: BenchCase = {
  name: 'CPU scaling',
  async run(ctx) {
    const log = createLogger({ level: 'silent', pretty: false });
    const iterations = calibrate();
    process.stderr.write(`  cpu-burn: ${fmt(iterations)} iterations ≈ ${TARGET_MS} ms on one core\n`);
    const rounds = Math.min(ctx.rounds, MAX_ROUNDS);
    const m = await ctx.compare(
      'CPU scaling (ours = 2 processes, raw = 1 process)',
      { ours: side(log, 2, iterations), raw: side(log, 1, iterations) },
      rounds,
    );
    const rate = (n: number, ms: number) =>
      `${n} proc: ${fmt((TASKS / ms) * 1000)} tasks/s (${(ms / 1000).toFixed(2)} s)`;
    return [
      {
        name:
          `CPU-bound ~${TARGET_MS} ms task × ${TASKS}, pool 2 processes vs 1 (Taskmaster vs itself; ratio = t1/t2)` +
          (rounds < ctx.rounds ? `, ${rounds} rounds` : ''),
        ours: rate(2, m.ours.ms),
        raw: rate(1, m.raw.ms),
        ratio: m.ratio.ms,
        goal: 1.7,
      },
    ];
  },
};
