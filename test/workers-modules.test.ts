import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Job } from 'bullmq';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { TaskCancelledError } from '../src/tasks/cancellations.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { TaskTimeoutError } from '../src/errors.ts';
import { ResultNotSerialisableError, RunAbort, runTask, type TaskContext } from '../src/workers/run-task.ts';
import { TaskWorker } from '../src/workers/task-worker.ts';
import { FIXTURE_TASKS, useHarness, waitFor } from './support/harness.ts';

// Task semantics, run in this process by a TaskWorker (test/workers-pool.test.ts covers what
// needs real forked processes). Each module below is written into a private copy of the
// fixtures folder, which the hot add / hot edit tests also write into while a worker runs.
const MODULES: Record<string, string> = {
  // Legacy: params spread as arguments, ctx appended last.
  'args.js': `module.exports = function () {
    var args = Array.prototype.map.call(arguments, function (a) { return a && a.signal instanceof AbortSignal ? '(ctx)' : a; });
    this.done({ args: args });
  };`,
  // Legacy: this.add() queues another task; the run finishes with the new task's ids.
  'adder.js': `module.exports = function (p) {
    var self = this;
    this.add({ module: 'record', params: [{ child: p.tag }] }).then(function (ids) { self.done({ ids: ids }); }, function (e) { self.error(e); });
  };`,
  'done-twice.js': `module.exports = function () { this.done({ first: true }); this.done({ second: true }); };`,
  'done-then-error.js': `module.exports = function () { this.done({ first: true }); this.error(new Error('too late')); };`,
  'never.js': `module.exports = function () {};`,
  'throws.js': `module.exports = function () { throw new Error('sync boom'); };`,
  'circular.js': `module.exports = function () { var o = { a: 1 }; o.self = o; this.done(o); };`,
  'rejects.ts': `export default async function rejects(): Promise<never> { throw new Error('async boom'); }`,
  'bigint.ts': `export default async function bigint() { return { n: 10n }; }`,
  // Modern: everything ctx carries.
  'ctx.ts': `import type { TaskContext } from '${join(process.cwd(), 'src/workers/run-task.ts')}';
    export default async function ctxTask(params: { x: number }, ctx: TaskContext) {
      await ctx.progress(42);
      const ids = await ctx.add({ module: 'record', params: [{ from: ctx.jobId }] });
      return { x: params.x, jobId: ctx.jobId, module: ctx.module, attempt: ctx.attempt, aborted: ctx.signal.aborted,
        isSignal: ctx.signal instanceof AbortSignal, hasLog: typeof ctx.log.info === 'function', added: ids };
    }`,
  // Modern: fails every attempt before opts.succeedOn.
  'attempts.ts': `export default async function attempts(opts: { succeedOn: number }, ctx: { attempt: number }) {
    if (ctx.attempt < opts.succeedOn) throw new Error(\`attempt \${ctx.attempt} fails\`);
    return { attempt: ctx.attempt };
  }`,
  // Modern: waits for its signal, and says what the abort reason was.
  'waits.mjs': `export default function waits(params, ctx) {
    return new Promise((resolve, reject) => {
      ctx.signal.addEventListener('abort', () => {
        globalThis.__tmAbortReason = ctx.signal.reason && ctx.signal.reason.message;
        reject(ctx.signal.reason);
      });
    });
  }`,
  // Modern, run without params: `params` is undefined and ctx is still the second argument.
  'no-params.mjs': `export default async function noParams(params, ctx) { return { params: params === undefined ? '(undefined)' : params, jobId: ctx.jobId }; }`,
  // Records that its body ran, then takes its time.
  'started.js': `module.exports = function (p) {
    (globalThis.__tmStarted = globalThis.__tmStarted || []).push(p);
    var self = this;
    setTimeout(function () { self.done('ran'); }, 5000);
  };`,
  'broken.js': `module.exports = function ( { this.done(1) ;`,
  'version.js': `module.exports = function () { this.done({ v: 1 }); };`,
  'version-esm.mjs': `export default async function () { return { v: 1 }; }`,
  'version-ts.ts': `export default async function (): Promise<{ v: number }> { return { v: 1 }; }`,
};

// Made synchronously, at collection, so that it exists before the harness reads its env.
const TASKS = mkdtempSync(join(tmpdir(), 'tm-modules-'));
cpSync(FIXTURE_TASKS, TASKS, { recursive: true });
for (const [file, text] of Object.entries(MODULES)) writeFileSync(join(TASKS, file), text);

afterAll(() => rmSync(TASKS, { recursive: true, force: true }));

type Final = 'completed' | 'failed';
/** Waits until the job has finished for good; returns it. */
async function finished(c: TaskClient, id: string, ms = 10_000): Promise<Job> {
  await waitFor(
    async () => ['completed', 'failed'].includes(await c.queue().getJobState(id)),
    `job ${id} to finish`,
    ms,
  );
  return (await Job.fromId(c.queue(), id))!;
}
async function run(c: TaskClient, task: object, want?: Final, ms?: number): Promise<Job> {
  const [added] = await c.add(task);
  const job = await finished(c, added!.id, ms);
  if (want) expect(await job.getState(), `${JSON.stringify(task)}: ${job.failedReason}`).toBe(want);
  return job;
}

/** Rewrites a module and moves its mtime forward, as an editor saving it a moment later would. */
let edits = 0;
async function edit(file: string, text: string): Promise<void> {
  await writeFile(join(TASKS, file), text);
  const later = new Date(Date.now() + 5_000 + ++edits * 1_000);
  await utimes(join(TASKS, file), later, later);
}

describe('task modules', () => {
  const h = useHarness({ TASKMASTER_TASKS_DIR: TASKS, TASKMASTER_ATTEMPTS: '3', TASKMASTER_BACKOFF_MS: '10' });

  /** A worker whose log lines (JSON) the test can read. */
  function loggedWorker(): { worker: TaskWorker; lines: Record<string, unknown>[] } {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
        cb();
      },
    });
    const log = pino({ level: 'warn' }, sink);
    const worker = new TaskWorker({
      config: h.config,
      connection: h.connection('worker'),
      client: h.client(),
      log,
    }).start();
    h.defer(() => worker.close());
    return { worker, lines };
  }

  describe('legacy CommonJS', () => {
    it('spreads params as arguments, with ctx after them', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'args', params: [{ first: 1 }, 'second'] }, 'completed');
      expect(job.returnvalue).toEqual({ args: [{ first: 1 }, 'second', '(ctx)'] });
      // A single non-array params value is the one argument (as the 2015 model cast it).
      const one = await run(c, { module: 'args', params: { only: true } }, 'completed');
      expect(one.returnvalue).toEqual({ args: [{ only: true }, '(ctx)'] });
    });

    it('this.done(result) completes with the result; this.error(err) fails the attempt and retries', async () => {
      const c = h.client();
      h.worker();
      const ok = await run(c, { module: 'record', params: [{ a: 1 }] }, 'completed');
      expect(ok.returnvalue).toEqual({ params: { a: 1 } });
      const bad = await run(c, { module: 'fail', params: [{ b: 2 }] }, 'failed');
      expect(bad.failedReason).toBe('fail fixture: {"b":2}');
      expect(bad.attemptsMade).toBe(3);
    });

    it('this.add() from a task queues another task, which runs', async () => {
      const c = h.client();
      h.worker();
      const parent = await run(c, { module: 'adder', params: [{ tag: 'from-legacy' }] }, 'completed');
      const [childId] = (parent.returnvalue as { ids: string[] }).ids;
      const child = await finished(c, childId!);
      expect(child.name).toBe('record');
      expect(child.returnvalue).toEqual({ params: { child: 'from-legacy' } });
    });
  });

  describe('modern ESM / TypeScript', () => {
    it('runs a default export with (params, ctx): signal, jobId, module, attempt, progress, add, log', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'ctx', params: { x: 7 } }, 'completed');
      const r = job.returnvalue as Record<string, unknown> & { added: string[] };
      expect(r).toMatchObject({
        x: 7,
        jobId: job.id,
        module: 'ctx',
        attempt: 1,
        aborted: false,
        isSignal: true,
        hasLog: true,
      });
      expect(job.progress).toBe(42);
      const added = await finished(c, r.added[0]!);
      expect(added.returnvalue).toEqual({ params: { from: job.id } });
    });

    it('returns its value as the result (modern.ts fixture)', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'modern', params: { value: [1, 'two'] } }, 'completed');
      expect(job.returnvalue).toEqual({ value: [1, 'two'], jobId: job.id });
    });

    it('gets (undefined, ctx) when the task has no params', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'no-params' }, 'completed');
      expect(job.returnvalue).toEqual({ params: '(undefined)', jobId: job.id });
    });

    it('ctx.attempt counts retries', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'attempts', params: { succeedOn: 3 } }, 'completed');
      expect(job.returnvalue).toEqual({ attempt: 3 });
      expect(job.attemptsMade).toBe(3);
    });

    it('aborts ctx.signal with the timeout error when the run times out', async () => {
      const c = h.client();
      h.worker();
      (globalThis as { __tmAbortReason?: string }).__tmAbortReason = undefined;
      const job = await run(c, { module: 'waits', params: {}, timeout: 150 }, 'failed');
      expect(job.failedReason).toBe('task waits exceeded its timeout of 150 ms');
      expect((globalThis as { __tmAbortReason?: string }).__tmAbortReason).toBe(job.failedReason);
    });
  });

  describe('cancel', () => {
    it('a run aborted before its module starts (while it loads) never starts, and fails as cancelled', async () => {
      const c = h.client();
      const g = globalThis as { __tmStarted?: unknown[] };
      g.__tmStarted = [];
      // onStart is told as the run begins, before the module is loaded: the earliest moment a
      // cancel announced on the channel can reach the run (the worker aborts its signal).
      const w: TaskWorker = h.worker({
        hooks: { onStart: (r) => void w.abort(r.jobId, new TaskCancelledError(`task ${r.jobId} was cancelled`)) },
      });
      const job = await run(c, { module: 'started', params: [{ tag: 'never' }], timeout: 500 }, 'failed');
      expect(job.failedReason).toMatch(/cancelled/);
      expect(job.attemptsMade).toBe(1);
      expect(g.__tmStarted).toEqual([]);
    });
  });

  describe('defined outcomes', () => {
    it('done called twice: the first result stands, the second is ignored with a warning', async () => {
      const c = h.client();
      const { lines } = loggedWorker();
      const job = await run(c, { module: 'done-twice' }, 'completed');
      expect(job.returnvalue).toEqual({ first: true });
      expect(job.attemptsMade).toBe(1);
      await waitFor(
        () => lines.some((l) => /this\.done\(\) after it had already finished/.test(String(l.msg))),
        'the warning',
      );
      expect(lines.find((l) => /already finished/.test(String(l.msg)))).toMatchObject({
        jobId: job.id,
        module: 'done-twice',
      });
    });

    it('error after done: the result stands, the late error is ignored with a warning', async () => {
      const c = h.client();
      const { lines } = loggedWorker();
      const job = await run(c, { module: 'done-then-error' }, 'completed');
      expect(job.returnvalue).toEqual({ first: true });
      await waitFor(
        () => lines.some((l) => /this\.error\(\) after it had already finished/.test(String(l.msg))),
        'the warning',
      );
    });

    it('done never called: the run lasts until its timeout, then fails with a timeout error and is retried', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'never', timeout: 300 }, 'failed');
      expect(job.failedReason).toBe('task never exceeded its timeout of 300 ms');
      expect(job.attemptsMade).toBe(3);
      // The last attempt ran for its whole timeout, not less.
      expect(job.finishedOn! - job.processedOn!).toBeGreaterThanOrEqual(290);
    });

    it('a timeout above 5 s (checked by a sweep, not a timer per run) fires too, not before its time', async () => {
      const abort = new RunAbort();
      const ctx = { module: 'never', log: pino({ level: 'silent' }) } as unknown as TaskContext;
      // Runs that finish meanwhile leave the sweep's list from its head, middle and tail.
      const finishers: { done(v: unknown): void }[] = [];
      const others = [0, 1, 2].map(() =>
        runTask(
          function (this: { done(v: unknown): void }) {
            finishers.push(this);
          },
          [],
          ctx,
          5_100,
          new RunAbort(),
        ),
      );
      const started = Date.now();
      const outcome = runTask(function () {}, [], ctx, 5_100, abort).catch((err: unknown) => err);
      const later = runTask(
        function (this: { done(v: unknown): void }) {
          finishers.push(this);
        },
        [],
        ctx,
        5_100,
        new RunAbort(),
      );
      finishers[1]!.done('middle');
      finishers[3]!.done('head');
      finishers[0]!.done('tail');
      finishers[2]!.done('last');
      expect(await Promise.all([...others, later])).toEqual(['tail', 'middle', 'last', 'head']);
      const err = await outcome;
      const took = Date.now() - started;
      expect(err).toBeInstanceOf(TaskTimeoutError);
      expect((err as Error).message).toBe('task never exceeded its timeout of 5100 ms');
      expect(abort.aborted).toBe(true);
      // Measured from before the run started, so a slow machine can only add to it.
      expect(took).toBeGreaterThanOrEqual(5_100);
    });

    it('settles with the result or error of a run that settles while it starts, as with any other', async () => {
      const ctx = { module: 'm', log: pino({ level: 'silent' }) } as unknown as TaskContext;
      const run = (fn: (...a: unknown[]) => unknown) => runTask(fn as never, [], ctx, 1000, new RunAbort());
      await expect(
        run(function (this: { done(v: unknown): void }) {
          this.done({ n: 1 });
        }),
      ).resolves.toEqual({ n: 1 });
      await expect(run(() => 'returned')).resolves.toBe('returned');
      await expect(
        run(() => {
          throw new Error('sync boom');
        }),
      ).rejects.toThrow('sync boom');
      await expect(
        run(function (this: { done(v: unknown): void }) {
          this.done({ big: 1n });
        }),
      ).rejects.toThrow(ResultNotSerialisableError);
      await expect(run(async () => 'later')).resolves.toBe('later');
      const cancelled = new RunAbort();
      cancelled.abort(new Error('cancelled before it began'));
      await expect(runTask((() => 'never') as never, [], ctx, 1000, cancelled)).rejects.toThrow(
        'cancelled before it began',
      );
    });

    it('a synchronous throw fails the attempt, and is retried', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'throws' }, 'failed');
      expect(job.failedReason).toBe('sync boom');
      expect(job.attemptsMade).toBe(3);
    });

    it('a rejected promise fails the attempt, and is retried', async () => {
      const c = h.client();
      h.worker();
      const job = await run(c, { module: 'rejects' }, 'failed');
      expect(job.failedReason).toBe('async boom');
      expect(job.attemptsMade).toBe(3);
    });

    it('a result that is not JSON-serialisable fails without retry (legacy and modern)', async () => {
      const c = h.client();
      h.worker();
      const circular = await run(c, { module: 'circular' }, 'failed');
      expect(circular.failedReason).toMatch(/^task result is not JSON-serialisable: .*circular/i);
      expect(circular.attemptsMade).toBe(1);
      const big = await run(c, { module: 'bigint' }, 'failed');
      expect(big.failedReason).toMatch(/^task result is not JSON-serialisable: .*BigInt/);
      expect(big.attemptsMade).toBe(1);
    });
  });

  describe('module errors', () => {
    it('an unknown module fails at once, not retried, naming it and the modules that exist', async () => {
      const c = h.client();
      const w = h.worker();
      const job = await run(c, { module: 'no-such-task' }, 'failed');
      expect(job.attemptsMade).toBe(1);
      expect(job.failedReason).toContain('unknown module "no-such-task"');
      expect(job.failedReason).toContain(TASKS);
      const listed = job.failedReason
        .slice(job.failedReason.indexOf('modules there: ') + 'modules there: '.length)
        .split(', ');
      expect(listed).toEqual(await w.loader.list());
      expect(listed).toEqual(expect.arrayContaining(['record', 'sleep', 'modern', 'ctx', 'version-ts']));
    });

    it("a syntax error fails that module's runs only; another module in the same worker completes", async () => {
      const c = h.client();
      h.worker({ concurrency: 2 });
      const [b, r] = await c.add([{ module: 'broken' }, { module: 'record', params: [{ ok: true }] }]);
      const broken = await finished(c, b!.id);
      const fine = await finished(c, r!.id);
      expect(await broken.getState()).toBe('failed');
      expect(broken.failedReason).toMatch(/^module "broken" \(.*broken\.js\) failed to load: /);
      expect(broken.failedReason).toMatch(/syntax|Unexpected/i);
      expect(await fine.getState()).toBe('completed');
      expect(fine.returnvalue).toEqual({ params: { ok: true } });
      // The same worker keeps running other work afterwards, and runs the module once fixed.
      expect((await run(c, { module: 'modern', params: { value: 1 } }, 'completed')).returnvalue).toMatchObject({
        value: 1,
      });
      await edit('broken.js', 'module.exports = function () { this.done({ fixed: true }); };');
      expect((await run(c, { module: 'broken', params: ['again'] }, 'completed')).returnvalue).toEqual({ fixed: true });
    });
  });

  describe('code without restart', () => {
    it('a file added to the tasks folder runs without restarting the worker (CJS and ESM)', async () => {
      const c = h.client();
      const w = h.worker();
      // Warm the worker up so that "no restart" means something.
      await run(c, { module: 'record' }, 'completed');
      const unknown = await run(c, { module: 'hot-added' }, 'failed');
      expect(unknown.failedReason).toContain('unknown module "hot-added"');
      await writeFile(join(TASKS, 'hot-added.js'), 'module.exports = function (p) { this.done({ hot: p }); };');
      await writeFile(
        join(TASKS, 'hot-added-esm.ts'),
        'export default async (p: { n: number }) => ({ hot: p.n * 2 });',
      );
      expect((await run(c, { module: 'hot-added', params: ['yes'] }, 'completed')).returnvalue).toEqual({ hot: 'yes' });
      expect((await run(c, { module: 'hot-added-esm', params: { n: 21 } }, 'completed')).returnvalue).toEqual({
        hot: 42,
      });
      expect(await w.loader.list()).toEqual(expect.arrayContaining(['hot-added', 'hot-added-esm']));
    });

    it.each([
      ['CommonJS .js', 'version.js', (v: number) => `module.exports = function () { this.done({ v: ${v} }); };`],
      ['ESM .mjs', 'version-esm.mjs', (v: number) => `export default async function () { return { v: ${v} }; }`],
      [
        'TypeScript .ts',
        'version-ts.ts',
        (v: number) => `export default async function (): Promise<{ v: number }> { return { v: ${v} }; }`,
      ],
    ])('an edited %s module applies to the runs that start after the edit', async (_kind, file, source) => {
      const c = h.client();
      h.worker();
      const module = file.replace(/\.[a-z]+$/, '');
      expect((await run(c, { module, params: [1] }, 'completed')).returnvalue).toEqual({ v: 1 });
      // Unchanged: still the cached version.
      expect((await run(c, { module, params: [2] }, 'completed')).returnvalue).toEqual({ v: 1 });
      await edit(file, source(2));
      expect((await run(c, { module, params: [3] }, 'completed')).returnvalue).toEqual({ v: 2 });
      await edit(file, source(3));
      expect((await run(c, { module, params: [4] }, 'completed')).returnvalue).toEqual({ v: 3 });
    });
  });
});
