import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidTaskError } from '../src/errors.ts';
import type { AtomicAdder } from '../src/tasks/atomic-add.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor } from './support/harness.ts';

// `hold` (a fixture) runs until the test calls globalThis.__tmHolds[name]().
const g = globalThis as { __tmHolds?: Record<string, (v?: unknown) => void> };
beforeEach(() => {
  g.__tmHolds = {};
});
/** A test that fails half-way must not leave `hold` tasks that the worker's close waits for. */
const releaseHolds = () => Object.values(g.__tmHolds ?? {}).forEach((done) => done());

/** Jobs of every state in a queue. */
async function jobCount(c: TaskClient, queue?: string): Promise<number> {
  const counts = await c.queue(queue).getJobCounts();
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
const state = (c: TaskClient, id: string) => c.queue().getJobState(id);
const reached = (c: TaskClient, id: string, want: string) =>
  waitFor(async () => (await state(c, id)) === want, `job ${id} to be ${want}`);

// The same task written two ways: keys of params (at every depth) and dependencies reordered.
const params1 = [{ a: 1, b: { c: 2, d: [3, { e: 4, f: 5 }] } }, 'two'];
const params2 = [{ b: { d: [3, { f: 5, e: 4 }], c: 2 }, a: 1 }, 'two'];
const depA = { module: 'record', params: [{ k: 'A', n: 1 }] };
const depA2 = { module: 'record', params: [{ n: 1, k: 'A' }] };
const depB = { module: 'modern', params: [{ value: 'B' }] };

describe('dedup', () => {
  const h = useHarness();
  afterEach(releaseHolds);

  it('answers with the waiting (prioritised) task when an identical one is added', async () => {
    const c1 = h.client();
    const c2 = h.client();
    const [first] = await c1.add({ module: 'record', params: params1, priority: 70 });
    expect(await state(c1, first!.id)).toBe('prioritized');
    const [again] = await c2.add({ module: 'record', params: params2, priority: 70 });
    expect(again).toMatchObject({ id: first!.id, duplicate: true });
    expect(first!.duplicate).toBe(false);
    // JSON text of a batch is accepted too, and dedups the same.
    const [third] = await c2.add(JSON.stringify({ module: 'record', params: params2, priority: 70 }));
    expect(third).toMatchObject({ id: first!.id, duplicate: true });
    expect(await jobCount(c1)).toBe(1);
  });

  it('answers with the task blocked on its dependencies, whatever their order', async () => {
    const c = h.client();
    const [first] = await c.add({ module: 'record', params: params1, dependencies: [depA, depB] });
    expect(await state(c, first!.id)).toBe('waiting-children');
    const [again] = await c.add({ module: 'record', params: params2, dependencies: [depB, depA2] });
    expect(again).toMatchObject({ id: first!.id, duplicate: true });
    expect(await jobCount(c)).toBe(1);
    expect(await state(c, first!.id)).toBe('waiting-children');
  });

  it('answers with the running task, then with the completed one, and adds a new one when asked to rerun', async () => {
    const c = h.client();
    const w = h.worker({ concurrency: 2 });
    const completed: string[] = [];
    w.worker.on('completed', (job) => completed.push(job.id!));
    const task = { module: 'hold', params: [{ name: 'h', x: [1, 2] }] };
    const [first] = await c.add(task);
    await waitFor(() => !!g.__tmHolds!.h, 'the task to run');
    expect(await state(c, first!.id)).toBe('active');
    const [again] = await c.add({ module: 'hold', params: [{ x: [1, 2], name: 'h' }] });
    expect(again).toMatchObject({ id: first!.id, duplicate: true });
    expect(await jobCount(c)).toBe(1);
    g.__tmHolds!.h!();
    await reached(c, first!.id, 'completed');
    // Completed within the dedup window: still its duplicate.
    const [resent] = await c.add(task);
    expect(resent).toMatchObject({ id: first!.id, duplicate: true });
    const [after] = await c.add({ ...task, rerun: true });
    expect(after!.duplicate).toBe(false);
    expect(after!.id).not.toBe(first!.id);
    await waitFor(() => !!g.__tmHolds!.h, 'the new task to run');
    g.__tmHolds!.h!();
    await waitFor(() => completed.includes(after!.id), 'the new task to complete');
    expect(completed).toEqual([first!.id, after!.id]);
  });

  it('answers duplicates inside one batch with the first one’s id', async () => {
    const c = h.client();
    const other = { module: 'record', params: ['other'] };
    const added = await c.add([
      { module: 'record', params: params1, dependencies: [depA, depB] },
      other,
      { module: 'record', params: params2, dependencies: [depB, depA2] },
      { module: 'record', params: params1, dependencies: [depA2, depB] },
    ]);
    expect(added.map((a) => a.duplicate)).toEqual([false, false, true, true]);
    expect(added[2]!.id).toBe(added[0]!.id);
    expect(added[3]!.id).toBe(added[0]!.id);
    expect(added[1]!.id).not.toBe(added[0]!.id);
    expect(await jobCount(c)).toBe(2);
    // A later batch repeating a live task and itself: all name the live one.
    const again = await c.add([other, { module: 'record', params: ['other'] }]);
    expect(again.map((a) => [a.id, a.duplicate])).toEqual([
      [added[1]!.id, true],
      [added[1]!.id, true],
    ]);
    expect(await jobCount(c)).toBe(2);
  });

  it('keeps tasks apart that differ in params or dependencies', async () => {
    const c = h.client();
    const variants = [
      { module: 'record', params: params1 },
      { module: 'record', params: [{ ...(params1[0] as object), a: 2 }, 'two'] },
      { module: 'record', params: [...params1, 'three'] },
      { module: 'modern', params: params1 },
      { module: 'record', params: params1, dependencies: [depA] },
      { module: 'record', params: params1, dependencies: [depB] },
      { module: 'record', params: params1, dependencies: [depA, depB] },
      { module: 'record', params: params1, dependencies: [{ module: 'record', params: [{ k: 'A', n: 2 }] }] },
    ];
    const added = (await c.add(variants)).concat(
      await Promise.all(variants.map(async (v) => (await h.client().add(v))[0]!)),
    );
    const ids = added.slice(0, variants.length).map((a) => a.id);
    expect(new Set(ids).size).toBe(variants.length);
    expect(added.slice(0, variants.length).every((a) => !a.duplicate)).toBe(true);
    // Added once more, one by one from other clients: each finds its own twin.
    expect(added.slice(variants.length).map((a) => [a.id, a.duplicate])).toEqual(ids.map((id) => [id, true]));
    expect(await jobCount(c)).toBe(variants.length);
  });

  it('adds nothing from a batch that fails validation', async () => {
    const c = h.client();
    const good = { module: 'record', params: ['good'], dependencies: [depA] };
    // A promise that rejects (never a synchronous throw), so `.catch` handles it.
    let pending: Promise<unknown> | undefined;
    expect(() => (pending = c.add([good, { module: 'record' }, { module: '../escape', params: [] }]))).not.toThrow();
    await expect(pending).rejects.toBeInstanceOf(InvalidTaskError);
    await expect(c.add([good, { ...good, priority: 'high' }])).rejects.toThrow(/priority/);
    await expect(c.add(`[${JSON.stringify(good)}, {"module": "record", "params": [1], "bogus": 1}]`)).rejects.toThrow(
      /bogus/,
    );
    expect(await jobCount(c)).toBe(0);
    expect(await jobCount(c, '_gates')).toBe(0);
    expect(await h.redis.hlen(c.keys.live)).toBe(0);
    const [later] = await c.add(good);
    expect(later!.duplicate).toBe(false);
    expect(await jobCount(c)).toBe(1);
  });

  it('adds nothing, and claims nothing, from a batch whose add fails in Redis', async () => {
    const c = h.client();
    // depB is outside the batch, so the batch looks it up and is then written with its gate
    // registration (AtomicAdder.write), which fails.
    const adder = (c as unknown as { adder: AtomicAdder }).adder;
    const write = adder.write.bind(adder);
    adder.write = () => Promise.reject(new Error('simulated: connection lost during add'));
    const batch = [depA, { module: 'record', params: ['x'], dependencies: [depA, depB] }];
    await expect(c.add(batch)).rejects.toThrow(/simulated/);
    expect(await h.redis.hlen(c.keys.live)).toBe(0);
    adder.write = write;
    expect(await jobCount(c)).toBe(0);
    expect(await h.redis.hlen(c.keys.live)).toBe(0);
    expect(await h.redis.keys(c.keys.waiters('*'))).toEqual([]);
    const added = await c.add(batch);
    expect(added.map((a) => a.duplicate)).toEqual([false, false]);
    expect(await jobCount(c)).toBe(2);
  });

  it('lets exactly one of many clients adding the same task at once create it', async () => {
    const clients = Array.from({ length: 10 }, () => h.client());
    const added = await Promise.all(
      clients.map((c, i) => c.add({ module: 'record', params: i % 2 ? params1 : params2 })),
    );
    const ids = new Set(added.map(([a]) => a!.id));
    expect(ids.size).toBe(1);
    expect(added.filter(([a]) => !a!.duplicate)).toHaveLength(1);
    expect(await jobCount(clients[0]!)).toBe(1);
  });

  it('names the queue that holds a duplicate, which may not be the one asked for', async () => {
    const c = h.client();
    const [held] = await c.add({ module: 'record', params: params1, queue: 'other' });
    const [again] = await c.add({ module: 'record', params: params1 });
    expect(again).toMatchObject({ id: held!.id, duplicate: true, queue: 'other' });
  });

  it('leaves a failed-for-good record alone when a re-add of that task fails', async () => {
    const c = h.client();
    h.worker();
    const F = { module: 'fail', params: ['f'] };
    const [f] = await c.add(F);
    await reached(c, f!.id, 'failed');
    // A task without dependencies is claimed and added by one script (atomic-add.ts): make
    // that command fail as a lost connection would.
    const redis = (c as unknown as { connection: { tmAdd?: unknown } }).connection;
    const original = redis.tmAdd;
    redis.tmAdd = () => Promise.reject(new Error('simulated: connection lost during add'));
    await expect(c.add(F)).rejects.toThrow(/simulated/);
    redis.tmAdd = original;
    // F is still failed for good and nothing re-runs it, so a new dependent must fail at once
    // rather than wait in waiting-children forever.
    const [x] = await c.add({ module: 'record', params: ['x'], dependencies: [F] });
    await waitFor(async () => (await state(c, x!.id)) === 'failed', 'the dependent to fail', 2000);
  });
});

describe('dedup of a task waiting to retry', () => {
  // The first attempt fails and the retry waits a minute in `delayed`.
  const h = useHarness({ TASKMASTER_BACKOFF_MS: '60000', TASKMASTER_ATTEMPTS: '3' });

  it('answers with the delayed task', async () => {
    const c = h.client();
    const w = h.worker();
    const failedOnce = new Promise<Error>((r) => w.worker.once('failed', (_job, err) => r(err)));
    const [first] = await c.add({ module: 'fails-first', params: [{ succeedOn: 2, tag: { p: 1, q: 2 } }] });
    expect((await failedOnce).message).toBe('fails-first fixture: attempt 1 fails');
    await reached(c, first!.id, 'delayed');
    const [again] = await c.add({ module: 'fails-first', params: [{ tag: { q: 2, p: 1 }, succeedOn: 2 }] });
    expect(again).toMatchObject({ id: first!.id, duplicate: true });
    expect(await jobCount(c)).toBe(1);
  });
});
