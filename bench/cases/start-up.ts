/**
 * Start-up, as a user meets it. Ours: the `taskmaster` command as installed (bin/taskmaster.js,
 * running the compiled dist/); raw: a plain BullMQ script doing the same (bench/raw).
 * - one-shot commands, from spawn to exit: `--help` (raw: node running an empty script, the
 *   floor of any command), `add noop 1` (raw: Queue.add of one job) and `status` (raw:
 *   Queue.getJobCounts), each closing its connection before it exits;
 * - a replaced worker process: `taskmaster workers` with one process (raw: a node:cluster
 *   primary that forks a plain BullMQ Worker again at once when one dies), up and past its first
 *   job; its process is killed, and the clock runs from the kill until a job added once the
 *   killed process is gone has completed. Ours waits its pool's back-off for a first crash
 *   (250 ms) before it forks; raw forks at once.
 */
import { ConsumerRegistry } from '../../src/workers/registry.ts';
import type { BenchCase, Scope } from '../run.ts';
import { rawQueue } from './common.ts';
import {
  alive,
  BIN,
  cliEnv,
  ensureCompiled,
  message,
  RAW_ONE_SHOT,
  RAW_WORKER,
  sleep,
  staleNote,
  startProcess,
  timedRun,
} from './processes.ts';
import { completed } from './worker-noop.ts';

/** Most a one-shot command may take to exit, and a killed worker process to be replaced and run a job. */
const ONE_SHOT_MAX_MS = 500;
const REPLACED_MAX_MS = 1000;
const READY_LIMIT_MS = 60_000;

const oneShot = (args: string[]) => (scope: Scope) => timedRun([BIN, ...args], cliEnv(scope));
const rawOneShot = (what: 'add' | 'status') => (scope: Scope) =>
  timedRun([RAW_ONE_SHOT, scope.config.redisUrl, scope.prefix, scope.config.queue, what], cliEnv(scope));

/**
 * Kills `pid`, waits until it is gone, adds one job and resolves with the time from the kill
 * until that job completed (the `done`-th completion of the queue).
 */
function replaced(scope: Scope, pid: number, done: number) {
  return {
    async timed() {
      const queue = await rawQueue(scope);
      const start = performance.now();
      process.kill(pid, 'SIGKILL');
      while (alive(pid)) await sleep(1);
      await queue.add('noop', { n: done });
      await completed(queue, done);
      return { ms: performance.now() - start };
    },
  };
}

/** A first job run by a process that just started, so that what is killed is a working process. */
async function firstJob(scope: Scope): Promise<void> {
  const queue = await rawQueue(scope);
  await queue.add('noop', { n: 0 });
  await completed(queue, 1, READY_LIMIT_MS);
}

async function oursReplaced(scope: Scope) {
  startProcess(scope, [BIN, 'workers'], cliEnv(scope, { TASKMASTER_WORKERS: '1', TASKMASTER_CONCURRENCY: '1' }));
  await firstJob(scope);
  const registry = new ConsumerRegistry(await scope.connection('registry'), scope.prefix);
  const [worker] = (await registry.live()).filter((c) => c.kind === 'worker');
  if (!worker) throw new Error('the worker process ran a job but is not in the registry');
  return replaced(scope, worker.pid, 2);
}

async function rawReplaced(scope: Scope) {
  const { redisUrl, queue } = scope.config;
  const primary = startProcess(scope, [RAW_WORKER, redisUrl, scope.prefix, queue, '1', '--cluster'], cliEnv(scope));
  const pid = await message(primary, (m) => (m as { ready?: number })?.ready, READY_LIMIT_MS);
  await firstJob(scope);
  return replaced(scope, pid, 2);
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
/** The wall time, and the CPU the command spent: on a busy machine the wall time stretches, the CPU much less. */
const withCpu = (m: { ms: number; cpuMs: number }) => `${seconds(m.ms)} (CPU ${seconds(m.cpuMs)})`;

export const startUp: BenchCase = {
  name: 'start-up',
  async run(ctx) {
    ensureCompiled();
    const help = await ctx.compare('taskmaster --help', {
      ours: oneShot(['--help']),
      raw: (s) => timedRun(['-e', ''], cliEnv(s)),
    });
    const add = await ctx.compare('taskmaster add', { ours: oneShot(['add', 'noop', '1']), raw: rawOneShot('add') });
    const status = await ctx.compare('taskmaster status', { ours: oneShot(['status']), raw: rawOneShot('status') });
    const worker = await ctx.compare('replaced worker process', { ours: oursReplaced, raw: rawReplaced });
    const note = staleNote();
    return [
      {
        name: `\`taskmaster --help\`, spawn to exit (raw: node with an empty script)${note}`,
        ours: withCpu(help.ours),
        raw: withCpu(help.raw),
        within: { ms: help.ours.ms, max: ONE_SHOT_MAX_MS },
      },
      {
        name: `\`taskmaster add noop 1\`, spawn to exit (raw: a script adding one job with Queue.add)${note}`,
        ours: withCpu(add.ours),
        raw: withCpu(add.raw),
        ratio: add.ratio.ms,
        within: { ms: add.ours.ms, max: ONE_SHOT_MAX_MS },
      },
      {
        name: `\`taskmaster status\`, spawn to exit (raw: a script printing Queue.getJobCounts)${note}`,
        ours: withCpu(status.ours),
        raw: withCpu(status.raw),
        ratio: status.ratio.ms,
        within: { ms: status.ours.ms, max: ONE_SHOT_MAX_MS },
      },
      {
        name:
          `worker process killed under \`taskmaster workers\` (1 process): kill to a new job completed by its ` +
          `replacement (raw: node:cluster forking a BullMQ Worker again at once)${note}`,
        ours: seconds(worker.ours.ms),
        raw: seconds(worker.raw.ms),
        ratio: worker.ratio.ms,
        within: { ms: worker.ours.ms, max: REPLACED_MAX_MS },
      },
    ];
  },
};
