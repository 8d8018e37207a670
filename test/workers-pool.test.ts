import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Job, QueueEvents } from 'bullmq';
import { pino } from 'pino';
import { afterAll, afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { Cancellations } from '../src/tasks/cancellations.ts';
import { Gates } from '../src/tasks/gates.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import { Outcomes } from '../src/tasks/outcomes.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { ConsumerRegistry } from '../src/workers/registry.ts';
import { WorkerPool, type WorkerPoolOptions } from '../src/workers/worker-pool.ts';
import { FIXTURE_TASKS, useHarness, waitFor } from './support/harness.ts';

// Real forked worker processes (node:cluster) on the test Redis. Worker processes read their
// configuration from the environment they are forked with, so each test puts the same settings
// into process.env (with its own prefix) that the harness builds the primary's config from.

// The fixtures, plus two that say (as job progress) when their body runs and in which process,
// so that a test acts on a run that is really under way rather than one still loading.
const TASKS = mkdtempSync(join(tmpdir(), 'tm-pool-'));
cpSync(FIXTURE_TASKS, TASKS, { recursive: true });
writeFileSync(
  join(TASKS, 'nap.js'),
  `// Sleeps params.ms, stopping on abort, like sleep.js; reports {pid} as progress once running.
  module.exports = function (params, ctx) {
    var self = this;
    var t = setTimeout(function () { self.done({ slept: params.ms }); }, params.ms);
    ctx.signal.addEventListener('abort', function () { clearTimeout(t); self.error(ctx.signal.reason); });
    this.progress({ pid: process.pid });
  };`,
);
writeFileSync(
  join(TASKS, 'spin-reported.js'),
  `// Reports {pid} as progress, then blocks the event loop forever like spin.js.
  module.exports = function () {
    this.progress({ pid: process.pid }).then(function () { while (true) {} });
  };`,
);
writeFileSync(
  join(TASKS, 'block.js'),
  `// Reports {pid} as progress, then blocks the event loop for params.ms and finishes.
  module.exports = function (params) {
    var self = this;
    this.progress({ pid: process.pid }).then(function () {
      var until = Date.now() + params.ms;
      while (Date.now() < until) {}
      self.done({ blocked: params.ms });
    });
  };`,
);
afterAll(() => rmSync(TASKS, { recursive: true, force: true }));

const ENV = {
  TASKMASTER_TASKS_DIR: TASKS,
  TASKMASTER_ATTEMPTS: '2',
  TASKMASTER_BACKOFF_MS: '50',
  TASKMASTER_CONCURRENCY: '1',
};
const KILL_GRACE_MS = 500;
/** A grace period no test waits out: a stop that waited for it would time the test out. */
const LONG_GRACE_MS = 600_000;
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('worker pool (forked processes)', () => {
  const h = useHarness(ENV);
  const savedEnv = { ...process.env };

  beforeEach(() => {
    Object.assign(process.env, ENV, {
      REDIS_URL: inject('redisUrl'),
      TASKMASTER_PREFIX: h.prefix,
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    });
  });
  afterEach(() => {
    for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
    Object.assign(process.env, savedEnv);
  });

  /** A started pool of two processes, stopped after the test; resolves once both take work. */
  async function startPool(opts: Partial<WorkerPoolOptions> = {}): Promise<WorkerPool> {
    const pool = new WorkerPool({
      config: h.config,
      connection: h.connection('pool'),
      log: h.log,
      processes: 2,
      graceMs: 5_000,
      killGraceMs: KILL_GRACE_MS,
      ...opts,
    });
    pool.start();
    h.defer(() => pool.stop());
    await ready(pool);
    return pool;
  }

  /** Every process of the pool has announced itself (its BullMQ worker is running). */
  async function ready(pool: WorkerPool, n = pool.pids().length): Promise<void> {
    const registry = new ConsumerRegistry(h.redis, h.prefix);
    await waitFor(
      async () => {
        const pids = pool.pids();
        const live = new Set((await registry.live()).map((c) => c.pid));
        return pids.length === n && pids.every((p) => live.has(p));
      },
      `${n} worker processes to be ready`,
      60_000,
    );
  }

  function cancellations(): Cancellations {
    const c = h.client();
    const gates = new Gates({ connection: h.redis, prefix: h.prefix, store: c.store, log: h.log });
    h.defer(() => gates.close());
    return new Cancellations(h.redis, h.prefix, gates, new Outcomes(c.store, gates));
  }

  /** A file-gated run's params, and what ends it (see the wait-file fixture). */
  function gated(): { params: [{ path: string }]; release(): void } {
    const path = join(TASKS, `release-${h.prefix}-${Math.random().toString(36).slice(2)}`);
    h.defer(() => rmSync(path, { force: true }));
    return { params: [{ path }], release: () => writeFileSync(path, '') };
  }

  const job = async (c: TaskClient, id: string) => (await Job.fromId(c.queue(), id))!;
  const stateIs = (c: TaskClient, id: string, want: string, ms = 30_000) =>
    waitFor(async () => (await c.queue().getJobState(id)) === want, `job ${id} to be ${want}`, ms);
  /** Waits until the job is active; returns the pid of the process running it (BullMQ processedBy). */
  async function runningIn(c: TaskClient, id: string): Promise<number> {
    let pid = 0;
    await waitFor(async () => {
      const j = await job(c, id);
      pid = (await j.getState()) === 'active' && j.processedBy ? Number(j.processedBy.split(':').pop()) : 0;
      return pid > 0;
    }, `job ${id} to be running`);
    return pid;
  }
  const pidOf = (j: Job) => Number(j.processedBy!.split(':').pop());
  /** Waits until a nap / spin-reported run is in its body; returns the pid running it. */
  async function inBody(c: TaskClient, id: string): Promise<number> {
    let pid = 0;
    await waitFor(async () => {
      pid = ((await job(c, id)).progress as { pid?: number } | undefined)?.pid ?? 0;
      return pid > 0;
    }, `job ${id} to be running its body`);
    return pid;
  }

  it('times out a sleeping task through its signal and retries it, while the other process completes work', async () => {
    const pool = await startPool();
    const c = h.client();
    const before = pool.pids();
    const [s] = await c.add({ module: 'sleep', params: [{ ms: 60_000 }], timeout: 300 });
    const sleepPid = await runningIn(c, s!.id);
    const [r] = await c.add({ module: 'record', params: [{ delay: 100 }] });

    await stateIs(c, r!.id, 'completed');
    await stateIs(c, s!.id, 'failed');
    const slept = await job(c, s!.id);
    const recorded = await job(c, r!.id);
    expect(slept.failedReason).toBe('task sleep exceeded its timeout of 300 ms');
    expect(slept.attemptsMade).toBe(2);
    // Server-side stamps of the last attempt: it ran for its whole timeout, not less.
    expect(slept.finishedOn! - slept.processedOn!).toBeGreaterThanOrEqual(290);
    // The other process took the task added while the sleeping one ran.
    expect(pidOf(recorded)).not.toBe(sleepPid);
    expect(recorded.returnvalue).toEqual({ params: { delay: 100 } });
    // The run stopped when its signal fired, so no process had to be killed.
    expect(pool.pids()).toEqual(before);
  });

  it('kills and replaces a process blocked by while (true) {} at its timeout, and retries the task', async () => {
    const pool = await startPool();
    const c = h.client();
    const before = pool.pids();
    const [s] = await c.add({ module: 'spin', timeout: 300 });
    const firstPid = await runningIn(c, s!.id);
    const [r] = await c.add({ module: 'record', params: [{ delay: 100 }] });

    // Meanwhile the other process is free and completes other work.
    await stateIs(c, r!.id, 'completed');
    expect(pidOf(await job(c, r!.id))).not.toBe(firstPid);

    await stateIs(c, s!.id, 'failed');
    const spun = await job(c, s!.id);
    expect(spun.attemptsMade).toBe(2);
    expect(spun.failedReason).toMatch(
      /^task exceeded its timeout of 300 ms and did not stop; worker process \d+ was killed$/,
    );
    const lastPid = Number(/worker process (\d+)/.exec(spun.failedReason)![1]);
    await waitFor(() => !alive(firstPid) && !alive(lastPid), 'the killed processes to be gone');
    // Killed processes were replaced: the pool is back to two live processes, new ones.
    await waitFor(
      () => pool.pids().length === 2 && !pool.pids().includes(firstPid) && !pool.pids().includes(lastPid),
      'replacement processes',
    );
    expect(pool.pids()).not.toEqual(before);
    await ready(pool);
    const [after] = await c.add({ module: 'record', params: [{ after: true }] });
    await stateIs(c, after!.id, 'completed');
  });

  it('runs a task again at once after kill -9 of its process, and records its result once', async () => {
    const pool = await startPool();
    const c = h.client();
    const events = new QueueEvents(h.config.queue, { connection: h.connection('events'), prefix: h.prefix });
    h.defer(() => events.close());
    const completions: string[] = [];
    events.on('completed', ({ jobId }) => completions.push(jobId));
    await events.waitUntilReady();

    const gate = gated();
    const [s] = await c.add({ module: 'wait-file', params: gate.params });
    const victim = await inBody(c, s!.id);
    expect(pool.pids()).toContain(victim);
    process.kill(victim, 'SIGKILL');

    // Its attempt is failed as soon as the pool sees the exit (not after a stalled-job check,
    // which would fail it for a lost lock), and the retry runs in the other process.
    let rerun = 0;
    await waitFor(async () => {
      const j = await job(c, s!.id);
      rerun = (j.progress as { pid?: number } | undefined)?.pid ?? 0;
      return j.attemptsMade === 1 && rerun > 0 && rerun !== victim;
    }, 'the attempt to be failed and the task to run again in another process');
    gate.release();
    await stateIs(c, s!.id, 'completed');
    const done = await job(c, s!.id);
    expect(done.returnvalue).toEqual({ path: gate.params[0].path });
    expect(pidOf(done)).toBe(rerun);
    expect(done.attemptsMade).toBe(2);
    expect((done.stacktrace ?? []).join('\n')).toContain(`worker process ${victim} exited (SIGKILL)`);

    // Recorded once: its completion event came, nothing is left to run it again, one outcome.
    await waitFor(() => completions.includes(s!.id), 'the completion event');
    expect(completions.filter((id) => id === s!.id)).toHaveLength(1);
    expect(await c.queue().getJobCounts('completed', 'failed', 'active', 'wait', 'delayed', 'prioritized')).toEqual({
      completed: 1,
      failed: 0,
      active: 0,
      wait: 0,
      delayed: 0,
      prioritized: 0,
    });
    const [outcome] = await c.store.outcomes([dependencyKey('wait-file', gate.params)]);
    expect(outcome).toMatchObject({ state: 'completed', jobId: s!.id });
    await waitFor(() => pool.pids().length === 2 && !pool.pids().includes(victim), 'a replacement process');
    await ready(pool);
  });

  it('keeps the lock of a run that blocks its process for longer than a lock lasts: not killed, not run twice', async () => {
    const LOCK_MS = 6_000;
    const pool = await startPool({ lockDurationMs: LOCK_MS });
    const c = h.client();
    const before = pool.pids();
    // Blocked for longer than a lock lasts: its process cannot renew it meanwhile.
    const [s] = await c.add({ module: 'block', params: [{ ms: LOCK_MS + 2_000 }], timeout: 120_000 });
    const pid = await inBody(c, s!.id);
    const lock = `${h.prefix}:${h.config.queue}:${s!.id}:lock`;
    // The lock is there at every look until the run ends: the primary renews it.
    await waitFor(
      async () => {
        if ((await c.queue().getJobState(s!.id)) !== 'active') return true;
        if ((await h.redis.pttl(lock)) > 0) return false;
        if ((await c.queue().getJobState(s!.id)) !== 'active') return true;
        throw new Error('the lock of the blocked run lapsed while it ran');
      },
      'the blocked run to end',
      60_000,
    );
    await stateIs(c, s!.id, 'completed');
    const j = await job(c, s!.id);
    expect(j.returnvalue).toEqual({ blocked: LOCK_MS + 2_000 });
    expect(pidOf(j)).toBe(pid);
    expect(j.attemptsStarted).toBe(1);
    expect(pool.pids()).toEqual(before);
  }, 120_000);

  /**
   * Stops the pool while a run is in flight, which ends once the stop has begun; resolves with the
   * job and the pids the pool had. A stop that waited out the grace period instead of the run
   * would time the test out.
   */
  async function stopDuringRun(before?: (pool: WorkerPool) => void): Promise<{ j: Job; pids: number[]; path: string }> {
    const pool = await startPool({ graceMs: LONG_GRACE_MS });
    const c = h.client();
    const gate = gated();
    const [s] = await c.add({ module: 'wait-file', params: gate.params });
    await inBody(c, s!.id);
    const pids = pool.pids();
    before?.(pool);
    const stopped = pool.stop();
    gate.release();
    await stopped;
    expect(pool.pids()).toEqual([]);
    return { j: await job(c, s!.id), pids, path: gate.params[0].path };
  }

  it('graceful stop lets a run in flight finish, then resolves', async () => {
    const { j, pids, path } = await stopDuringRun();
    expect(await j.getState(), j.failedReason).toBe('completed');
    expect(j.returnvalue).toEqual({ path });
    expect(j.attemptsMade).toBe(1);
    await waitFor(() => pids.every((pid) => !alive(pid)), 'the worker processes to be gone');
    // Still completed once its process is gone (nothing failed the run after it exited).
    expect(await j.getState()).toBe('completed');
  });

  it('graceful stop also when every process got SIGTERM too (as a service manager sends it)', async () => {
    // systemd's default KillMode signals the whole group: each worker process gets SIGTERM
    // while the primary, on its own SIGTERM, stops the pool.
    const { j, path } = await stopDuringRun((pool) => pool.pids().forEach((pid) => process.kill(pid, 'SIGTERM')));
    expect(await j.getState(), j.failedReason).toBe('completed');
    expect(j.returnvalue).toEqual({ path });
    expect(j.attemptsMade).toBe(1);
  });

  it('graceful stop hands back a run that outlasts the grace period, without spending an attempt', async () => {
    const pool = await startPool({ graceMs: 300 });
    const c = h.client();
    const gate = gated();
    const [s] = await c.add({ module: 'wait-file', params: gate.params });
    await inBody(c, s!.id);
    await pool.stop();
    const handedBack = await job(c, s!.id);
    expect(['waiting', 'prioritized']).toContain(await handedBack.getState());
    expect(handedBack.attemptsMade).toBe(0);
    // Another pool takes it and completes it.
    gate.release();
    await startPool();
    await stateIs(c, s!.id, 'completed');
    expect((await job(c, s!.id)).returnvalue).toEqual({ path: gate.params[0].path });
  });

  it('cancels a running task through its signal: failed as cancelled, not retried', async () => {
    // Only the run's signal can stop it here: the pool would kill its process after this grace.
    const pool = await startPool({ killGraceMs: LONG_GRACE_MS });
    const c = h.client();
    const cancel = cancellations();
    const before = pool.pids();
    const params = [{ ms: 30_000 }];
    const [s] = await c.add({ module: 'nap', params });
    await inBody(c, s!.id);
    expect(await cancel.request(c.queue(), s!.id)).toEqual({ id: s!.id, state: 'cancelling' });
    await stateIs(c, s!.id, 'failed');
    const j = await job(c, s!.id);
    expect(j.failedReason).toMatch(/cancelled/);
    // Not retried: a cancel fails the task for good.
    expect(j.attemptsMade).toBe(1);
    expect(await c.queue().getJobCounts('active', 'wait', 'delayed', 'prioritized')).toEqual({
      active: 0,
      wait: 0,
      delayed: 0,
      prioritized: 0,
    });
    const [outcome] = await c.store.outcomes([dependencyKey('nap', params)]);
    expect(outcome).toMatchObject({ state: 'failed', jobId: s!.id, reason: 'cancelled' });
    expect(await cancel.pending([s!.id])).toEqual(new Set());
    // Stopped by its signal: no process was killed.
    expect(pool.pids()).toEqual(before);
  });

  it('cancels a running task that blocks its process: the process is killed, the task failed as cancelled', async () => {
    const pool = await startPool();
    const c = h.client();
    const cancel = cancellations();
    const [s] = await c.add({ module: 'spin-reported', timeout: 60_000 });
    const victim = await inBody(c, s!.id);
    const t0 = Date.now();
    expect(await cancel.request(c.queue(), s!.id)).toEqual({ id: s!.id, state: 'cancelling' });
    await stateIs(c, s!.id, 'failed');
    const j = await job(c, s!.id);
    // The blocked process could not hear the cancel: the pool killed it, not before the kill
    // grace (measured from before the request, so a slow machine only adds to it).
    expect(j.finishedOn! - t0).toBeGreaterThanOrEqual(KILL_GRACE_MS - 50);
    expect(j.failedReason).toBe('cancelled');
    expect(j.attemptsMade).toBe(1);
    await waitFor(() => !alive(victim), 'the killed process to be gone');
    const [outcome] = await c.store.outcomes([dependencyKey('spin-reported', [])]);
    expect(outcome).toMatchObject({ state: 'failed', jobId: s!.id, reason: 'cancelled' });
    expect(await cancel.pending([s!.id])).toEqual(new Set());
    await waitFor(() => pool.pids().length === 2 && !pool.pids().includes(victim), 'a replacement process');
    await ready(pool);
    expect(await c.queue().getJobState(s!.id)).toBe('failed');
  });

  it('cancels a waiting task: removed from the queue, never run', async () => {
    await startPool();
    const c = h.client();
    const cancel = cancellations();
    // Both processes busy (concurrency 1 each), so the third task waits.
    const gates = [gated(), gated()];
    const busy = await c.add(gates.map((g) => ({ module: 'wait-file', params: g.params })));
    await Promise.all(busy.map((b) => inBody(c, b.id)));
    const params = [{ cancelled: 'before it ran' }];
    const [w] = await c.add({ module: 'record', params });
    const was = await c.queue().getJobState(w!.id);
    expect(['waiting', 'prioritized']).toContain(was);
    expect(await cancel.request(c.queue(), w!.id)).toEqual({ id: w!.id, state: 'removed', was });
    expect(await Job.fromId(c.queue(), w!.id)).toBeUndefined();
    const [outcome] = await c.store.outcomes([dependencyKey('record', params)]);
    expect(outcome).toMatchObject({ state: 'failed', jobId: w!.id, reason: 'cancelled' });
    // A task added after it, at the same priority, runs once the processes are free: had the
    // cancelled one stayed queued, it would have run first.
    const [next] = await c.add({ module: 'record', params: [{ added: 'after the cancel' }] });
    for (const g of gates) g.release();
    for (const b of busy) await stateIs(c, b.id, 'completed');
    await stateIs(c, next!.id, 'completed');
    expect(await c.queue().getJobCounts('completed', 'active', 'wait', 'prioritized')).toEqual({
      completed: 3,
      active: 0,
      wait: 0,
      prioritized: 0,
    });
    expect(await c.store.outcomes([dependencyKey('record', params)])).toMatchObject([
      { state: 'failed', jobId: w!.id },
    ]);
    expect(await cancel.pending([w!.id])).toEqual(new Set());
    // A finished task answers as such.
    expect(await cancel.request(c.queue(), busy[0]!.id)).toEqual({
      id: busy[0]!.id,
      state: 'finished',
      was: 'completed',
    });
  });

  it('replaces a crash-looping process with a growing back-off', async () => {
    const lines: { msg: string; restartInMs?: number; pid?: number }[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
        done();
      },
    });
    const pool = await startPool({ processes: 1, log: pino({ level: 'warn' }, sink) });
    const restarts = () => lines.filter((l) => l.msg === 'worker process exited; replacing it');
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      const [pid] = pool.pids();
      const t0 = Date.now();
      process.kill(pid!, 'SIGKILL');
      await waitFor(() => pool.pids().length === 1 && pool.pids()[0] !== pid, 'a replacement process');
      delays.push(Date.now() - t0);
      expect(restarts()[i]).toMatchObject({ pid });
    }
    // 250 ms, then 500, then 1000 (each process lived under a minute) ...
    expect(restarts().map((l) => l.restartInMs)).toEqual([250, 500, 1000]);
    // ... and waited for: measured from before each kill, so a slow machine only adds to it.
    expect(delays[0]).toBeGreaterThanOrEqual(240);
    expect(delays[1]).toBeGreaterThanOrEqual(490);
    expect(delays[2]).toBeGreaterThanOrEqual(990);
    // The last replacement works.
    await ready(pool);
    const c = h.client();
    const [r] = await c.add({ module: 'record', params: [{ after: 'crashes' }] });
    await stateIs(c, r!.id, 'completed');
  });

  it('stop() while a replacement process is still starting resolves without waiting out the grace period', async () => {
    // A stop that waited out the grace period would time the test out.
    const pool = await startPool({ graceMs: LONG_GRACE_MS });
    const [victim] = pool.pids();
    process.kill(victim!, 'SIGKILL');
    await waitFor(() => pool.pids().length === 2 && !pool.pids().includes(victim!), 'a replacement process');
    const starting = pool.pids().filter((p) => p !== victim);
    await pool.stop();
    expect(pool.pids()).toEqual([]);
    await waitFor(() => starting.every((p) => !alive(p)), 'the processes to be gone');
  });

  it('stop() just after a worker process died (its exit not yet seen) does not crash the primary', async () => {
    const pool = await startPool();
    const errors: unknown[] = [];
    const onError = (err: unknown) => errors.push(err);
    process.on('uncaughtException', onError);
    h.defer(() => process.off('uncaughtException', onError));
    const [victim] = pool.pids();
    process.kill(victim!, 'SIGKILL');
    // Hold this event loop while the process dies, so the pool has not handled its exit yet —
    // as when a SIGTERM reaches the primary right after it killed an overrunning process.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
    await pool.stop();
    // stop() resolved once every exit was seen; an 'error' of a send to the dead process would
    // be emitted by then or in the turns of the event loop just after.
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    expect(errors).toEqual([]);
  });
});
