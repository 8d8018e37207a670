/**
 * Remote runners over the Socket.IO bridge: 10,000 no-op tasks already queued, worked off by 50
 * runner sockets (socket.io-client 1.7.4, one idle slot each, answering `task:send` with
 * `task:done` and a new `task:request` at once, as the 2015 runner did). Against a BullMQ
 * Worker with concurrency 50 and an empty processor on the same jobs. The runners run in a
 * child process, as remote runners run elsewhere; the master (bridge) is this process. The
 * issue's goal is absolute: 3,000 tasks/s through the sockets. Both sides also report the CPU
 * spent per task by Redis, this process and the runners' process (see withCpu).
 *
 * Run as a script (`node --import tsx bench/cases/runner-sockets.ts <url>`), this file is the
 * runners' process.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { BenchCase, Scope } from '../run.ts';
import {
  cpuPer,
  fmt,
  noopBatches,
  rate,
  rawJobs,
  rawQueue,
  rawWorker,
  benchBridge,
  legacyIo,
  withCpu,
} from './common.ts';

const TASKS = 10_000;
const RUNNERS = 50;
const GOAL_PER_S = 3_000;
const WAIT_LIMIT_MS = 120_000;
const SELF = fileURLToPath(import.meta.url);

const batches = () => noopBatches(TASKS, 1000);

/**
 * The runners, in a process of their own (as remote runners are): connects RUNNERS sockets,
 * says 'ready', and on 'go' asks for a task per socket, answering each at once.
 */
async function runnersProcess(url: string): Promise<void> {
  const sockets = await Promise.all(
    Array.from({ length: RUNNERS }, async (_, r) => {
      const socket = legacyIo(url, { forceNew: true, reconnection: false, transports: ['websocket'] });
      socket.on('task:send', (json) => {
        socket.emit('task:done', json, null);
        socket.emit('task:request', `bench-${r}`);
      });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      return socket;
    }),
  );
  process.on('message', (msg) => {
    if (msg === 'go') sockets.forEach((s, r) => s.emit('task:request', `bench-${r}`));
    if (msg === 'stop') {
      sockets.forEach((s) => s.close());
      process.exit(0);
    }
  });
  process.send!('ready');
}

async function ours(scope: Scope) {
  const { client, url } = await benchBridge(scope);
  for (const batch of batches()) await client.add(batch);
  // The runners load TypeScript the way this process does: through tsx, found from here.
  const child = fork(SELF, [url], { execArgv: ['--import', import.meta.resolve('tsx')], stdio: 'inherit' });
  scope.defer(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.send('stop');
      }),
  );
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`the runners' process exited with code ${code}`)));
  });
  const queue = client.queue();
  return withCpu(await scope.connection('cpu'), [child.pid!], async () => {
    const start = performance.now();
    child.send('go');
    while ((await queue.getCompletedCount()) < TASKS) {
      if (performance.now() - start > WAIT_LIMIT_MS)
        throw new Error(`only ${await queue.getCompletedCount()} of ${TASKS} completed within ${WAIT_LIMIT_MS} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return { ms: performance.now() - start };
  });
}

async function raw(scope: Scope) {
  const queue = await rawQueue(scope);
  for (const batch of batches()) await queue.addBulk(rawJobs(scope.config, batch));
  const worker = await rawWorker(scope, RUNNERS);
  let done = 0;
  const finished = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`only ${done} of ${TASKS} completed within ${WAIT_LIMIT_MS} ms`)),
      WAIT_LIMIT_MS,
    );
    worker.on('completed', () => {
      if (++done === TASKS) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return withCpu(await scope.connection('cpu'), [], async () => {
    const start = performance.now();
    void worker.run();
    await finished;
    return { ms: performance.now() - start };
  });
}

export const runnerSockets: BenchCase = {
  name: 'runner sockets',
  async run(ctx) {
    const m = await ctx.compare('runner sockets', { ours, raw });
    const perS = (ms: number) => (TASKS / ms) * 1000;
    return [
      {
        name:
          `${RUNNERS} runner sockets (1.7.4, another process), ${fmt(TASKS)} no-op tasks, ` +
          `vs a Worker at concurrency ${RUNNERS}`,
        ours: `${rate(TASKS, m.ours.ms)}; ${cpuPer(TASKS, m.ours, 'runners')}`,
        raw: `${rate(TASKS, m.raw.ms)}; ${cpuPer(TASKS, m.raw)}`,
        ratio: m.ratio.ms,
      },
      {
        name: `${RUNNERS} runner sockets against the goal of ${fmt(GOAL_PER_S)} tasks/s`,
        ours: rate(TASKS, m.ours.ms),
        raw: `${fmt(GOAL_PER_S)} tasks/s (goal)`,
        ratio: perS(m.ours.ms) / GOAL_PER_S,
        goal: 1,
      },
    ];
  },
};

if (process.argv[1] === SELF && process.send) {
  void runnersProcess(process.argv[2]!).catch((err) => {
    process.stderr.write(`runners: ${(err as Error).stack}\n`);
    process.exit(1);
  });
}
