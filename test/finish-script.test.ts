import { Queue, Worker } from 'bullmq';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { dependencyKey, moduleKey } from '../src/tasks/identity.ts';
import { IdentityStore } from '../src/tasks/identity-store.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { Finishing, installFinishScript, passIdentityKeys } from '../src/queue/finishing.ts';
import { Components } from '../src/components.ts';
import { taskFromJob } from '../src/tasks/task.ts';
import { finishScript } from '../src/queue/scripts.ts';
import { useHarness, waitFor } from './support/harness.ts';

describe("outcomes recorded by the worker's finishing script", () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  afterEach(() => vi.restoreAllMocks());

  /** Runs `record(name)` on a worker of its own; gives the job and its dependency key once it completed. */
  async function completedTask(c: TaskClient, name: string) {
    h.worker();
    const dk = dependencyKey('record', [name]);
    const [a] = await c.add({ module: 'record', params: [name] });
    await waitFor(async () => (await c.queue().getJobState(a!.id)) === 'completed', 'the task to complete');
    return { a, dk };
  }

  it('records a completion and a failure in the step that finishes the job, with no command of its own', async () => {
    const settle = vi.spyOn(IdentityStore.prototype, 'settle');
    const c = h.client();
    const w = h.worker();
    expect(w.finishing.inScript).toBe(true);
    const [ok, bad] = await c.add([
      { module: 'record', params: ['ok'] },
      { module: 'fail', params: ['bad'] },
    ]);
    await waitFor(
      async () =>
        (await c.queue().getJobState(bad!.id)) === 'failed' && (await c.queue().getJobState(ok!.id)) === 'completed',
      'both to finish',
    );
    const [done, failed] = await c.store.outcomes([dependencyKey('record', ['ok']), dependencyKey('fail', ['bad'])]);
    expect(done).toMatchObject({ state: 'completed', jobId: ok!.id });
    expect(done!.at).toBe((await c.queue().getJob(ok!.id))!.finishedOn);
    expect(failed).toMatchObject({
      state: 'failed',
      jobId: bad!.id,
      reason: (await c.queue().getJob(bad!.id))!.failedReason,
    });
    expect(JSON.parse((await h.redis.hget(c.keys.failed, dependencyKey('fail', ['bad'])))!)).toMatchObject({
      jobId: bad!.id,
    });
    // The completion (no dependencies, no gates waiting) is kept in place of its claim.
    const kept = { jobId: ok!.id, at: done!.at, queue: h.config.queue };
    expect(JSON.parse((await h.redis.hget(c.keys.live, dependencyKey('record', ['ok'])))!)).toEqual(kept);
    expect(await h.redis.hexists(c.keys.done, dependencyKey('record', ['ok']))).toBe(0);
    expect(await h.redis.hexists(c.keys.live, dependencyKey('fail', ['bad']))).toBe(0);
    expect(settle).not.toHaveBeenCalled();
    // Both identities can run again (the completed one when asked to, within the dedup
    // window), and the completion moves to `done`, where it stays while the new run is live.
    const again = await c.add([
      { module: 'record', params: ['ok'], rerun: true },
      { module: 'fail', params: ['bad'] },
    ]);
    expect(again.map((a) => a.duplicate)).toEqual([false, false]);
    expect(again.map((a) => a.id)).not.toContain(ok!.id);
    expect(JSON.parse((await h.redis.hget(c.keys.done, dependencyKey('record', ['ok'])))!)).toEqual(kept);
    expect((await c.store.outcomes([dependencyKey('record', ['ok'])]))[0]).toMatchObject({ state: 'completed' });
  });

  it('moves a completion kept in place of its claim to done when a batch with gates claims the task again', async () => {
    const c = h.client();
    const { a, dk } = await completedTask(c, 'again');
    const kept = JSON.parse((await h.redis.hget(c.keys.live, dk))!);
    expect(kept).toMatchObject({ jobId: a!.id });
    // A dependency outside the batch makes a gate, so the batch claims first (the CLAIM script).
    await c.queue().pause();
    const [again, dependent] = await c.add([
      { module: 'record', params: ['again'], rerun: true },
      { module: 'record', params: ['after'], dependencies: [{ module: 'record', params: ['elsewhere'] }] },
    ]);
    expect(again!.duplicate).toBe(false);
    expect(dependent!.duplicate).toBe(false);
    expect(JSON.parse((await h.redis.hget(c.keys.done, dk))!)).toEqual(kept);
    expect((await h.redis.hget(c.keys.live, dk))!.endsWith(`|${c.keys.job(h.config.queue, again!.id)}`)).toBe(true);
    expect((await c.store.outcomes([dk]))[0]).toMatchObject({ state: 'completed', jobId: a!.id });
  });

  it('keeps a completion kept in place of its claim when the job is run again and when it leaves Redis', async () => {
    const c = h.client();
    const { a, dk } = await completedTask(c, 'kept');
    const first = (await c.store.outcomes([dk]))[0]!;
    // Retried as a completed job (as bull-board offers): it runs and finishes again.
    await (await c.queue().getJob(a!.id))!.retry('completed');
    await waitFor(async () => (await c.queue().getJob(a!.id))!.finishedOn! > first.at, 'the second run to complete');
    expect(await c.queue().getJobState(a!.id)).toBe('completed');
    expect((await c.store.outcomes([dk]))[0]).toMatchObject({ state: 'completed', jobId: a!.id });
    // Removed by hand: the record is not the job's, so it stays.
    expect(await c.queue().remove(a!.id)).toBe(1);
    expect((await c.store.outcomes([dk]))[0]).toMatchObject({ state: 'completed', jobId: a!.id });
  });

  it('records tasks from plain BullMQ producers in the finishing step too, with no command of their own', async () => {
    const settle = vi.spyOn(IdentityStore.prototype, 'settle');
    const c = h.client();
    h.worker();
    const native = new Queue(h.config.queue, { connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => native.close());
    const ok = await native.add('record', { n: 1 });
    const bad = await native.add('fail', { n: 2 });
    const [okKey, badKey] = [dependencyKey('record', [{ n: 1 }]), dependencyKey('fail', [{ n: 2 }])];
    await waitFor(
      async () => (await h.redis.hexists(c.keys.done, okKey)) + (await h.redis.hexists(c.keys.failed, badKey)) === 2,
      'both native tasks to be recorded',
    );
    expect(settle).not.toHaveBeenCalled();
    const done = await native.getJob(ok.id!);
    expect(JSON.parse((await h.redis.hget(c.keys.done, okKey))!)).toEqual({
      jobId: ok.id,
      at: done!.finishedOn,
      queue: h.config.queue,
    });
    expect(JSON.parse((await h.redis.hget(c.keys.done, moduleKey('record')))!)).toMatchObject({ jobId: ok.id });
    expect(JSON.parse((await h.redis.hget(c.keys.failed, badKey))!)).toMatchObject({
      jobId: bad.id,
      reason: (await native.getJob(bad.id!))!.failedReason,
    });
  });

  it('records jobs from plain producers by a command of their own where the worker cannot hand their keys', async () => {
    const settle = vi.spyOn(IdentityStore.prototype, 'settle');
    const connection = h.connection('changed');
    const parts = new Components({ config: h.config, connection, log: h.log });
    h.defer(() => parts.close());
    const finishing = new Finishing({ connection, outcomes: parts.outcomes, log: h.log });
    const worker = new Worker(
      h.config.queue,
      async (job) => {
        await finishing.recordCompletion(job, taskFromJob(job));
        return 'done';
      },
      { connection, prefix: h.prefix, autorun: false },
    );
    h.defer(() => worker.close());
    // As if BullMQ's finishing arguments had changed shape: one fewer than the script expects.
    const backend = worker.backend as unknown as { moveToFinishedArgs(...args: unknown[]): unknown[] };
    const own = backend.moveToFinishedArgs.bind(backend);
    backend.moveToFinishedArgs = (...args) => own(...args).slice(0, -1);
    finishing.prepare(worker);
    void worker.run();
    const native = new Queue(h.config.queue, { connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => native.close());
    const job = await native.add('record', { n: 3 });
    const dk = dependencyKey('record', [{ n: 3 }]);
    await waitFor(async () => (await h.redis.hexists(parts.keys.done, dk)) === 1, 'the native task to be recorded');
    expect(settle).toHaveBeenCalledTimes(1);
    expect(JSON.parse((await h.redis.hget(parts.keys.done, dk))!)).toMatchObject({ jobId: job.id });
  });

  it('is handed the identity keys by the task worker, and reads them from the job where a caller does not', async () => {
    const c = h.client();
    await c.queue().pause();
    const w = h.worker();
    const [a] = await c.add({ module: 'record', params: ['handed'] });
    const job = (await c.queue().getJob(a!.id))!;
    const backend = w.worker.backend as unknown as { moveToFinishedArgs(...args: unknown[]): unknown[] };
    const at = Date.now();
    const args = backend.moveToFinishedArgs(job, 'null', 'returnvalue', false, 'completed', 'token', at, false);
    const keys = (job.data as { $taskmaster: { keys: { task: string; dependency: string } } }).$taskmaster.keys;
    const record = JSON.stringify({ jobId: a!.id, at, queue: h.config.queue });
    const mk = moduleKey('record');
    expect(args.slice(-8)).toEqual([
      keys.task,
      keys.dependency,
      c.keys.live,
      c.keys.waiters(keys.dependency),
      record,
      mk,
      c.keys.waiters(mk),
      c.keys.done,
    ]);

    // A plain BullMQ worker on a connection with the script: no keys handed, still recorded.
    await w.close();
    const connection = h.connection('plain');
    installFinishScript(connection);
    const plain = new Worker(h.config.queue, async () => 'plain', { connection, prefix: h.prefix });
    h.defer(() => plain.close());
    await c.queue().resume();
    const handed = dependencyKey('record', ['handed']);
    await waitFor(
      async () => (await c.store.outcomes([handed]))[0]?.state === 'completed',
      'the plain worker to record it',
    );
    expect((await c.store.outcomes([handed]))[0]).toMatchObject({ jobId: a!.id });
    expect((await c.queue().getJob(a!.id))!.returnvalue).toBe('plain');
    expect(JSON.parse((await h.redis.hget(c.keys.live, handed))!)).toMatchObject({ jobId: a!.id });
    // Its module's completion too, under the key the script computes as moduleKey does.
    expect(JSON.parse((await h.redis.hget(c.keys.done, moduleKey('record')))!)).toMatchObject({ jobId: a!.id });
  });

  it('records under the keys it is handed, without reading the job', async () => {
    const c = h.client();
    await c.queue().pause();
    const [a] = await c.add({ module: 'record', params: ['real'] });
    const connection = h.connection('manual');
    installFinishScript(connection);
    const manual = new Worker(h.config.queue, null, { connection, prefix: h.prefix, autorun: false });
    h.defer(() => manual.close());
    passIdentityKeys(manual);
    await c.queue().resume();
    const job = (await manual.getNextJob('tok'))!;
    expect(job.id).toBe(a!.id);
    // Keys in the worker's copy of the data only: the record shows which ones the script used.
    (job.data as { $taskmaster: { keys: object } }).$taskmaster.keys = { task: 'tk-handed', dependency: 'dk-handed' };
    await job.moveToCompleted('done', 'tok', false);
    expect(JSON.parse((await h.redis.hget(c.keys.done, 'dk-handed'))!)).toMatchObject({ jobId: a!.id });
    expect(await h.redis.hexists(c.keys.done, dependencyKey('record', ['real']))).toBe(0);
  });

  it('announces the gates waiting on a task, which open without waiting for the reconciler', async () => {
    const c = h.client();
    h.worker();
    const dep = { module: 'record', params: ['dep'] };
    const [x] = await c.add({ module: 'record', params: ['x'], dependencies: [dep] });
    expect(await c.queue().getJobState(x!.id)).toBe('waiting-children');
    const started = Date.now();
    await c.add(dep);
    // The reconciler runs every 15 s; the announcement opens the gate at once.
    await waitFor(async () => (await c.queue().getJobState(x!.id)) === 'completed', 'the dependent to complete', 3000);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(await h.redis.scard(c.keys.opening)).toBe(0);
  });

  it('is built from BullMQ’s own script, after its lock check, with no prefix written into it', () => {
    const lua = finishScript()!;
    const lock = lua.indexOf('removeLock(jobIdKey');
    const record = lua.indexOf('settleOne(');
    expect(lock).toBeGreaterThan(0);
    expect(record).toBeGreaterThan(lock);
    expect(lua).toContain('pfx .. ":tm:done"');
    expect(lua).not.toContain(h.prefix);
  });
});
