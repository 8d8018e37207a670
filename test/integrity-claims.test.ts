import { FlowProducer, Job } from 'bullmq';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GATE_QUEUE } from '../src/queue/keys.ts';
import type { AtomicAdder } from '../src/tasks/atomic-add.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import type { IdentityArchive } from '../src/tasks/identity-store.ts';
import { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';

// The fixtures `step` and `hold` run in this process and log {at: 'start' | 'end', name} to
// globalThis.__tmSteps; `hold` finishes only when the test calls globalThis.__tmHolds[name]().
type Step = { at: 'start' | 'end'; name: string };
const g = globalThis as { __tmSteps?: Step[]; __tmHolds?: Record<string, (v?: unknown) => void> };
const steps = () => (g.__tmSteps ??= []);
const at = (kind: Step['at'], name: string) => steps().findIndex((s) => s.at === kind && s.name === name);
const starts = (name: string) => steps().filter((s) => s.at === 'start' && s.name === name).length;
const release = (name: string, value?: unknown) => g.__tmHolds![name]!(value);
const running = (name: string) => waitFor(() => !!g.__tmHolds?.[name], `${name} to be running`);
const step = (name: string) => ({ module: 'step', params: [{ name }] });
const hold = (name: string) => ({ module: 'hold', params: [{ name }] });

beforeEach(() => {
  g.__tmSteps = [];
  g.__tmHolds = {};
});
/** A test that fails half-way must not leave `hold` tasks that the worker's close waits for. */
const releaseHolds = () => Object.values(g.__tmHolds ?? {}).forEach((done) => done());

const state = (c: TaskClient, id: string) => c.queue().getJobState(id);
const finished = async (c: TaskClient, id: string) => {
  let s = '';
  await waitFor(async () => ['completed', 'failed'].includes((s = await state(c, id))), `job ${id} to finish`, 30_000);
  return s;
};

/**
 * An archive whose lookups answer only when the test says so: `asked` resolves at the first
 * lookup, `answer` lets every lookup made so far answer "not in the archive".
 */
function heldArchive() {
  let asked!: () => void;
  let answer!: (found: Map<string, { jobId: string; at: number }>) => void;
  const askedP = new Promise<void>((r) => (asked = r));
  const answerP = new Promise<Map<string, { jobId: string; at: number }>>((r) => (answer = r));
  const archive: IdentityArchive = {
    completed: () => {
      asked();
      return answerP;
    },
  };
  return { archive, asked: askedP, answer: () => answer(new Map()) };
}

/** A client of its own connection whose identity lookups go to `archive`. */
function clientWith(h: Harness, archive: IdentityArchive, opts: { archiveLookupLimitMs?: number } = {}): TaskClient {
  const c = new TaskClient(h.config, h.connection('archived'), { identityArchive: archive, ...opts });
  h.defer(() => c.close());
  return c;
}

/** Makes every write of `c`'s batches fail, as a lost connection would. */
function failWrites(c: TaskClient): void {
  const adder = (c as unknown as { adder: AtomicAdder }).adder;
  const lost = () => Promise.reject(new Error('simulated: connection lost during add'));
  adder.add = lost;
  adder.write = lost;
}

/** Jobs of the main queue holding the task `t`, in any state. */
async function jobsOf(c: TaskClient, t: { module: string; params: unknown[] }): Promise<string[]> {
  const dk = dependencyKey(t.module, t.params);
  const jobs = await c.queue().getJobs();
  return jobs.filter((j) => j.data?.$taskmaster?.keys?.dependency === dk).map((j) => j.id!);
}

describe('a batch that waits on dependencies outside it', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  afterEach(releaseHolds);
  // Its gate makes the batch look the dependency up (in Redis, then in the archive) before it is
  // written; the test holds that lookup to hold the add half-way.
  const outside = step('outside');

  it('re-adding a task that failed for good: a dependent added meanwhile waits for the new run', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const X = hold('x');
    const [first] = await c.add(X);
    await running('x');
    release('x', new Error('first run fails'));
    expect(await finished(c, first!.id)).toBe('failed');

    const slow = heldArchive();
    const p1 = clientWith(h, slow.archive);
    const readd = p1.add([X, { ...step('e'), dependencies: [outside] }]);
    await slow.asked;
    // P2 adds a dependent of X while P1's re-add of X is on its way.
    const [d] = await h.client().add({ ...step('d'), dependencies: [X] });
    // P1's write may take seconds (a big batch): D's gate settles what it does about X's outcome
    // before it lands, either reading it (then a stale failure fails D) or waiting for the next.
    const dk = dependencyKey(X.module, X.params);
    const gateSettled = async () =>
      (await h.redis.scard(c.keys.waiters(dk))) > 0 ||
      (await c.queue(GATE_QUEUE).getJobs(['delayed', 'failed', 'completed'])).some(
        (g) => g.data.dependencyKey === dk && g.processedOn !== undefined,
      );
    await waitFor(gateSettled, "D's gate to have read X's outcome or to wait for the next");
    slow.answer();
    const [again] = await readd;
    expect(again).toMatchObject({ duplicate: false });
    expect(again!.id).not.toBe(first!.id);
    await running('x');
    release('x', 'fine now');
    expect(await finished(c, again!.id)).toBe('completed');
    expect(await finished(c, d!.id)).toBe('completed');
    expect(at('start', 'd')).toBeGreaterThan(at('end', 'x'));
  });

  it('a slow lookup does not let a second producer add the same task again', async () => {
    const c = h.client();
    const X = step('x6');
    const slow = heldArchive();
    const p1 = clientWith(h, slow.archive);
    const adding = p1.add([X, { ...step('e6'), dependencies: [outside] }]);
    await slow.asked;
    // As if the lookup had taken longer than a claim without its job is honoured (30 s).
    for (const [field, value] of Object.entries(await h.redis.hgetall(c.keys.live))) {
      const sep = value.indexOf('|');
      if (value[0] === '{' || sep < 0) continue;
      await h.redis.hset(c.keys.live, field, `${Number(value.slice(0, sep)) - 31_000}${value.slice(sep)}`);
    }
    const [second] = await h.client().add(X);
    slow.answer();
    const [first] = await adding;
    expect(first!.id).toBe(second!.id);
    expect([first!.duplicate, second!.duplicate].sort()).toEqual([false, true]);
    expect(await jobsOf(c, X)).toEqual([first!.id]);
    h.worker({ concurrency: 4 });
    expect(await finished(c, first!.id)).toBe('completed');
    expect(starts('x6')).toBe(1);
  });

  it('a producer answered "duplicate" of a batch in progress holds a job that exists, though it fails', async () => {
    const c = h.client();
    const X = step('x2');
    const slow = heldArchive();
    const p1 = clientWith(h, slow.archive);
    failWrites(p1);
    const failing = p1.add([X, { ...step('e2'), dependencies: [outside] }]);
    await slow.asked;
    const [answered] = await h.client().add(X);
    slow.answer();
    await expect(failing).rejects.toThrow(/simulated/);
    expect(await c.queue().getJob(answered!.id)).toBeDefined();
    expect(await jobsOf(c, X)).toEqual([answered!.id]);
  });

  it('a dependency that completes while its dependent is on its way opens the gate the add writes', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const Y = step('y7');
    const slow = heldArchive();
    const p1 = clientWith(h, slow.archive);
    // Y is unknown when the batch looks, and completed when it is written.
    const adding = p1.add({ ...step('e7'), dependencies: [Y] });
    await slow.asked;
    const [y] = await c.add(Y);
    expect(await finished(c, y!.id)).toBe('completed');
    slow.answer();
    const [e] = await adding;
    expect(await finished(c, e!.id)).toBe('completed');
    expect(at('start', 'e7')).toBeGreaterThan(at('end', 'y7'));
    expect(await h.redis.scard(c.keys.opening)).toBe(0);
  });

  it('bounds the archive lookup: one that does not answer in time fails the add, and nothing is written', async () => {
    const c = h.client();
    const never: IdentityArchive = { completed: () => new Promise(() => {}) };
    const p1 = clientWith(h, never, { archiveLookupLimitMs: 300 });
    const err = await p1.add([step('x3'), { ...step('e3'), dependencies: [outside] }]).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ARCHIVE_LOOKUP_TIMEOUT' });
    expect((err as Error).message).toMatch(/archive lookup of 1 dependenc(y|ies) .*300 ms/);
    const counts = await c.queue().getJobCounts();
    expect(Object.values(counts).every((n) => n === 0)).toBe(true);
    expect(await c.queue('_gates').count()).toBe(0);
    expect(await h.redis.hlen(c.keys.live)).toBe(0);
    expect(await h.redis.keys(`${h.prefix}:tm:*`)).toEqual([]);
  });

  it('a re-add that fails gives the failure back: a dependent that waited on it fails, naming it', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const X = hold('x4');
    const [first] = await c.add(X);
    await running('x4');
    release('x4', new Error('first run fails'));
    expect(await finished(c, first!.id)).toBe('failed');
    const slow = heldArchive();
    const p1 = clientWith(h, slow.archive, { archiveLookupLimitMs: 60_000 });
    failWrites(p1);
    const readd = p1.add([X, { ...step('e4'), dependencies: [outside] }]);
    await slow.asked;
    const [d] = await h.client().add({ ...step('d4'), dependencies: [X] });
    slow.answer();
    await expect(readd).rejects.toThrow(/simulated/);
    expect(await finished(c, d!.id)).toBe('failed');
    expect((await Job.fromId(c.queue(), d!.id))!.failedReason).toMatch(/failed for good: first run fails/);
    expect(starts('d4')).toBe(0);
  });
});

describe('the add script', () => {
  const h = useHarness();

  it('writes nothing of a batch BullMQ refuses part of: jobs, claims, failure records stay as they were', async () => {
    const c = h.client();
    const q = h.config.queue;
    // A job that already belongs to a live parent: BullMQ refuses to give it a second one (-7).
    const flows = new FlowProducer({ connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => flows.close());
    const child = () => ({ name: 'record', queueName: q, data: {}, opts: { jobId: 'tchild' } });
    await flows.add({ name: 'record', queueName: q, data: {}, opts: { jobId: 'tparent1' }, children: [child()] });
    await h.redis.hset(c.keys.failed, 'free-dk', JSON.stringify({ jobId: 'told', at: 1, reason: 'old' }));
    const adder = (c as unknown as { adder: AtomicAdder }).adder;
    const batch = [
      { name: 'record', queueName: q, data: {}, opts: { jobId: 'tfree', priority: 1 } },
      { name: 'record', queueName: q, data: {}, opts: { jobId: 'tparent2' }, children: [child()] },
    ];
    const claims = [
      { taskKey: 'free-dk', jobKey: c.keys.job(q, 'tfree'), dependencyKey: 'free-dk' },
      { taskKey: 'parent2', jobKey: c.keys.job(q, 'tparent2'), dependencyKey: 'parent2' },
    ];
    await expect(adder.add(batch, claims)).rejects.toThrow(/refused/);
    expect(await h.redis.exists(c.keys.job(q, 'tfree'), c.keys.job(q, 'tparent2'))).toBe(0);
    expect(await h.redis.hlen(c.keys.live)).toBe(0);
    expect(await h.redis.hget(c.keys.failed, 'free-dk')).toMatch(/old/);
    expect((await c.queue().getJob('tchild'))!.parentKey).toBe(c.keys.job(q, 'tparent1'));
    const counts = await c.queue().getJobCounts('wait', 'prioritized', 'waiting-children');
    expect(counts).toEqual({ wait: 1, prioritized: 0, 'waiting-children': 1 });
  });
});
