import { EventEmitter } from 'node:events';
import { Job } from 'bullmq';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { InvalidTaskError } from '../src/errors.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { taskFromJob, timeoutOf } from '../src/tasks/task.ts';
import { validateTasks, type ValidateOptions } from '../src/tasks/validate.ts';
import { ConsumerRegistry } from '../src/workers/registry.ts';
import { RunAbort, runTask, type TaskContext } from '../src/workers/run-task.ts';
import { WorkerPool } from '../src/workers/worker-pool.ts';
import { bridge, connect } from './fixtures/bridge-clients.ts';
import { useHarness, waitFor } from './support/harness.ts';

// What the 2016 taskmaster's own code does, run unchanged: task modules in its runner's
// `this.emit('done'|'error'|'add', …)` convention (test/fixtures/tasks/legacyEmit*.js), numeric
// strings its Mongoose schema cast, and the feeder example of its README.

const job = async (c: TaskClient, id: string) => (await Job.fromId(c.queue(), id))!;
async function finished(c: TaskClient, id: string, want: 'completed' | 'failed'): Promise<Job> {
  await waitFor(async () => (await c.queue().getJobState(id)) === want, `job ${id} to be ${want}`, 30_000);
  return job(c, id);
}

describe('task modules in the 2016 runner convention (this.emit)', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  it('this.emit("done", result) completes the run with that result', async () => {
    const c = h.client();
    h.worker();
    const [t] = await c.add({ module: 'legacyEmitDone', params: [{ delay: 20 }], timeout: 60_000 });
    const done = await finished(c, t!.id, 'completed');
    expect(done.returnvalue).toEqual({ emitted: { delay: 20 } });
  });

  it('this.emit("error", msg) from a timer fails the attempt with that error; the next task still runs', async () => {
    const c = h.client();
    h.worker({ concurrency: 1 });
    const [e] = await c.add({ module: 'legacyEmitErrorTimer', params: [{ why: 'disk full' }], timeout: 60_000 });
    const failed = await finished(c, e!.id, 'failed');
    expect(failed.failedReason).toBe('emitted error: disk full');
    const [next] = await c.add({ module: 'legacyEmitDone', params: [{ after: 'error' }] });
    expect((await finished(c, next!.id, 'completed')).returnvalue).toEqual({ emitted: { after: 'error' } });
  });

  it('this.emit("add", task) queues the task, which runs', async () => {
    const c = h.client();
    h.worker();
    const [a] = await c.add({ module: 'legacyEmitAdd', params: [{ tag: 'from-emit' }], timeout: 60_000 });
    expect((await finished(c, a!.id, 'completed')).returnvalue).toBeNull();
    let added: Job | undefined;
    await waitFor(async () => {
      const jobs = await c.queue().getJobs(['completed']);
      added = jobs.find((j) => j.name === 'record');
      return added !== undefined;
    }, 'the task added by emit("add") to complete');
    expect(added!.returnvalue).toEqual({ params: { addedBy: 'from-emit' } });
  });

  it('runs in a worker pool process: an emitted error does not crash the process, and it takes the next task', async () => {
    const pool = new WorkerPool({
      config: h.config,
      connection: h.connection('pool'),
      log: h.log,
      processes: 1,
      graceMs: 5_000,
    });
    pool.start();
    h.defer(() => pool.stop());
    const registry = new ConsumerRegistry(h.redis, h.prefix);
    await waitFor(
      async () => {
        const pids = pool.pids();
        return pids.length === 1 && (await registry.live()).some((r) => r.pid === pids[0]);
      },
      'the worker process to be ready',
      30_000,
    );
    const [pid] = pool.pids();
    const c = h.client();

    const [e] = await c.add({ module: 'legacyEmitErrorTimer', params: [{ why: 'in a pool' }], timeout: 60_000 });
    const failed = await finished(c, e!.id, 'failed');
    expect(failed.failedReason).toBe('emitted error: in a pool');
    const [d, a] = await c.add([
      { module: 'legacyEmitDone', params: [{ in: 'pool' }] },
      { module: 'legacyEmitAdd', params: [{ tag: 'pool' }] },
    ]);
    const done = await finished(c, d!.id, 'completed');
    expect(done.returnvalue).toEqual({ emitted: { in: 'pool' } });
    await finished(c, a!.id, 'completed');
    await waitFor(
      async () => (await c.queue().getJobs(['completed'])).some((j) => j.name === 'record'),
      'the added task to run',
    );
    // The same process ran all of them: none crashed and none was replaced.
    for (const j of [failed, done]) expect(Number(j.processedBy!.split(':').pop())).toBe(pid);
    expect(pool.pids()).toEqual([pid]);
  });

  describe('`this` is an EventEmitter, as the 2016 runner gave it', () => {
    const ctx = { log: pino({ level: 'silent' }), module: 'inline' } as unknown as TaskContext;
    const run = (fn: (this: EventEmitter) => unknown) => runTask(fn as never, [], ctx, 5_000, new RunAbort());

    it("the task's own listeners hear done and error, and removing them all changes nothing for the run", async () => {
      const heard: unknown[] = [];
      let self: EventEmitter | undefined;
      const result = await run(function () {
        // eslint-disable-next-line @typescript-eslint/no-this-alias -- the test keeps the run's emitter to inspect it
        self = this;
        this.once('done', (r: unknown) => heard.push(['done', r]));
        this.on('custom', (v: unknown) => heard.push(['custom', v]));
        expect(this.emit('custom', 1)).toBe(true);
        this.removeAllListeners('custom');
        expect(this.emit('custom', 2)).toBe(false);
        this.removeAllListeners();
        this.once('done', (r: unknown) => heard.push(['done', r]));
        setTimeout(() => this.emit('done', { ok: 1 }), 5);
      });
      expect(self).toBeInstanceOf(EventEmitter);
      expect(result).toEqual({ ok: 1 });
      expect(heard).toEqual([
        ['custom', 1],
        ['done', { ok: 1 }],
      ]);
      expect(self!.listenerCount('done')).toBe(0);
    });

    it('this.done(result) is heard as "done" too, and a task\'s own error listener hears the error', async () => {
      const heard: unknown[] = [];
      expect(
        await run(function () {
          this.on('done', (r: unknown) => heard.push(r));
          (this as unknown as { done(r: unknown): void }).done(7);
        }),
      ).toBe(7);
      expect(heard).toEqual([7]);
      const err = await run(function () {
        this.on('error', (e: unknown) => heard.push(e));
        setTimeout(() => this.emit('error', new Error('own listener')), 5);
      }).catch((e: unknown) => e);
      expect((err as Error).message).toBe('own listener');
      expect(heard).toEqual([7, expect.objectContaining({ message: 'own listener' })]);
    });

    it('an error emitted synchronously, or with nothing, fails the run without throwing from emit', async () => {
      let returned: unknown;
      await expect(
        run(function () {
          returned = this.emit('error', 'sync emit');
        }),
      ).rejects.toThrow('sync emit');
      expect(returned).toBe(true);
      const err = await run(function () {
        setTimeout(() => this.emit('error'), 5);
      }).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/emitted 'error' without an error/);
    });
  });
});

describe('numbers as strings, as the 2016 Mongoose schema cast them', () => {
  const h = useHarness();
  const OPTS: ValidateOptions = {
    defaults: { priority: 50, timeout: 300_000 },
    limits: { maxBatch: 100, maxPayloadBytes: 1024 * 1024 },
    now: 1_700_000_000,
  };
  const one = (t: object) => validateTasks({ module: 'm', ...t }, OPTS)[0]!;
  const problems = (t: object) => {
    try {
      validateTasks({ module: 'm', ...t }, OPTS);
    } catch (err) {
      return (err as InvalidTaskError).problems;
    }
    throw new Error('accepted');
  };

  it('converts numeric strings for priority, timeout and created', () => {
    expect(one({ priority: '70', timeout: '5000', created: '1500000000' })).toMatchObject({
      priority: 70,
      timeout: 5000,
      created: 1_500_000_000,
    });
    // What JavaScript's Number() reads, as Mongoose cast: signs, padding, exponents, hex.
    expect(one({ priority: '-20' }).priority).toBe(-20);
    expect(one({ priority: ' 7 ' }).priority).toBe(7);
    expect(one({ timeout: '1e4' }).timeout).toBe(10_000);
    expect(one({ priority: '0x46' }).priority).toBe(70);
    expect(one({ created: '1500000000.5' }).created).toBe(1_500_000_000.5);
    expect(Object.is(one({ priority: '-0' }).priority, 0)).toBe(true);
  });

  it('refuses anything else, naming the field and the value', () => {
    for (const [field, value] of [
      ['priority', 'abc'],
      ['priority', ''],
      ['priority', '   '],
      ['priority', '7.5'],
      ['priority', '1e400'],
      ['priority', 'Infinity'],
      ['priority', '1000001'],
      ['timeout', '0'],
      ['timeout', 'NaN'],
      ['timeout', '5s'],
      ['created', '2015-06-01'],
      ['created', '-1'],
    ] as const) {
      expect(problems({ [field]: value }), `${field}: ${JSON.stringify(value)}`).toEqual([
        { index: 0, field, message: expect.stringContaining(`got string ${JSON.stringify(value)}`) },
      ]);
    }
    expect(problems({ priority: 'high' })[0]!.message).toMatch(
      /must be an integer from -1000000 to 1000000 \(higher runs sooner\) or a string of one such as "70", got string "high"$/,
    );
  });

  it('a task added with priority "70" runs before the 50s and is stored as 70, timeout "5000" as 5000', async () => {
    const c = h.client();
    const added = await c.add([
      { module: 'record', params: [{ n: 'a' }] },
      { module: 'record', params: [{ n: 'b' }], priority: '70', timeout: '5000' },
      { module: 'record', params: [{ n: 'c' }], priority: '10' },
      { module: 'record', params: [{ n: 'd' }] },
    ]);
    const b = await job(c, added[1]!.id);
    expect(taskFromJob(b).priority).toBe(70);
    expect(timeoutOf(b.data)).toBe(5000);
    h.worker({ concurrency: 1 });
    const jobs = await Promise.all(added.map((t) => finished(c, t.id, 'completed')));
    const order = [...jobs].sort((x, y) => x.processedOn! - y.processedOn! || x.finishedOn! - y.finishedOn!);
    expect(order.map((j) => (j.returnvalue as { params: { n: string } }).params.n)).toEqual(['b', 'a', 'd', 'c']);
  });
});

describe('the 2016 README feeder example: {task: "doTask", params: {…}}', () => {
  const h = useHarness();

  it('is refused once, saying to use "module", with the value printed once', async () => {
    const err = (() => {
      try {
        validateTasks(
          { task: 'doTask', params: { paramA: 1, paramB: 2 } },
          {
            defaults: { priority: 50, timeout: 300_000 },
            limits: { maxBatch: 100, maxPayloadBytes: 1024 * 1024 },
          },
        );
      } catch (e) {
        return e as InvalidTaskError;
      }
      throw new Error('accepted');
    })();
    expect(err.problems).toEqual([
      {
        index: 0,
        field: 'task',
        message: 'unknown field: use "module" for the task\'s module name, e.g. {"module": "doTask", ...}',
      },
    ]);
    expect(err.message).not.toMatch(/undefined undefined/);
  });

  it('a module left out entirely is named once as missing', () => {
    const opts = { defaults: { priority: 50, timeout: 300_000 }, limits: { maxBatch: 100, maxPayloadBytes: 1 << 20 } };
    const err = (() => {
      try {
        validateTasks({ params: [1] }, opts);
      } catch (e) {
        return e as InvalidTaskError;
      }
      throw new Error('accepted');
    })();
    expect(err.problems).toEqual([
      {
        index: 0,
        field: 'module',
        message: expect.stringMatching(/^must be a string \(letters, .*\), got undefined$/),
      },
    ]);
    expect(err.message).not.toMatch(/undefined undefined/);
  });

  it('over Socket.IO 1.7.4, the README batch gets task:add:failed naming "module" for each task', async () => {
    const b = await bridge(h);
    const f = await connect(h, '1.7.4', b.url);
    // The 2016 README's feeder example, as it stands.
    f.emit('task:add', [
      { task: 'doTask', params: { paramA: 1, paramB: 2 } },
      { task: 'doOtherTask', timeout: 20000, priority: 100, params: { paramA: 1, paramB: 2 } },
    ]);
    const [failed] = (await f.next('task:add:failed')) as [
      { code: string; message: string; problems: { index: number; field: string; message: string }[] },
    ];
    expect(failed.code).toBe('TASK_INVALID');
    expect(failed.problems).toEqual([
      {
        index: 0,
        field: 'task',
        message: 'unknown field: use "module" for the task\'s module name, e.g. {"module": "doTask", ...}',
      },
      {
        index: 1,
        field: 'task',
        message: 'unknown field: use "module" for the task\'s module name, e.g. {"module": "doOtherTask", ...}',
      },
    ]);
    expect(failed.message.match(/use "module"/g)).toHaveLength(2);
    expect(failed.message).not.toMatch(/undefined/);
  });
});
