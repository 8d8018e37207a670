import { describe, expect, it } from 'vitest';
import { History } from '../src/archive/history.ts';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { bridge, connect } from './fixtures/bridge-clients.ts';
import { useHarness, waitFor } from './support/harness.ts';

describe('duplicate answers', () => {
  const h = useHarness();

  it('show the stored task as it was added, not the second add', async () => {
    const c = h.client();
    const [first] = await c.add({ module: 'record', params: [1], created: 1000, priority: 70, timeout: 5000 });
    const [again] = await c.add({ module: 'record', params: [1], created: 2000, priority: 70, timeout: 9000 });
    expect(again).toMatchObject({ id: first!.id, duplicate: true });
    expect(again!.task).toMatchObject({ created: 1000, timeout: 5000, priority: 70 });
    // Inside one batch, a repeat shows the first of the batch.
    const batch = await c.add([
      { module: 'record', params: [2], created: 3000 },
      { module: 'record', params: [2], created: 4000 },
    ]);
    expect(batch[1]).toMatchObject({ id: batch[0]!.id, duplicate: true, task: { created: 3000 } });
  });

  it('reach a legacy feeder with the stored task’s created', async () => {
    const b = await bridge(h);
    const f = await connect(h, '1.7.4', b.url);
    const ask = async (created: number) =>
      ((await f.ask('task:add', [{ module: 'record', params: ['x'], created }])) as { tasks: LegacyTask[] }).tasks[0]!;
    const first = await ask(1_500_000_000);
    const again = await ask(1_600_000_000);
    expect(again).toMatchObject({ _id: first._id, duplicate: true, created: 1_500_000_000 });
  });
});

describe('dedup window for completed tasks', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  const completed = (c: TaskClient, id: string) =>
    waitFor(async () => (await c.queue().getJobState(id)) === 'completed', `job ${id} to complete`);
  const failed = (c: TaskClient, id: string) =>
    waitFor(async () => (await c.queue().getJobState(id)) === 'failed', `job ${id} to fail`);

  it('answers a task identical to one completed within the window as its duplicate; rerun and retry run it again', async () => {
    const c = h.client();
    const w = h.worker({ concurrency: 2 });
    const runs: string[] = [];
    w.worker.on('completed', (job) => runs.push(job.id!));
    const task = { module: 'record', params: [{ n: 1 }], created: 1000 };
    const [first] = await c.add(task);
    await completed(c, first!.id);
    // Re-sent, with or without the fields a feeder may change: the completed task answers.
    const [again] = await c.add({ ...task, created: 2000, priority: 60 });
    expect(again).toMatchObject({ id: first!.id, duplicate: true, task: { created: 1000, priority: 50 } });
    // A dependent that needs it: the identity is unchanged, so it is a new task, and may run.
    const [dependent] = await c.add({
      module: 'record',
      params: [{ n: 2 }],
      dependencies: [{ module: 'record', params: [{ n: 1 }] }],
    });
    await completed(c, dependent!.id);

    const [rerun] = await c.add({ ...task, rerun: true });
    expect(rerun!.duplicate).toBe(false);
    await completed(c, rerun!.id);
    // The rerun's completion is now the one a re-send finds.
    const [resent] = await c.add(task);
    expect(resent).toMatchObject({ id: rerun!.id, duplicate: true });

    const { added: retried } = await new History(c, { get: (q) => c.queue(q) }).retry(rerun!.id, h.config.queue);
    expect(retried.duplicate).toBe(false);
    await completed(c, retried.id);
    expect(runs.sort()).toEqual([first!.id, dependent!.id, rerun!.id, retried.id].sort());
  });

  it('keeps tasks with dependencies apart by their dependencies, and dedupes each within the window', async () => {
    const c = h.client();
    h.worker({ concurrency: 2 });
    const dep = { module: 'record', params: ['dep'] };
    const x = { module: 'record', params: ['x'], dependencies: [dep] };
    const [d, first] = await c.add([dep, x]);
    await completed(c, first!.id);
    expect(await c.add([dep, x])).toMatchObject([
      { id: d!.id, duplicate: true },
      { id: first!.id, duplicate: true },
    ]);
    // The same module and params without the dependency is another task.
    const [plain] = await c.add({ module: 'record', params: ['x'] });
    expect(plain!.duplicate).toBe(false);
  });

  it('does not dedupe against a task that failed for good: adding it again queues it', async () => {
    const c = h.client();
    h.worker();
    const task = { module: 'fail', params: [{ message: 'boom' }] };
    const [first] = await c.add(task);
    await failed(c, first!.id);
    const [again] = await c.add(task);
    expect(again!.duplicate).toBe(false);
    expect(again!.id).not.toBe(first!.id);
    await failed(c, again!.id);
  });
});

describe('dedup window that has passed', () => {
  const h = useHarness({ TASKMASTER_DEDUP_WINDOW: '1s' });

  it('queues a task again once its identical one completed longer ago than the window', async () => {
    const c = h.client();
    h.worker();
    const task = { module: 'record', params: ['late'] };
    const [first] = await c.add(task);
    await waitFor(async () => (await c.queue().getJobState(first!.id)) === 'completed', 'the task to complete');
    const finishedOn = (await c.queue().getJob(first!.id))!.finishedOn!;
    await waitFor(() => Date.now() > finishedOn + 1000, 'the window to pass');
    const [after] = await c.add(task);
    expect(after!.duplicate).toBe(false);
  });
});
