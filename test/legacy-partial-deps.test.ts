import { beforeEach, afterEach, describe, expect, it } from 'vitest';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import type { InvalidTaskError } from '../src/errors.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { validateTasks } from '../src/tasks/validate.ts';
import { bridge, connect } from './fixtures/bridge-clients.ts';
import { useHarness, waitFor } from './support/harness.ts';

// `hold` runs until the test calls globalThis.__tmHolds[name](value); an Error value fails it.
const g = globalThis as { __tmHolds?: Record<string, (v?: unknown) => void> };
beforeEach(() => {
  g.__tmHolds = {};
});
const releaseHolds = () => Object.values(g.__tmHolds ?? {}).forEach((done) => done());
const running = (name: string) => waitFor(() => !!g.__tmHolds?.[name], `${name} to run`);

const state = (c: TaskClient, id: string) => c.queue().getJobState(id);
const reached = (c: TaskClient, id: string, want: string) =>
  waitFor(async () => (await state(c, id)) === want, `job ${id} to be ${want}`);

describe('dependencies on any task of a module (no params)', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  afterEach(releaseHolds);

  it('wait for some task of the module to complete, added after them', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const [d] = await c.add({ module: 'record', params: ['after any hold'], dependencies: [{ module: 'hold' }] });
    expect(await state(c, d!.id)).toBe('waiting-children');
    const [x] = await c.add({ module: 'hold', params: [{ name: 'x', any: 'params' }] });
    await running('x');
    expect(await state(c, d!.id)).toBe('waiting-children');
    g.__tmHolds!.x!('done');
    await reached(c, d!.id, 'completed');
    const [dep, dependent] = await Promise.all([c.queue().getJob(x!.id), c.queue().getJob(d!.id)]);
    expect(dependent!.processedOn).toBeGreaterThanOrEqual(dep!.finishedOn!);
  });

  it('are satisfied at once by one that completed before they were added', async () => {
    const c = h.client();
    h.worker({ concurrency: 2 });
    const [x] = await c.add({ module: 'record', params: ['earlier'] });
    await reached(c, x!.id, 'completed');
    const [d] = await c.add({ module: 'hold', params: [{ name: 'd' }], dependencies: [{ module: 'record' }] });
    await running('d');
    g.__tmHolds!.d!('ok');
    await reached(c, d!.id, 'completed');
  });

  it('do not fail when one task of the module fails: they wait for one that completes', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const [d] = await c.add({ module: 'record', params: ['patient'], dependencies: [{ module: 'hold' }] });
    const [bad] = await c.add({ module: 'hold', params: [{ name: 'bad' }] });
    await running('bad');
    g.__tmHolds!.bad!(new Error('this one fails'));
    await reached(c, bad!.id, 'failed');
    expect(await state(c, d!.id)).toBe('waiting-children');
    const [good] = await c.add({ module: 'hold', params: [{ name: 'good' }] });
    await running('good');
    g.__tmHolds!.good!('ok');
    await reached(c, good!.id, 'completed');
    await reached(c, d!.id, 'completed');
  });

  it('keep exact {module, params} dependencies as they were: another task of the module does not satisfy them', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const exact = { module: 'hold', params: [{ name: 'exact' }] };
    const [d] = await c.add({ module: 'record', params: ['exact one'], dependencies: [exact] });
    const [other] = await c.add({ module: 'hold', params: [{ name: 'other' }] });
    await running('other');
    g.__tmHolds!.other!('ok');
    await reached(c, other!.id, 'completed');
    await c.add(exact);
    await running('exact');
    expect(await state(c, d!.id)).toBe('waiting-children');
    g.__tmHolds!.exact!('ok');
    await reached(c, d!.id, 'completed');
  });

  it('come from a 2016 feeder over socket.io-client 1.7.4 as {module} and run after it', async () => {
    const b = await bridge(h);
    const c = h.client();
    h.worker({ concurrency: 2 });
    const f = await connect(h, '1.7.4', b.url);
    const ask = async (batch: unknown) => (await f.ask('task:add', batch)) as { ok: boolean; tasks: LegacyTask[] };
    const answer = await ask([{ module: 'record', params: [{ report: 1 }], dependencies: [{ module: 'hold' }] }]);
    expect(answer.ok).toBe(true);
    expect(answer.tasks[0]!.dependencies).toEqual([{ module: 'hold' }]);
    const id = answer.tasks[0]!._id;
    expect(await state(c, id)).toBe('waiting-children');
    await ask({ module: 'hold', params: [{ name: 'prices' }] });
    await running('prices');
    g.__tmHolds!.prices!('ok');
    await reached(c, id, 'completed');
  });

  it('refuse a scope without params, saying why', () => {
    let problems: unknown[] = [];
    try {
      validateTasks({ module: 'record', dependencies: [{ module: 'hold', scope: 'close@1' }] }, h.config);
    } catch (err) {
      problems = (err as InvalidTaskError).problems;
    }
    expect(problems).toEqual([
      {
        index: 0,
        field: 'dependencies[0].scope',
        message: expect.stringMatching(/without params waits for any task of its module.*give "params"/),
      },
    ]);
  });
});
